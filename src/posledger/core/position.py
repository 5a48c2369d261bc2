"""The functional core of a position: ``evolve(state, event) -> state`` and the pure decisions.

Nothing here touches a clock, a database or an exchange, so hypothesis can drive it through long
histories. A stream holds many lifecycles: a lifecycle begins when the key leaves ``flat`` (a
request, a fill, an adoption) and ends when the position reaches zero, flips side, or the requests
of a never-filled lifecycle all end. The event that causes an end performs it; the ``Closed`` event
that decide() appends after it only records the lifecycle's final figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from posledger.core.contract import COIN_COST, INVERSE
from posledger.core.events import (
    Allocated,
    Closed,
    CorrectionProposed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExitRequested,
    Filled,
    FundingSettled,
    KeyRegistered,
    MoneyReconciled,
    OpenRequested,
    OrderEnded,
    PartiallyFilled,
    PositionEvent,
    ProposalDecided,
    Reconciled,
)
from posledger.core.model import SIZES, ExecKind, PositionKey, Side, Status, cached_key

ZERO = Decimal(0)
T = TypeVar("T", int, datetime)
_SIDES = {side.value: side for side in Side}
"""Side by stored value, looked up without the enum's call (replays do it per execution)."""
_UNKNOWN = ExecKind.UNKNOWN.value
"""The stored kind of an execution of a type posledger does not know."""


@attrs.frozen
class PendingOrder:
    """An order the bot said it submitted and that has not ended yet."""

    order_id: str
    side: Side
    qty: Decimal
    filled: Decimal
    reduce_only: bool
    requested_at: datetime
    price: Decimal | None = None

    @property
    def remaining(self) -> Decimal:
        return max(SIZES.subtract(self.qty, self.filled), ZERO)


@attrs.frozen
class SuspectRun:
    """A disagreement seen in ``count`` consecutive snapshots, the latest taken at ``taken_at``."""

    side: Side | None
    size: Decimal
    count: int
    taken_at: datetime


@attrs.frozen
class Proposal:
    """An open proposal (``CorrectionProposed``): the correction approving it would apply, and
    the latest evidence for it. While one is open the key is held (docs/design.md#approval)."""

    proposal_id: str
    kind: str
    proposed_at: datetime
    reason: str
    before_side: str | None
    before_size: Decimal
    after_side: str | None
    after_size: Decimal
    after_avg_price: Decimal | None
    cleared_orders: tuple[str, ...]
    evidence_taken_at: datetime
    evidence_seq: int | None
    evidence_avg_price: Decimal | None
    confirmations: int


@attrs.frozen
class LifecycleSummary:
    """The final figures of the most recently ended lifecycle (for its ``Closed`` record)."""

    number: int
    opened_at: datetime | None
    realized_pnl: Decimal
    fees: Decimal
    funding: Decimal
    cleared_orders: tuple[str, ...]


@attrs.frozen(slots=False)
class PositionState:
    """What the ledger believes one key holds, rebuilt from its events. Immutable.

    ``realized_pnl`` (average cost, including funding received/paid), ``fees`` and ``funding``
    are running totals over every lifecycle of the key; the ``lifecycle_*`` figures are the
    current lifecycle's own (zero while flat; ``last_closed`` keeps the last one's). Fees are not
    subtracted from realized PnL; ``adopted_pnl`` and ``unexplained_pnl`` are what money
    reconciliation brought in from the exchange's records (docs/design.md#money), net of fees,
    and ``booked_pnl`` adds everything up. ``cost_basis`` is the quote paid on a linear key and
    the coin value (Σ qty / price) on an inverse one, whose money figures are in the coin
    (docs/design.md#inverse).
    """

    key: PositionKey
    version: int
    updated_at: datetime
    lifecycle: int = 0
    active: bool = False
    opened_at: datetime | None = None
    side: Side | None = None
    size: Decimal = ZERO
    avg_entry_price: Decimal | None = None
    cost_basis: Decimal | None = None
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    lifecycle_realized_pnl: Decimal = ZERO
    lifecycle_fees: Decimal = ZERO
    lifecycle_funding: Decimal = ZERO
    pending_orders: tuple[PendingOrder, ...] = ()
    last_fill_seq: int | None = None
    last_fill_time: datetime | None = None
    corrected_seq: int | None = None
    corrected_at: datetime | None = None
    last_snapshot_at: datetime | None = None
    suspect: SuspectRun | None = None
    overfills: int = 0
    last_closed: LifecycleSummary | None = None
    proposal: Proposal | None = None
    adopted_pnl: Decimal = ZERO
    unexplained_pnl: Decimal = ZERO
    money_checked_until: datetime | None = None

    @property
    def booked_pnl(self) -> Decimal:
        """Net of fees, everything the books hold: realized from fills (funding included),
        adopted from exchange records, and the unexplained remainder (docs/design.md#money)."""
        return self.realized_pnl - self.fees + self.adopted_pnl + self.unexplained_pnl

    @property
    def held(self) -> bool:
        """A correction waits for a person's decision: a bot should not trade the key."""
        return self.proposal is not None

    @property
    def status(self) -> Status:
        if self.size > 0:
            return Status.OPEN
        if any(not order.reduce_only for order in self.pending_orders):
            return Status.PENDING
        return Status.FLAT

    @property
    def signed_size(self) -> Decimal:
        """Size with the direction as sign: long positive, short negative."""
        return self.size * self.side.sign if self.side is not None else ZERO

    def pending(self, order_id: str) -> PendingOrder | None:
        for order in self.pending_orders:
            if order.order_id == order_id:
                return order
        return None


