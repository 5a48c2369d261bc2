"""Encoding posledger's own events into stored rows, the mirror of
:class:`posledger.events.StoredEventDecoder`.

``mapper.to_stored_event`` runs the JSON encoder with a Python ``default`` hook that is called
for every Decimal, datetime and UUID field (an ingested execution has about a dozen), each
returning a small object the encoder then walks. Here one loop over the fields writes the
JSON text directly; the stored bytes are the very bytes the mapper writes, and anything the
loop is not sure of goes to the mapper.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Mapper, StoredEvent
from eventsourcing.utils import get_topic

from posledger.events import EVENT_TYPES, STANDARD_TRANSCODINGS, ExecutionSeen

_KEYS: dict[str, str] = {"originator_id": "", "originator_version": ""}
"""Field names as JSON object keys (with their colon), written once each; the envelope's
fields, stored in their own columns, map to ``""``."""


class _NotStandard(Exception):
    """A value the fast encoder does not know: the mapper decides how to store it."""


def _plain(value: Any) -> str:
    """A value the JSON encoder writes itself, written as it does (exact types only: a
    subclass may be a transcoded type, or be written otherwise)."""
    kind = value.__class__
    if kind is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    raise _NotStandard


def _standard_json(fields: dict[str, Any]) -> str:
    """An event's state as the transcoder writes it (compact separators, ``ensure_ascii``
    off): its default transcodings applied to the exact types they are registered for, as the
    objects the transcoder's ``default`` hook returns. Raises ``_NotStandard`` for anything
    else (other objects, containers other than lists of plain values), which the mapper then
    encodes or refuses. The texts of a Decimal, an ISO datetime and a UUID's hex need no JSON
    escaping. (The common types are tested inline: this runs for every field written.)"""
    parts = []
    for name, value in fields.items():
        key = _KEYS.get(name)
        if key is None:
            key = _KEYS[name] = encode_basestring(name) + ":"
        elif not key:
            continue
        kind = value.__class__
        if kind is str:
            parts.append(key + encode_basestring(value))
        elif kind is Decimal:
            parts.append(f'{key}{{"_type_":"decimal_str","_data_":"{value}"}}')
        elif kind is datetime:
            parts.append(f'{key}{{"_type_":"datetime_iso","_data_":"{value.isoformat()}"}}')
        elif kind is UUID:
            parts.append(f'{key}{{"_type_":"uuid_hex","_data_":"{value.hex}"}}')
        elif kind is list:
            parts.append(key + "[" + ",".join([_plain(item) for item in value]) + "]")
        else:
            parts.append(key + _plain(value))
    return "{" + ",".join(parts) + "}"


class StoredEventEncoder:
    """Turns posledger's own events into the very ``StoredEvent`` that
    ``mapper.to_stored_event`` returns, at a fraction of its cost.

    For the classes of :data:`posledger.events.EVENT_TYPES` and :class:`ExecutionSeen` (with
    their registered topics and no ``class_version``), on a mapper with eventsourcing's plain
    JSON transcoder and its default transcodings (no cipher, no compressor), an event is
    encoded with one loop over its fields; anything else goes
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

    def __call__(self, event: Any) -> StoredEvent:
        topic = self.topics.get(event.__class__)
        if topic is not None:
            fields = event.__dict__
            try:
                state = _standard_json(fields)
            except _NotStandard:
                pass
            else:
                return StoredEvent(
                    originator_id=fields["originator_id"],
                    originator_version=fields["originator_version"],
                    topic=topic,
                    state=state.encode("utf8"),
                )
        return self.mapper.to_stored_event(event)
