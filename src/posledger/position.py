"""The functional core of a position: ``evolve(state, event) -> state`` and the pure decisions.

Nothing here touches a clock, a database or an exchange, so hypothesis can drive it through long
histories. A stream holds many lifecycles: a lifecycle begins when the key leaves ``flat`` (a
request, a fill, an adoption) and ends when the position reaches zero, flips side, or the requests
of a never-filled lifecycle all end. The event that causes an end performs it; the ``Closed`` event
that decide() appends after it only records the lifecycle's final figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from posledger.errors import InvalidInput
from posledger.events import (
    Closed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExitRequested,
    Filled,
    FundingSettled,
    KeyRegistered,
    OpenRequested,
    OrderEnded,
    PartiallyFilled,
    PositionEvent,
    Reconciled,
)
from posledger.model import ExecKind, Fill, PositionKey, Side, Status, aware_utc, cached_key

ZERO = Decimal(0)
T = TypeVar("T", int, datetime)
_SIDES = {side.value: side for side in Side}
"""Side by stored value, looked up without the enum's call (replays do it per execution)."""

CLOSE_REASON_BY_KIND = {
    ExecKind.TRADE: "filled",
    ExecKind.LIQUIDATION: "liquidated",
    ExecKind.ADL: "adl",
    ExecKind.DELIVERY: "delivered",
    ExecKind.SETTLE: "settled",
}


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
        return max(self.qty - self.filled, ZERO)


@attrs.frozen
class SuspectRun:
    """A disagreement seen in ``count`` consecutive snapshots, the latest taken at ``taken_at``."""

    side: Side | None
    size: Decimal
    count: int
    taken_at: datetime


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
    subtracted from realized PnL.
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

    def _repr_html_(self) -> str:
        """A table in Jupyter (rendered by posledger.audit)."""
        from posledger.audit import state_html

        return state_html(self)

    def pending(self, order_id: str) -> PendingOrder | None:
        for order in self.pending_orders:
            if order.order_id == order_id:
                return order
        return None


# --- evolve ----------------------------------------------------------------------------------


def _replace(state: PositionState, **changes: Any) -> PositionState:
    """``attrs.evolve(state, **changes)`` without its walk over every field and ``__init__``:
    replays build a state per event. Exact because PositionState has no converters, validators
    or post-init (tests/test_fast_decoder.py checks this), and keeps its fields in ``__dict__``
    for this copy."""
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
    raise ValueError(f"unknown event {type(event).__name__}")