# --- evolve ----------------------------------------------------------------------------------


def _replace(state: PositionState, **changes: Any) -> PositionState:
    """``attrs.evolve(state, **changes)`` without its walk over every field and ``__init__``:
    replays build a state per event. Exact because PositionState has no converters, validators
    or post-init (tests/store/test_fast_decoder.py checks this), and keeps its fields in
    ``__dict__`` for this copy."""
    new = object.__new__(PositionState)
    object.__setattr__(new, "__dict__", {**state.__dict__, **changes})
    return new


def evolve(state: PositionState | None, event: PositionEvent) -> PositionState:
    """Apply one event. Deterministic: replaying a stream always yields the same state.

    Replay speed matters (whole ledgers are rebuilt in notebooks), so the common event builds
    exactly one new state; intermediate states exist only where a lifecycle ends or starts."""
    if state is None:
        if not isinstance(event, KeyRegistered):
            raise ValueError(f"a stream must start with KeyRegistered, not {type(event).__name__}")
        return PositionState(
            key=key_of(event), version=event.originator_version, updated_at=event.timestamp
        )
    if event.originator_version != state.version + 1:
        raise ValueError(
            f"{state.key}: event version {event.originator_version} does not follow {state.version}"
        )
    stamp: dict[str, Any] = {"version": event.originator_version, "updated_at": event.timestamp}
    if isinstance(event, PartiallyFilled | Filled):
        return _apply_execution(state, event, stamp)
    if isinstance(event, FundingSettled):
        return _apply_funding(state, event, stamp)
    if isinstance(event, OpenRequested | ExitRequested):
        return _apply_request(state, event, stamp)
    if isinstance(event, OrderEnded):
        after = _without_orders(state, {event.order_id}, **stamp)
        return _settle(state, after, event.timestamp)
    if isinstance(event, ExchangeSnapshot):
        return _apply_snapshot(state, event, stamp)
    if isinstance(event, Reconciled):
        return _apply_reconciled(state, event, stamp)
    if isinstance(event, Closed):
        return _replace(state, **stamp)
    if isinstance(event, CorrectionProposed):
        run = SuspectRun(
            side=Side(event.after_side) if event.after_side else None,
            size=event.after_size,
            count=event.confirmations,
            taken_at=event.snapshot_taken_at,
        )
        return _replace(
            state,
            proposal=_proposal(event),
            suspect=run,
            last_snapshot_at=event.snapshot_taken_at,
            **stamp,
        )
    if isinstance(event, Allocated):  # explains the share's own event, which follows it
        return _replace(state, **stamp)
    if isinstance(event, MoneyReconciled):
        field = "adopted_pnl" if event.adopted else "unexplained_pnl"
        changes = {field: getattr(state, field) + event.difference}
        return _replace(state, money_checked_until=event.window_end, **changes, **stamp)
    if isinstance(event, ProposalDecided):
        rejected = event.decision == "rejected"  # fresh confirmations before the next one
        return _replace(state, proposal=None, **({"suspect": None} if rejected else {}), **stamp)
    raise ValueError(f"unknown event {type(event).__name__}")


def key_of(event: KeyRegistered) -> PositionKey:
    return cached_key(
        event.venue, event.account, event.category, event.symbol, event.idx, event.book
    )


def project(state: PositionState | None, events: Iterable[PositionEvent]) -> PositionState | None:
    """Fold events into a state (the projector eventsourcing's repository calls)."""
    for event in events:
        state = evolve(state, event)
    return state


def _apply_request(
    state: PositionState, event: OpenRequested | ExitRequested, stamp: dict[str, Any]
) -> PositionState:
    order = PendingOrder(
        order_id=event.order_id,
        side=Side(event.side),
        qty=event.qty,
        filled=ZERO,
        reduce_only=isinstance(event, ExitRequested),
        requested_at=event.timestamp,
        price=event.price,
    )
    after = _replace(state, pending_orders=(*state.pending_orders, order), **stamp)
    return _settle(state, after, event.timestamp)


