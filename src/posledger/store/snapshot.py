"""State snapshots, so a key with years of fills and funding loads in one read plus a short tail.

A snapshot is derived data: it is written after the events it summarises, in its own table, and
losing one only costs a longer replay. The codec is explicit and tolerant of fields it does not
know, so adding a field to PositionState never strands an old snapshot.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

import attrs
from eventsourcing.utils import register_topic

from posledger.core.events import PositionEvent
from posledger.core.model import PositionKey, Side, cached_key
from posledger.core.position import PositionState, evolve


@dataclass(frozen=True)
class PositionSnapshot:
    """The whole PositionState at ``originator_version``, as plain JSON-able values."""

    TOPIC: ClassVar[str] = "posledger:PositionSnapshot"

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, state: PositionState) -> PositionSnapshot:
        return cls(
            originator_id=state.key.stream_id,
            originator_version=state.version,
            timestamp=state.updated_at,
            topic=cls.TOPIC,
            state=encode(state),
        )


register_topic(PositionSnapshot.TOPIC, PositionSnapshot)


SPARSE_FIELDS = frozenset(
    {"proposal", "adopted_pnl", "unexplained_pnl", "money_checked_until", "book"}
)
"""Fields written only when they hold something (docs/design.md#approval, #money; the key's
book, docs/books.md): a key that never had a proposal or a money difference, in the default
book, is snapshotted exactly as before they existed, and its snapshot stays as small (decode
fills in the defaults)."""


def _kept(attribute: attrs.Attribute[Any], value: Any) -> bool:
    if attribute.name in SPARSE_FIELDS:
        return bool(value)
    return attribute.name != "stream_id"


def encode(state: PositionState) -> dict[str, Any]:
    """The state as plain JSON values: decimals as their exact text, times as ISO 8601, sides
    as their value. No transcoded objects, so a snapshot reads with one plain ``json.loads``."""
    return attrs.asdict(state, recurse=True, filter=_kept, value_serializer=_plain)


def decode(data: dict[str, Any]) -> PositionState:
    """The inverse of :func:`encode`. It also reads snapshots written before encode produced
    plain values (their decimals and times arrive already decoded by the transcoder), and it
    ignores fields it does not know.

    A cold start decodes a snapshot per key, so the state is built the way ``evolve`` copies
    one (its fields straight into ``__dict__``, exact because PositionState has no converters,
    validators or post-init); nested values go through their classes' ``__init__``."""
    names, converters = _PLANS.get(PositionState) or _PLANS.setdefault(
        PositionState, _plan(PositionState)
    )
    fields = {**_STATE_DEFAULTS, **data}
    if len(fields) != len(_STATE_DEFAULTS):  # fields of a newer version: not this one's
        fields = {name: value for name, value in fields.items() if name in names}
    missing = [name for name in _STATE_REQUIRED if fields[name] is _REQUIRED]
    if missing:
        raise ValueError(f"snapshot state without {', '.join(missing)}")
    for name, convert in converters:
        value = fields[name]
        if value is not None:
            fields[name] = convert(value)
    state = object.__new__(PositionState)
    object.__setattr__(state, "__dict__", fields)
    return state


def _plain(_: Any, __: Any, value: Any) -> Any:
    kind = value.__class__
    if kind is Decimal:
        return str(value)
    if kind is datetime:
        return value.isoformat()
    if isinstance(value, Side):
        return value.value
    return value


Convert = Callable[[Any], Any]
Plan = tuple[frozenset[str], tuple[tuple[str, Convert], ...]]
_PLANS: dict[type[Any], Plan] = {}


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    plan = _PLANS.get(cls) or _PLANS.setdefault(cls, _plan(cls))
    names, converters = plan
    fields = {name: value for name, value in data.items() if name in names}
    for name, convert in converters:
        value = fields.get(name)
        if value is not None:
            fields[name] = convert(value)
    return cls(**fields)


_REQUIRED = object()
_STATE_DEFAULTS = {
    a.name: _REQUIRED if a.default is attrs.NOTHING else a.default
    for a in attrs.fields(PositionState)
}
"""Every field of a PositionState in declaration order, with its default: attrs' ``__init__``
would fill in the same (all are plain values, no factories)."""
_STATE_REQUIRED = tuple(name for name, value in _STATE_DEFAULTS.items() if value is _REQUIRED)
assert not any(isinstance(v, attrs.Factory) for v in _STATE_DEFAULTS.values())  # type: ignore[arg-type]


def _plan(cls: type[Any]) -> Plan:
    """The init fields of an attrs class, and how to revive those whose declared type JSON
    does not carry (decimals, times, sides, keys, nested classes)."""
    hints = typing.get_type_hints(cls)
    names = [a.name for a in attrs.fields(cls) if a.init]
    converters = ((name, _converter(hints[name])) for name in names)
    return frozenset(names), tuple((name, c) for name, c in converters if c is not None)


def _converter(hint: Any) -> Convert | None:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _converter(inner[0]) if len(inner) == 1 else None
    if origin is tuple:
        item = _converter(typing.get_args(hint)[0])
        if item is None:
            return tuple
        return lambda values: tuple(item(value) for value in values)
    if hint is Decimal:
        return _decimal
    if hint is datetime:
        return _datetime
    if hint is PositionKey:
        return _key
    if hint is Side:
        return _side
    if isinstance(hint, type) and attrs.has(hint):
        return lambda value: _build(hint, value)
    return None


def _decimal(value: Any) -> Decimal:
    kind = value.__class__
    if kind is Decimal:
        return value  # type: ignore[no-any-return]
    return Decimal(_transcoded(value, "decimal_str") if kind is dict else value)


def _datetime(value: Any) -> datetime:
    kind = value.__class__
    if kind is datetime:
        return value  # type: ignore[no-any-return]
    return datetime.fromisoformat(_transcoded(value, "datetime_iso") if kind is dict else value)


def _transcoded(value: dict[str, Any], name: str) -> str:
    """The text of an older snapshot's value as eventsourcing's JSON transcoder stored it, for
    a reader that parsed the row itself."""
    if value.get("_type_") != name or len(value) != 2 or not isinstance(value["_data_"], str):
        raise ValueError(f"expected a {name} value, got {value!r}")
    data: str = value["_data_"]
    return data


def _side(value: Any) -> Side | None:
    return Side(value) if value else None


def _key(data: dict[str, Any]) -> PositionKey:
    return cached_key(
        data["venue"],
        data["account"],
        data["category"],
        data["symbol"],
        data.get("idx", 0),
        data.get("book", ""),
    )


def project_from_store(
    state: PositionState | None, events: Iterable[PositionEvent | PositionSnapshot]
) -> PositionState | None:
    """The repository's projector: a snapshot (if any) first, then the events after it."""
    for event in events:
        if isinstance(event, PositionSnapshot):
            state = decode(event.state)
        else:
            state = evolve(state, event)
    return state