def key_of(event: KeyRegistered) -> PositionKey:
    return cached_key(event.venue, event.account, event.category, event.symbol, event.idx)


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
    (or adds); a zero crossing ends the lifecycle between the two parts."""
    try:
        side = _SIDES[event.side]
    except (KeyError, TypeError):
        side = Side(event.side)
    opposes = state.side is not None and side is not state.side
    closing = min(event.qty, state.size) if opposes and not event.absorbed else ZERO
    opening = ZERO if event.reduce_only or event.absorbed else event.qty - closing
    fee_closing = event.fee if opening == 0 else event.fee * closing / event.qty
    fee_opening = event.fee - fee_closing

    changes: dict[str, Any] = {
        **stamp,
        "pending_orders": _orders_after_execution(state.pending_orders, event),
        "fees": state.fees + event.fee,
        "last_fill_seq": _latest(state.last_fill_seq, event.seq),
        "last_fill_time": _latest(state.last_fill_time, event.exec_time),
        "overfills": state.overfills + (1 if event.overfill > 0 else 0),
        "lifecycle_fees": state.lifecycle_fees + fee_closing,
    }
    if closing > 0 and state.side is not None:
        remaining = state.size - closing
        cost = state.cost_basis
        # The last close takes whatever cost remains, so a lifecycle's PnL is exact even though
        # a partial close's share of the cost needs a (28-digit) division.
        removed = None if cost is None else cost if remaining == 0 else cost * closing / state.size
        pnl = ZERO if removed is None else (event.price * closing - removed) * state.side.sign
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
    cost = (known if known is not None else event.price * size) + event.price * opening
    lifecycle_fees = changes.get("lifecycle_fees", held.lifecycle_fees) + fee
    changes.update(
        side=side,
        size=size + opening,
        cost_basis=cost,
        avg_entry_price=cost / (size + opening),
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
        attrs.evolve(order, filled=order.filled + event.qty)
        if order.order_id == event.order_id
        else order
        for order in orders
    )


def _apply_snapshot(
    state: PositionState, event: ExchangeSnapshot, stamp: dict[str, Any]
) -> PositionState:
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
            event.after_avg_price * event.after_size
            if event.after_avg_price is not None and event.after_size > 0
            else None
        ),
        suspect=None,
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
    ended = before.active and (
        closed or (not had_position and after.status is Status.FLAT)
    )
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


# --- decide ----------------------------------------------------------------------------------


class Emitter:
    """Builds the events of one decision with consecutive versions after ``state``, folding each
    into a preview so later events of the same decision see its effect."""

    def __init__(self, state: PositionState) -> None:
        self.start = state
        self.preview = state
        self.events: list[PositionEvent] = []

    def emit(self, cls: type[PositionEvent], at: datetime, **fields: Any) -> None:
        event = cls(
            originator_id=self.start.key.stream_id,
            originator_version=self.preview.version + 1,
            timestamp=at,
            **fields,
        )
        self.preview = evolve(self.preview, event)
        self.events.append(event)

    def close_if_ended(self, reason: str, at: datetime, previous: PositionState) -> None:
        """Append ``Closed`` when the last emitted event ended a lifecycle."""
        summary = self.preview.last_closed
        if summary is not None and summary is not previous.last_closed:
            self.emit(
                Closed,
                at,
                reason=reason,
                lifecycle=summary.number,
                opened_at=summary.opened_at,
                realized_pnl=summary.realized_pnl,
                fees=summary.fees,
                funding=summary.funding,
                cleared_orders=list(summary.cleared_orders),
            )


def register(key: PositionKey, at: datetime) -> KeyRegistered:
    return KeyRegistered(
        originator_id=key.stream_id,
        originator_version=1,
        timestamp=aware_utc(at, "at"),
        venue=key.venue,
        account=key.account,
        category=key.category,
        symbol=key.symbol,
        idx=key.idx,
    )


def decide_request(
    state: PositionState,
    *,
    order_id: str,
    side: Side | None,
    qty: Decimal,
    price: Decimal | None,
    at: datetime,
    reduce_only: bool,
) -> list[PositionEvent]:
    """Record an order the bot submitted. Repeating an identical request is a no-op."""
    if not order_id:
        raise InvalidInput("order_id must be a non-empty string")
    if reduce_only:
        implied = state.side.opposite if state.side is not None else None
        if side is None:
            if implied is None:
                raise InvalidInput(f"{state.key}: no position to exit; pass side= explicitly")
            side = implied
        elif implied is not None and side is not implied:
            raise InvalidInput(f"{state.key}: an exit of a {state.side} position must {implied}")
    elif side is None:
        raise InvalidInput("side is required for an open request")
    leg = state.key.leg_side
    if leg is not None and (side is not leg) != reduce_only:
        verb = "exit" if reduce_only else "open"
        raise InvalidInput(f"{state.key}: a hedge {leg} leg cannot {verb} with a {side} order")
    existing = state.pending(order_id)
    if existing is not None:
        if (existing.side, existing.qty, existing.reduce_only) == (side, qty, reduce_only):
            return []
        raise InvalidInput(f"{state.key}: order {order_id!r} is already pending with other terms")
    emitter = Emitter(state)
    cls = ExitRequested if reduce_only else OpenRequested
    emitter.emit(cls, at, order_id=order_id, side=side.value, qty=qty, price=price)
    return emitter.events


def check_fill_key(key: PositionKey, fill: Fill) -> None:
    if fill.symbol is not None and fill.symbol != key.symbol:
        raise InvalidInput(f"fill {fill.exec_id} is for {fill.symbol}, not {key}")
    if fill.idx is not None and fill.idx != key.idx:
        raise InvalidInput(f"fill {fill.exec_id} is for positionIdx {fill.idx}, not {key}")


def decide_fills(state: PositionState, fills: Sequence[Fill]) -> list[PositionEvent]:
    """Record executions already known to be new (the shell deduplicates against the store);
    duplicates inside the batch itself are applied once."""
    return preview_fills(state, fills)[0]


def preview_fills(
    state: PositionState, fills: Sequence[Fill]
) -> tuple[list[PositionEvent], PositionState]:
    """:func:`decide_fills` with the state after its events (already folded while deciding,
    so a bulk import need not fold them again)."""
    emitter = Emitter(state)
    seen: set[str] = set()
    for fill in fills:
        check_fill_key(state.key, fill)
        if fill.exec_id in seen:
            continue
        seen.add(fill.exec_id)
        _emit_fill(emitter, fill)
    return emitter.events, emitter.preview


def _emit_fill(emitter: Emitter, fill: Fill) -> None:
    state = emitter.preview
    fields: dict[str, Any] = {
        "exec_id": fill.exec_id,
        "order_id": fill.order_id,
        "side": fill.side.value,
        "qty": fill.qty,
        "price": fill.price,
        "fee": fill.fee,
        "exec_time": fill.exec_time,
        "seq": fill.seq,
        "kind": fill.kind.value,
        "leaves_qty": fill.leaves_qty,
    }
    if not fill.kind.changes_size:
        emitter.emit(
            FundingSettled,
            fill.exec_time,
            reduce_only=False,
            overfill=ZERO,
            absorbed=False,
            **fields,
        )
        return
    absorbed = _reflected_by_last_correction(state, fill)
    order = state.pending(fill.order_id) if fill.order_id else None
    leg = state.key.leg_side
    reduce_only = (order is not None and order.reduce_only) or (
        leg is not None and fill.side is not leg
    )
    over_order = max(fill.qty - order.remaining, ZERO) if order is not None else ZERO
    reducible = state.size if state.side is not None and fill.side is not state.side else ZERO
    over_position = max(fill.qty - reducible, ZERO) if reduce_only else ZERO
    if fill.leaves_qty is not None:
        completes = fill.leaves_qty == 0
    else:
        completes = order is None or fill.qty >= order.remaining
    cls = Filled if completes else PartiallyFilled
    emitter.emit(
        cls,
        fill.exec_time,
        reduce_only=reduce_only,
        overfill=ZERO if absorbed else max(over_order, over_position),
        absorbed=absorbed,
        **fields,
    )
    emitter.close_if_ended(CLOSE_REASON_BY_KIND[fill.kind], fill.exec_time, state)


def _reflected_by_last_correction(state: PositionState, fill: Fill) -> bool:
    """Bybit ``seq`` orders an execution against the snapshot a correction came from; without
    it, time does."""
    if fill.seq is not None and state.corrected_seq is not None:
        return fill.seq <= state.corrected_seq
    return state.corrected_at is not None and fill.exec_time <= state.corrected_at


def decide_order_end(
    state: PositionState, *, order_id: str, status: str, at: datetime
) -> list[PositionEvent]:
    """An order ended without (full) fill. Unknown or already-ended orders are a no-op."""
    if state.pending(order_id) is None:
        return []
    emitter = Emitter(state)
    emitter.emit(OrderEnded, at, order_id=order_id, status=status)
    emitter.close_if_ended("order_ended", at, state)
    return emitter.events