def _apply_funding(
    state: PositionState, event: FundingSettled, stamp: dict[str, Any]
) -> PositionState:
    return _replace(
        state,
        funding=state.funding + event.fee,
        realized_pnl=state.realized_pnl - event.fee,
        lifecycle_funding=state.lifecycle_funding + event.fee,
        lifecycle_realized_pnl=state.lifecycle_realized_pnl - event.fee,
        **stamp,
    )


def _apply_execution(
    state: PositionState, event: ExecutionEvent, stamp: dict[str, Any]
) -> PositionState:
    """Split the execution into the part that reduces the position and the part that opens
    (or adds); a zero crossing ends the lifecycle between the two parts. An execution of an
    unknown type leaves ``last_fill_seq`` alone: if it did not move the position on the
    exchange, the position's ``seq`` never reaches its own, and every later snapshot would look
    stale instead of refuting it (docs/design.md#exec-types)."""
    try:
        side = _SIDES[event.side]
    except (KeyError, TypeError):
        side = Side(event.side)
    opposes = state.side is not None and side is not state.side
    closing = min(event.qty, state.size) if opposes and not event.absorbed else ZERO
    opening = ZERO if event.reduce_only or event.absorbed else SIZES.subtract(event.qty, closing)
    fee_closing = event.fee if opening == 0 else event.fee * closing / event.qty
    fee_opening = event.fee - fee_closing

    changes: dict[str, Any] = {
        **stamp,
        "pending_orders": _orders_after_execution(state.pending_orders, event),
        "fees": state.fees + event.fee,
        "last_fill_seq": (
            state.last_fill_seq
            if event.kind == _UNKNOWN
            else _latest(state.last_fill_seq, event.seq)
        ),
        "last_fill_time": _latest(state.last_fill_time, event.exec_time),
        "overfills": state.overfills + (1 if event.overfill > 0 else 0),
        "lifecycle_fees": state.lifecycle_fees + fee_closing,
    }
    if closing > 0 and state.side is not None:
        remaining = SIZES.subtract(state.size, closing)
        cost = state.cost_basis
        inverse = state.key.category == INVERSE
        # The last close takes whatever cost remains, so a lifecycle's PnL is exact even though
        # a partial close's share of the cost needs a division. Linear arithmetic is written
        # out here (replays fold millions of fills); inverse goes through COIN_COST.
        if cost is None:
            removed = None
        elif remaining == 0:
            removed = cost
        else:
            removed = (
                COIN_COST.share(cost, closing, state.size)
                if inverse
                else cost * closing / state.size
            )
        if removed is None:
            pnl = ZERO
        elif inverse:
            pnl = COIN_COST.pnl(removed, event.price, closing) * state.side.sign
        else:
            pnl = (event.price * closing - removed) * state.side.sign
        changes.update(
            size=remaining,
            side=state.side if remaining > 0 else None,
            avg_entry_price=state.avg_entry_price if remaining > 0 else None,
            cost_basis=None if removed is None or remaining == 0 else cost - removed,  # type: ignore[operator]
            realized_pnl=state.realized_pnl + pnl,
            lifecycle_realized_pnl=state.lifecycle_realized_pnl + pnl,
        )
        after_close = _settle(state, _replace(state, **changes), event.timestamp)
        if opening == 0:
            return after_close
        return _open(after_close, after_close, side, opening, event, fee_opening, {})
    if opening == 0:
        return _settle(state, _replace(state, **changes), event.timestamp)
    return _open(state, state, side, opening, event, fee_opening, changes)


def _open(
    before: PositionState,
    held: PositionState,
    side: Side,
    opening: Decimal,
    event: ExecutionEvent,
    fee: Decimal,
    changes: dict[str, Any],
) -> PositionState:
    """Add ``opening`` at the execution's price to what ``held`` holds (average cost)."""
    size = held.size
    known = held.cost_basis if size > 0 else ZERO
    after = SIZES.add(size, opening)
    if held.key.category == INVERSE:
        if known is None:
            known = COIN_COST.cost(event.price, size)
        cost = COIN_COST.plus(known, COIN_COST.cost(event.price, opening))
        average = COIN_COST.average(cost, after)
    else:
        cost = (known if known is not None else event.price * size) + event.price * opening
        average = cost / after
    lifecycle_fees = changes.get("lifecycle_fees", held.lifecycle_fees) + fee
    changes.update(
        side=side,
        size=after,
        cost_basis=cost,
        avg_entry_price=average,
        lifecycle_fees=lifecycle_fees,
    )
    return _settle(before, _replace(held, **changes), event.timestamp)


