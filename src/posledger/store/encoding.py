"""Encoding posledger's own events into stored rows, the mirror of
:class:`posledger.store.decoding.StoredEventDecoder`.

``mapper.to_stored_event`` runs the JSON encoder with a Python ``default`` hook that is called
for every Decimal, datetime and UUID field (an ingested execution has about a dozen), each
returning a small object the encoder then walks. Here one loop over the fields writes the
JSON text directly; the stored bytes are the very bytes the mapper writes, and anything the
loop is not sure of goes to the mapper.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from posledger.core.events import EVENT_TYPES, ExecutionSeen
from posledger.store.decoding import is_standard_mapper

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
            parts.append(f'{key}{{"_type_":"decimal_str","_data_":"{value!s}"}}')
        elif kind is datetime:
            parts.append(f'{key}{{"_type_":"datetime_iso","_data_":"{value.isoformat()}"}}')
        elif kind is UUID:
            parts.append(f'{key}{{"_type_":"uuid_hex","_data_":"{value.hex}"}}')
        elif kind is list:
            parts.append(key + "[" + ",".join([_plain(item) for item in value]) + "]")
        else:
            parts.append(key + _plain(value))
    return "{" + ",".join(parts) + "}"


def _transcoded(name: str, text: str) -> str:
    """The expression writing a transcoded value: the object ``default`` returns, as JSON."""
    head, tail = '{"_type_":"' + name + '","_data_":"', '"}'
    return f"{head!r} + {text} + {tail!r}"


_WRITE: dict[str, tuple[str, str]] = {
    "str": ("V.__class__ is str", "_esc(V)"),
    "int": ("V.__class__ is int", "int.__repr__(V)"),
    "bool": ("V.__class__ is bool", "('true' if V else 'false')"),
    "Decimal": ("V.__class__ is Decimal", _transcoded("decimal_str", "str(V)")),
    "datetime": ("V.__class__ is datetime", _transcoded("datetime_iso", "T")),
    "UUID": ("V.__class__ is UUID", _transcoded("uuid_hex", "V.hex")),
    "list[str]": (
        "V.__class__ is list and all(i.__class__ is str for i in V)",
        "'[' + ','.join(map(_esc, V)) + ']'",
    ),
}
"""Per annotation of a field: the check that its value ``V`` has the type the fast path
writes, and the expression writing it as ``_standard_json`` does (``T``: a datetime's ISO
text)."""


def _compile_writer(cls: type[Any]) -> Callable[[dict[str, Any]], str] | None:
    """``_standard_json`` specialised to an event class whose fields all have annotations of
    :data:`_WRITE` (``X | None`` too): one unpacking, one check, one expression per field and
    one f-string, about twice as fast. It applies only to fields in the class's own order (an
    event built by its constructor; a decoded one may differ) and raises ``_NotStandard``
    otherwise, as for a value of another type. A datetime identical to the event's
    ``timestamp`` (an execution's time, usually) is written from the same text."""
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    if names[:3] != ["originator_id", "originator_version", "timestamp"]:
        return None
    checks, lines, template = [], [], []
    for n, f in enumerate(fields[2:]):
        base = str(f.type).removesuffix(" | None")
        optional = base != str(f.type)
        if base not in _WRITE:
            return None
        value = f"v{n}"
        check, write = (part.replace("V", value) for part in _WRITE[base])
        if base == "datetime":
            same = f"t0 if {value} is v0 else " if n else ""
            lines.append(f"    t{n} = {same}{value}.isoformat()" if not optional else "")
            write = write.replace("T", f"t{n}" if not optional else f"{value}.isoformat()")
        if optional:
            check = f"({value} is None or {check})"
            write = f"('null' if {value} is None else {write})"
        checks.append(check)
        lines.append(f"    e{n} = {write}")
        key = encode_basestring(f.name)
        if "'" in key or "\\" in key or "{" in key or "}" in key:
            return None
        template.append(f"{key}:{{e{n}}}")
    values = ", ".join(f"v{n}" for n in range(len(names) - 2))
    source = "\n".join(
        [
            "def write(fields):",
            "    if list(fields) != names:",
            "        raise _NotStandard",
            f"    _, _, {values}, = fields.values()",
            f"    if not ({' and '.join(checks)}):",
            "        raise _NotStandard",
            *(line for line in lines if line),
            "    return f'{{" + ",".join(template) + "}}'",
        ]
    )
    namespace: dict[str, Any] = {
        "names": names,
        "_NotStandard": _NotStandard,
        "_esc": encode_basestring,
        "Decimal": Decimal,
        "datetime": datetime,
        "UUID": UUID,
    }
    exec(compile(source, f"<writer of {cls.__qualname__}>", "exec"), namespace)
    writer: Callable[[dict[str, Any]], str] = namespace["write"]
    return writer


_WRITERS: dict[type[Any], Callable[[dict[str, Any]], str]] = {}
"""The writer of each event class, compiled once per process (every Ledger.open would
otherwise compile them all again)."""


def _writer(cls: type[Any]) -> Callable[[dict[str, Any]], str]:
    writer = _WRITERS.get(cls)
    if writer is None:
        writer = _WRITERS[cls] = _compile_writer(cls) or _standard_json
    return writer


class StoredEventEncoder:
    """Turns posledger's own events into the very ``StoredEvent`` that
    ``mapper.to_stored_event`` returns, at a fraction of its cost.

    For the classes of :data:`posledger.core.events.EVENT_TYPES` and :class:`ExecutionSeen` (with
    their registered topics and no ``class_version``), on a mapper with eventsourcing's plain
    JSON transcoder and its default transcodings (no cipher, no compressor), an event is
    encoded by a writer compiled for its class (or one loop over its fields); anything else goes
    to the mapper, which encodes it or raises its own error."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        standard = is_standard_mapper(mapper)
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
        self._writers = {cls: _writer(cls) for cls in self.topics}

    def __call__(self, event: Any) -> StoredEvent:
        topic = self.topics.get(event.__class__)
        if topic is not None:
            fields = event.__dict__
            try:
                state = self._writers[event.__class__](fields)
            except _NotStandard:
                try:
                    state = _standard_json(fields)
                except _NotStandard:
                    return self.mapper.to_stored_event(event)
            return StoredEvent(
                originator_id=fields["originator_id"],
                originator_version=fields["originator_version"],
                topic=topic,
                state=state.encode("utf8"),
            )
        return self.mapper.to_stored_event(event)
