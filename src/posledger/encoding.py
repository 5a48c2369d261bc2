"""Encoding posledger's own events into stored rows, the mirror of
:class:`posledger.events.StoredEventDecoder`.

``mapper.to_stored_event`` runs the JSON encoder with a Python ``default`` hook that is called
for every Decimal, datetime and UUID field (an ingested execution has about a dozen). Here the
fields are transcoded in one loop first, so the C encoder runs without calling back into
Python; the stored bytes are the very bytes the mapper writes, and anything the loop is not
sure of goes to the mapper.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from posledger.events import EVENT_TYPES, STANDARD_TRANSCODINGS, ExecutionSeen

_PLAIN = (str, int, bool, type(None))
"""Types the JSON encoder writes itself (exactly these: a subclass may be a transcoded type)."""
_ENVELOPE = ("originator_id", "originator_version")
"""Fields stored in their own columns, not in the state."""


class _NotStandard(Exception):
    """A value the fast encoder does not know: the mapper decides how to store it."""


def _standard_state(fields: dict[str, Any]) -> dict[str, Any]:
    """An event's state as the transcoder's ``default`` hook would hand it to the JSON encoder:
    its default transcodings applied to the exact types they are registered for; raises
    ``_NotStandard`` for anything else (other objects, containers other than lists of plain
    values), which the mapper then encodes or refuses."""
    state: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _ENVELOPE:
            continue
        kind = value.__class__
        if kind is Decimal:
            value = {"_type_": "decimal_str", "_data_": str(value)}
        elif kind is datetime:
            value = {"_type_": "datetime_iso", "_data_": value.isoformat()}
        elif kind is UUID:
            value = {"_type_": "uuid_hex", "_data_": value.hex}
        elif kind is list:
            for item in value:
                if item.__class__ not in _PLAIN:
                    raise _NotStandard
        elif kind not in _PLAIN:
            raise _NotStandard
        state[name] = value
    return state


class StoredEventEncoder:
    """Turns posledger's own events into the very ``StoredEvent`` that
    ``mapper.to_stored_event`` returns, at a fraction of its cost.

    For the classes of :data:`posledger.events.EVENT_TYPES` and :class:`ExecutionSeen` (with
    their registered topics and no ``class_version``), on a mapper with eventsourcing's plain
    JSON transcoder and its default transcodings (no cipher, no compressor), an event is
    encoded with one loop over its fields and one run of the C JSON encoder; anything else goes
    to the mapper, which encodes it or raises its own error."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        standard = (
            mapper.cipher is None
            and mapper.compressor is None
            and type(transcoder) is JSONTranscoder
            and {name: type(t) for name, t in transcoder.names.items()} == STANDARD_TRANSCODINGS
            and {kind: type(t) for kind, t in transcoder.types.items()}
            == {t.type: t for t in STANDARD_TRANSCODINGS.values()}
        )
        classes: tuple[type[Any], ...] = (*EVENT_TYPES, ExecutionSeen)
        self.topics: dict[type[Any], str] = (
            {
                cls: cls.TOPIC
                for cls in classes
                if get_topic(cls) == cls.TOPIC and getattr(cls, "class_version", 1) == 1
            }
            if standard
            else {}
        )
        self._json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def __call__(self, event: Any) -> StoredEvent:
        topic = self.topics.get(event.__class__)
        if topic is not None:
            fields = event.__dict__
            try:
                state = _standard_state(fields)
            except _NotStandard:
                pass
            else:
                return StoredEvent(
                    originator_id=fields["originator_id"],
                    originator_version=fields["originator_version"],
                    topic=topic,
                    state=self._json(state).encode("utf8"),
                )
        return self.mapper.to_stored_event(event)