def _latest(known: T | None, new: T | None) -> T | None:
    if known is None or (new is not None and new > known):
        return new
    return known


def _orders_after_execution(
    orders: tuple[PendingOrder, ...], event: ExecutionEvent
) -> tuple[PendingOrder, ...]:
    if not orders:
        return orders
    if isinstance(event, Filled):
        return tuple(order for order in orders if order.order_id != event.order_id)
    return tuple(
        attrs.evolve(order, filled=SIZES.add(order.filled, event.qty))
        if order.order_id == event.order_id
        else order
        for order in orders
    )


def _proposal(event: CorrectionProposed) -> Proposal:
    return Proposal(
        proposal_id=event.proposal_id,
        kind=event.kind,
        proposed_at=event.timestamp,
        reason=event.reason,
        before_side=event.before_side,
        before_size=event.before_size,
        after_side=event.after_side,
        after_size=event.after_size,
        after_avg_price=event.after_avg_price,
        cleared_orders=tuple(event.cleared_orders),
        evidence_taken_at=event.snapshot_taken_at,
        evidence_seq=event.snapshot_seq,
        evidence_avg_price=event.snapshot_avg_price,
        confirmations=event.confirmations,
    )


def _apply_snapshot(
    state: PositionState, event: ExchangeSnapshot, stamp: dict[str, Any]
) -> PositionState:
    proposal = state.proposal
    # A later snapshot showing what the proposal would set is fresh evidence for it.
    if (
        proposal is not None
        and event.suspect
        and (event.side, event.size) == (proposal.after_side, proposal.after_size)
    ):
        stamp["proposal"] = attrs.evolve(
            proposal,
            evidence_taken_at=event.taken_at,
            evidence_seq=event.seq,
            evidence_avg_price=event.avg_price,
            confirmations=event.confirmations,
        )
    suspect = (
        SuspectRun(
            side=Side(event.side) if event.side else None,
            size=event.size,
            count=event.confirmations,
            taken_at=event.taken_at,
        )
        if event.suspect
        else None
    )
    return _replace(state, suspect=suspect, last_snapshot_at=event.taken_at, **stamp)


def _apply_reconciled(
    state: PositionState, event: Reconciled, stamp: dict[str, Any]
) -> PositionState:
    after = _without_orders(
        state,
        set(event.cleared_orders),
        side=Side(event.after_side) if event.after_side else None,
        size=event.after_size,
        avg_entry_price=event.after_avg_price if event.after_size > 0 else None,
        cost_basis=(
            (
                COIN_COST.cost(event.after_avg_price, event.after_size)
                if state.key.inverse
                else event.after_avg_price * event.after_size
            )
            if event.after_avg_price is not None and event.after_size > 0
            else None
        ),
        suspect=None,
        proposal=None,
        last_snapshot_at=event.snapshot_taken_at,
        corrected_seq=event.snapshot_seq,
        corrected_at=event.snapshot_taken_at,
        **stamp,
    )
    return _settle(state, after, event.timestamp)


def _without_orders(state: PositionState, order_ids: set[str], **changes: Any) -> PositionState:
    """``state`` without those pending orders, plus ``changes``; itself if nothing changes."""
    if order_ids and any(o.order_id in order_ids for o in state.pending_orders):
        changes["pending_orders"] = tuple(
            o for o in state.pending_orders if o.order_id not in order_ids
        )
    return _replace(state, **changes) if changes else state


def _settle(before: PositionState, after: PositionState, at: datetime) -> PositionState:
    """Apply lifecycle rules to a transition: end the lifecycle when the position reached zero or
    changed side (or a never-filled lifecycle went flat), start one when the key left flat.

    Reduce-only exits cannot outlive the position they reduce, so a close or a flip drops them.
    """
    had_position = before.size > 0
    closed = had_position and (after.size == 0 or after.side is not before.side)
    exits = tuple(o.order_id for o in after.pending_orders if o.reduce_only) if closed else ()
    if exits:
        after = _without_orders(after, set(exits))
    ended = before.active and (closed or (not had_position and after.status is Status.FLAT))
    if ended:
        after = _replace(
            after,
            active=False,
            last_closed=LifecycleSummary(
                number=before.lifecycle,
                opened_at=before.opened_at,
                realized_pnl=after.lifecycle_realized_pnl,
                fees=after.lifecycle_fees,
                funding=after.lifecycle_funding,
                cleared_orders=exits,
            ),
            lifecycle_realized_pnl=ZERO,
            lifecycle_fees=ZERO,
            lifecycle_funding=ZERO,
        )
    if not after.active and after.status is not Status.FLAT:
        after = _replace(after, active=True, lifecycle=after.lifecycle + 1, opened_at=at)
    return after
