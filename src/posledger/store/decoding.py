"""Decoding stored rows of posledger's own events without the mapper's per-row overhead."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import resolve_topic

from posledger.core.events import EVENT_TYPES, ExecutionSeen

STANDARD_TRANSCODINGS = {
    "uuid_hex": UUIDAsHex,
    "decimal_str": DecimalAsStr,
    "datetime_iso": DatetimeAsISO,
}
"""The transcodings an eventsourcing Application registers by default, by stored name."""


def is_standard_mapper(mapper: Mapper[Any]) -> bool:
    """True when ``mapper`` stores events as eventsourcing's plain JSON with only its default
    transcodings (no cipher, no compressor): the stored bytes posledger's own fast decoder and
    encoder read and write exactly as the mapper does."""
    transcoder = mapper.transcoder
    return (
        mapper.cipher is None
        and mapper.compressor is None
        and type(transcoder) is JSONTranscoder
        and {name: type(t) for name, t in transcoder.names.items()} == STANDARD_TRANSCODINGS
        and {kind: type(t) for kind, t in transcoder.types.items()}
        == {t.type: t for t in STANDARD_TRANSCODINGS.values()}
    )


ID_CACHE_SIZE = 100_000
"""Stream ids a decoder keeps parsed (a replay has one per key; dedup markers one each)."""


class _NotStandard(Exception):
    """A value the fast decoder does not know: the mapper decides what it is."""


def _standard_fields(fields: dict[str, Any]) -> None:
    """Decode, in place, the transcoded values of an event's fields as the transcoder's object
    hook would (its default transcodings, whose encoded data is a string); raise
    ``_NotStandard`` for any structure it is not sure of (other objects, objects in lists),
    which the mapper then decodes. One C ``json.loads`` plus this loop costs less than a Python
    object hook called for every JSON object."""
    if "_type_" in fields:
        raise _NotStandard
    for name, value in fields.items():
        kind = value.__class__
        if kind is dict:
            data = value.get("_data_")
            if len(value) != 2 or data.__class__ is not str:
                raise _NotStandard
            transcoding = value.get("_type_")
            if transcoding == "decimal_str":
                fields[name] = Decimal(data)
            elif transcoding == "datetime_iso":
                fields[name] = datetime.fromisoformat(data)
            elif transcoding == "uuid_hex":
                fields[name] = UUID(data)
            else:
                raise _NotStandard
        elif kind is list:
            for item in value:
                if item.__class__ is dict or item.__class__ is list:
                    raise _NotStandard


class StoredEventDecoder:
    """Turns stored rows of posledger's own events into the very objects
    ``mapper.to_domain_event`` returns, without its per-row overhead (topic resolution, id
    conversion, a ``StoredEvent`` per row).

    Bulk replays decode millions of rows. For the topics in :data:`EVENT_TYPES` and
    :class:`ExecutionSeen`, on a store with eventsourcing's plain JSON transcoder and its
    default transcodings (no cipher, no compressor), a row is decoded with one ``json.loads``
    and a loop over its fields; anything else (another topic, an unknown ``_type_``, any other
    JSON object, a ``class_version``, other settings) goes to the mapper, which decodes it or
    raises its own error."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        standard = is_standard_mapper(mapper)
        classes: tuple[type[Any], ...] = (*EVENT_TYPES, ExecutionSeen)
        self.standard = standard
        """Rows are plain JSON with the default transcodings' objects in it, so a reader that
        knows a topic's fields may ``json.loads`` them itself."""
        self.classes: dict[str, type[Any]] = (
            {cls.TOPIC: cls for cls in classes if resolve_topic(cls.TOPIC) is cls}
            if standard
            else {}
        )
        self._ids: dict[str, UUID] = {}

    def __call__(
        self, originator_id: UUID | str, originator_version: int, topic: str, state: bytes
    ) -> Any:
        """The domain event of one stored row (``originator_id`` as a UUID or its text)."""
        cls = self.classes.get(topic)
        if cls is not None:
            stream = self.stream_id(originator_id)
            try:
                fields = json.loads(bytes(state).decode("utf8"))
                _standard_fields(fields)
            except Exception:
                fields = None
            if fields is not None and "class_version" not in fields:
                fields["originator_id"] = stream
                fields["originator_version"] = originator_version
                event = object.__new__(cls)
                object.__setattr__(event, "__dict__", fields)
                return event
        return self.mapper.to_domain_event(
            StoredEvent(originator_id, originator_version, topic, bytes(state))
        )

    def stream_id(self, originator_id: UUID | str) -> UUID:
        """A stored stream id as a UUID; SQLite's text is parsed once per stream."""
        if isinstance(originator_id, UUID):
            return originator_id
        stream = self._ids.get(originator_id)
        if stream is None:
            if len(self._ids) >= ID_CACHE_SIZE:
                self._ids.clear()
            stream = self._ids[originator_id] = UUID(originator_id)
        return stream
