"""Literal states for the pure rule tests: built with ``register``/``decide_*``/``evolve`` from
literal commands, never through a store (fills, rows and snapshots come from tests.helpers)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from posledger import Fill, PositionKey, PositionState, ReconcilePolicy, Side, Snapshot
from posledger.core.decide import decide_fills, decide_order_end, decide_request, register
from posledger.core.events import PositionEvent
from posledger.core.position import evolve
from posledger.core.reconcile import Judgement, decide_reconcile
from tests.conftest import T0, key

KEY = key("BTCUSDT")
LONG_LEG = key("ETHUSDT", idx=1)
SHORT_LEG = key("ETHUSDT", idx=2)


def d(value: str | int) -> Decimal:
    return Decimal(value)


def fresh(k: PositionKey = KEY) -> PositionState:
    """A key just registered: version 1, never saved with anything else."""
    return evolve(None, register(k, T0))


def fold(state: PositionState, events: list[PositionEvent]) -> PositionState:
    for event in events:
        state = evolve(state, event)
    return state


def filled(state: PositionState, *fills: Fill) -> PositionState:
    """``state`` after ``decide_fills`` of each fill in turn (the pure core does not deduplicate
    across calls: that is the shell's job, so a repeated ``exec_id`` is harmless here)."""
    for item in fills:
        state = fold(state, decide_fills(state, [item]))
    return state


def requested(
    state: PositionState,
    order_id: str,
    side: str | None,
    qty: str,
    when: datetime = T0,
    *,
    exit: bool = False,
) -> PositionState:
    """``state`` after ``decide_request`` (an exit when ``exit``)."""
    events = decide_request(
        state,
        order_id=order_id,
        side=Side.parse(side) if side is not None else None,
        qty=d(qty),
        price=None,
        at=when,
        reduce_only=exit,
    )
    return fold(state, events)


def ended(state: PositionState, order_id: str, when: datetime = T0) -> PositionState:
    return fold(state, decide_order_end(state, order_id=order_id, status="Cancelled", at=when))


def judge(
    state: PositionState, snap: Snapshot, now: datetime | None = None, **policy: Any
) -> Judgement:
    """``decide_reconcile`` at ``now`` (default: when the snapshot was taken) under a policy made
    of ``policy``."""
    return decide_reconcile(state, snap, now or snap.taken_at, ReconcilePolicy(**policy))
