"""Pure reconciliation: compare one key's ledger state with one complete exchange snapshot.

The rules of docs/design.md#reconciliation. Every correction waits for ``confirmations``
consecutive, strictly later snapshots showing the same exchange state; each interim disagreement is
written as a *suspect* ``ExchangeSnapshot`` so the count survives restarts and is shared by every
process on the store. A snapshot that agrees with the ledger writes nothing (unless a suspect run
must be reset, or a heartbeat is due).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

import attrs

from posledger.core.decide import Emitter
from posledger.core.errors import InvalidInput
from posledger.core.events import ExchangeSnapshot, PositionEvent, Reconciled
from posledger.core.model import (
    ExchangePosition,
    PositionKey,
    Side,
    Snapshot,
    non_negative_decimal,
)
from posledger.core.position import ZERO, PendingOrder, PositionState


def _non_negative_delta(value: object) -> timedelta:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidInput(f"expected a non-negative timedelta, got {value!r}")
    return value


def _optional_delta(value: object) -> timedelta | None:
    return None if value is None else _non_negative_delta(value)


def _tolerance(value: object) -> Decimal:
    return non_negative_decimal(value, "tolerance")


def _confirmations(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"confirmations must be an int >= 1, got {value!r}")
    return value


@attrs.frozen
class ReconcilePolicy:
    """How cautious reconciliation is. ``order_ttl`` only matters for snapshots that did not
    read open orders; ``heartbeat`` (off by default) records an agreeing snapshot that often."""

    grace: timedelta = attrs.field(default=timedelta(seconds=60), converter=_non_negative_delta)
    confirmations: int = attrs.field(default=2, converter=_confirmations)
    tolerance: Decimal = attrs.field(default=ZERO, converter=_tolerance)
    order_ttl: timedelta = attrs.field(default=timedelta(minutes=15), converter=_non_negative_delta)
    heartbeat: timedelta | None = attrs.field(default=None, converter=_optional_delta)


class Correction(StrEnum):
    PHANTOM = "phantom"
    STALE_QUANTITY = "stale_quantity"
    SIDE_MISMATCH = "side_mismatch"
    ADOPTED = "adopted"
    UNFILLED_OPEN = "unfilled_open"


class Outcome(StrEnum):
    """What reconciliation concluded for one key."""

    AGREES = "agrees"
    STALE = "stale"
    """The snapshot predates the last applied fill; ignored."""
    PENDING = "pending"
    """An order for the key is younger than ``grace``; nothing judged yet."""
    ALREADY_SEEN = "already_seen"
    """Not later than the last snapshot recorded for the key (a suspect, a reset or the
    evidence of a correction): old news that can neither count nor undo anything."""
    SUSPECT = "suspect"
    """A disagreement recorded, waiting for more confirmations."""
    CORRECTED = "corrected"
    CONFLICT = "conflict"
    """A recovered execution conflicted with a recorded one; this key was not corrected."""


@attrs.frozen
class KeyOutcome:
    key: PositionKey
    outcome: Outcome
    correction: Correction | None = None
    events: tuple[str, ...] = ()
    detail: str = ""


@attrs.frozen
class ReconcileReport:
    """One outcome per judged key."""

    taken_at: datetime
    outcomes: tuple[KeyOutcome, ...]

    @property
    def corrections(self) -> tuple[KeyOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome is Outcome.CORRECTED)

    @property
    def suspects(self) -> tuple[KeyOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome is Outcome.SUSPECT)

    @property
    def events_written(self) -> int:
        return sum(len(o.events) for o in self.outcomes)

    def outcome(self, key: PositionKey) -> KeyOutcome | None:
        for item in self.outcomes:
            if item.key == key:
                return item
        return None


@attrs.frozen
class Judgement:
    outcome: Outcome
    correction: Correction | None
    events: list[PositionEvent]
    detail: str = ""


def decide_reconcile(
    state: PositionState, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> Judgement:
    """Judge one covered key. ``state`` may be a not-yet-saved fresh state (version 1)."""
    exchange = snapshot.position(state.key)
    ex_side = exchange.side if exchange is not None else None
    ex_size = exchange.size if exchange is not None else ZERO
    agrees = _agrees(state, ex_side, ex_size, policy.tolerance)
    dead_opens = _dead_open_orders(state, snapshot, now, policy)

    if agrees and not (state.size == 0 and dead_opens):
        return _agreement(state, snapshot, exchange, policy)
    if not agrees:
        if _is_stale(state, exchange, snapshot):
            return Judgement(Outcome.STALE, None, [], "snapshot predates the last applied fill")
        young = [o.order_id for o in state.pending_orders if _in_flight(o, snapshot, now, policy)]
        if young:
            return Judgement(Outcome.PENDING, None, [], f"orders in flight: {', '.join(young)}")
    correction = _classify(state, ex_side, ex_size, agrees)
    last = state.last_snapshot_at
    if last is not None and snapshot.taken_at <= last:
        return Judgement(
            Outcome.ALREADY_SEEN, correction, [], "not later than the last recorded snapshot"
        )
    suspect = state.suspect
    same = suspect is not None and (suspect.side, suspect.size) == (ex_side, ex_size)
    count = suspect.count + 1 if same and suspect is not None else 1
    emitter = Emitter(state)
    if count < policy.confirmations:
        _emit_snapshot(emitter, snapshot, exchange, suspect=True, confirmations=count)
        return Judgement(
            Outcome.SUSPECT, correction, emitter.events, f"{count}/{policy.confirmations}"
        )
    cleared = _orders_to_clear(state, correction, dead_opens)
    emitter.emit(
        Reconciled,
        snapshot.taken_at,
        kind=correction.value,
        before_side=state.side.value if state.side else None,
        before_size=state.size,
        after_side=ex_side.value if ex_side else None,
        after_size=ex_size,
        after_avg_price=_after_avg(state, exchange, correction),
        snapshot_taken_at=snapshot.taken_at,
        snapshot_seq=exchange.seq if exchange is not None else None,
        snapshot_avg_price=exchange.avg_price if exchange is not None else None,
        confirmations=count,
        cleared_orders=cleared,
    )
    emitter.close_if_ended(correction.value, snapshot.taken_at, state)
    return Judgement(Outcome.CORRECTED, correction, emitter.events)


def needs_recovery(
    state: PositionState, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> bool:
    """Whether the exchange's execution history may explain something before any correction:
    the sizes disagree, or requests past grace might have filled unseen."""
    exchange = snapshot.position(state.key)
    side = exchange.side if exchange is not None else None
    size = exchange.size if exchange is not None else ZERO
    if not _agrees(state, side, size, policy.tolerance):
        return True
    return any(now - order.requested_at >= policy.grace for order in state.pending_orders)


def _agrees(state: PositionState, side: Side | None, size: Decimal, tolerance: Decimal) -> bool:
    if state.size == 0 or size == 0:
        return state.size == 0 and size == 0
    return state.side is side and abs(state.size - size) <= tolerance


def _agreement(
    state: PositionState,
    snapshot: Snapshot,
    exchange: ExchangePosition | None,
    policy: ReconcilePolicy,
) -> Judgement:
    """Nothing to correct: reset a suspect run or record a due heartbeat, else write nothing."""
    last = state.last_snapshot_at
    if last is not None and snapshot.taken_at <= last:
        return Judgement(Outcome.AGREES, None, [])
    heartbeat_due = (
        policy.heartbeat is not None
        and state.version > 1
        and (last is None or snapshot.taken_at - last >= policy.heartbeat)
    )
    if state.suspect is None and not heartbeat_due:
        return Judgement(Outcome.AGREES, None, [])
    emitter = Emitter(state)
    _emit_snapshot(emitter, snapshot, exchange, suspect=False, confirmations=0)
    return Judgement(Outcome.AGREES, None, emitter.events)


def _emit_snapshot(
    emitter: Emitter,
    snapshot: Snapshot,
    exchange: ExchangePosition | None,
    *,
    suspect: bool,
    confirmations: int,
) -> None:
    emitter.emit(
        ExchangeSnapshot,
        snapshot.taken_at,
        taken_at=snapshot.taken_at,
        side=exchange.side.value if exchange is not None and exchange.side else None,
        size=exchange.size if exchange is not None else ZERO,
        avg_price=exchange.avg_price if exchange is not None else None,
        seq=exchange.seq if exchange is not None else None,
        updated_at=exchange.updated_at if exchange is not None else None,
        suspect=suspect,
        confirmations=confirmations,
    )


def _is_stale(state: PositionState, exchange: ExchangePosition | None, snapshot: Snapshot) -> bool:
    """Bybit ``seq`` orders a position against executions; without it, time does."""
    if exchange is not None and exchange.seq is not None and state.last_fill_seq is not None:
        return exchange.seq < state.last_fill_seq
    return state.last_fill_time is not None and snapshot.taken_at < state.last_fill_time


def _dead_open_orders(
    state: PositionState, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> list[str]:
    """Open requests past grace that the exchange is no longer working on."""
    return [
        order.order_id
        for order in state.pending_orders
        if not order.reduce_only
        and not _in_flight(order, snapshot, now, policy)
        and not _still_working(order, snapshot, now, policy)
    ]


def _in_flight(
    order: PendingOrder, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> bool:
    """Too young to judge: within grace, or requested no earlier than the snapshot was taken
    and not listed by it (the read cannot have seen it)."""
    if now - order.requested_at < policy.grace:
        return True
    seen = snapshot.open_order_ids is not None and order.order_id in snapshot.open_order_ids
    return order.requested_at >= snapshot.taken_at and not seen


def _still_working(
    order: PendingOrder, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> bool:
    if snapshot.open_order_ids is not None:
        return order.order_id in snapshot.open_order_ids
    return now - order.requested_at < policy.order_ttl


def _classify(state: PositionState, side: Side | None, size: Decimal, agrees: bool) -> Correction:
    if agrees:
        return Correction.UNFILLED_OPEN
    if size == 0:
        return Correction.PHANTOM
    if state.size == 0:
        return Correction.ADOPTED
    if state.side is not side:
        return Correction.SIDE_MISMATCH
    return Correction.STALE_QUANTITY


def _orders_to_clear(
    state: PositionState, correction: Correction, dead_opens: list[str]
) -> list[str]:
    """A phantom takes its exits and dead requests with it; a side change voids the exits."""
    exits = [o.order_id for o in state.pending_orders if o.reduce_only]
    if correction is Correction.UNFILLED_OPEN:
        return dead_opens
    if correction is Correction.PHANTOM:
        return exits + dead_opens
    if correction is Correction.SIDE_MISMATCH:
        return exits
    return []


def _after_avg(
    state: PositionState, exchange: ExchangePosition | None, correction: Correction
) -> Decimal | None:
    reported = exchange.avg_price if exchange is not None and exchange.avg_price else None
    if correction in (Correction.PHANTOM, Correction.UNFILLED_OPEN):
        return None
    if correction is Correction.STALE_QUANTITY:
        return reported or state.avg_entry_price
    return reported
