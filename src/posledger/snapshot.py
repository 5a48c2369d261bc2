"""State snapshots, so a key with years of fills and funding loads in one read plus a short tail.

A snapshot is derived data: it is written after the events it summarises, in its own table, and
losing one only costs a longer replay. The codec is explicit and tolerant of fields it does not
know, so adding a field to PositionState never strands an old snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import attrs
from eventsourcing.utils import register_topic

from posledger.events import PositionEvent
from posledger.model import PositionKey, Side
from posledger.position import (
    LifecycleSummary,
    PendingOrder,
    PositionState,
    SuspectRun,
    evolve,
)


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


def encode(state: PositionState) -> dict[str, Any]:
    return attrs.asdict(
        state,
        recurse=True,
        filter=lambda attribute, _: attribute.name != "stream_id",
        value_serializer=lambda _, __, value: value.value if isinstance(value, Side) else value,
    )


def decode(data: dict[str, Any]) -> PositionState:
    fields = _known(PositionState, data)
    fields["key"] = PositionKey(**_known(PositionKey, data["key"]))
    fields["side"] = _side(data.get("side"))
    fields["pending_orders"] = tuple(
        PendingOrder(**{**_known(PendingOrder, order), "side": Side(order["side"])})
        for order in data.get("pending_orders", ())
    )
    suspect = data.get("suspect")
    fields["suspect"] = (
        SuspectRun(**{**_known(SuspectRun, suspect), "side": _side(suspect.get("side"))})
        if suspect
        else None
    )
    closed = data.get("last_closed")
    fields["last_closed"] = (
        LifecycleSummary(
            **{
                **_known(LifecycleSummary, closed),
                "cleared_orders": tuple(closed.get("cleared_orders", ())),
            }
        )
        if closed
        else None
    )
    return PositionState(**fields)


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


def _known(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    names = _INIT_NAMES.get(cls) or _INIT_NAMES.setdefault(cls, _init_names(cls))
    return {name: value for name, value in data.items() if name in names}


_INIT_NAMES: dict[type[Any], frozenset[str]] = {}


def _init_names(cls: type[Any]) -> frozenset[str]:
    return frozenset(a.name for a in attrs.fields(cls) if a.init)


def _side(value: str | None) -> Side | None:
    return Side(value) if value else None
