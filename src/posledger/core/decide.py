"""Pure decisions: what a request, executions or an order's end write to a key's stream.

Each ``decide_*`` takes the key's state and the command's facts and returns the events to
append (possibly none); nothing here reads a clock, a store or an exchange. Recording
executions also decides their dedup markers (``ExecutionSeen``) against the payloads already
recorded, which the caller looks up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs

from posledger.core.errors import ExecutionConflict, InvalidInput
from posledger.core.events import (
    Closed,
    ExecutionEvent,
    ExecutionSeen,
    ExitRequested,
    Filled,
    FundingSettled,
    KeyRegistered,
    OpenRequested,
    OrderBooked,
    OrderEnded,
    PartiallyFilled,
    PositionEvent,
    marker_id,
    order_marker_id,
)
from posledger.core.model import SIZES, ExecKind, Fill, PositionKey, Side, aware_utc
from posledger.core.position import ZERO, PendingOrder, PositionState, evolve

CLOSE_REASON_BY_KIND = {
    ExecKind.TRADE: "filled",
    ExecKind.LIQUIDATION: "liquidated",
    ExecKind.ADL: "adl",
    ExecKind.DELIVERY: "delivered",
    ExecKind.SETTLE: "settled",
    ExecKind.BLOCK_TRADE: "block_trade",
    ExecKind.MOVE_POSITION: "position_moved",
    ExecKind.SPREAD_TRADE: "spread_trade",
    ExecKind.CORPORATE_ACTION: "corporate_action",
    ExecKind.UNKNOWN: "unknown_execution",
}
"""``Closed.reason`` of a lifecycle ended by an execution of each size-changing kind."""


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
    event = KeyRegistered(
        originator_id=key.stream_id,
        originator_version=1,
        timestamp=aware_utc(at, "at"),
        venue=key.venue,
        account=key.account,
        category=key.category,
        symbol=key.symbol,
        idx=key.idx,
        book=key.book,
    )
    if not key.book:  # the default book's registration is stored as before books existed
        del event.__dict__["book"]
    return event


def decide_request(
    state: PositionState,
    *,
    order_id: str,
    side: Side | None,
    qty: Decimal,
    price: Decimal | None,
    at: datetime,
    reduce_only: bool,
    booked: str | None = None,
    books: bool = False,
) -> list[Any]:
    """Record an order the bot submitted. Repeating an identical request is a no-op.

    ``booked`` is the book the order id is already booked in (its ``OrderBooked`` marker, if
    any): an order belongs to one book, and the first request of an order in a named book
    writes its marker (docs/books.md); so does one in the default book when the account
    ``books`` (has named books), so its late executions are not taken for a manual trade."""
    if not order_id:
        raise InvalidInput("order_id must be a non-empty string")
    if booked is not None and booked != state.key.book:
        raise InvalidInput(
            f"order {order_id!r} was requested in book {booked or '(default)'!r}, "
            f"not {state.key.book or '(default)'!r}: an order belongs to one book"
        )
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
    if booked is None and (state.key.book or books):
        key = state.key
        marker = OrderBooked(
            originator_id=order_marker_id(key.venue, key.account, order_id),
            originator_version=1,
            timestamp=at,
            order_id=order_id,
            book=key.book,
            stream_id=key.stream_id,
        )
        return [*emitter.events, marker]
    return list(emitter.events)


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
        emit_fill(emitter, fill)
    return emitter.events, emitter.preview


def emit_fill(emitter: Emitter, fill: Fill, account: PositionState | None = None) -> None:
    """Emit ``fill``'s execution event. Whether the last correction already counted it is judged
    on ``account`` when given: a book's share of an account's execution is absorbed when the
    account's correction reflected it, even in a book that had no stream then."""
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
        "venue_type": fill.venue_type,
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
    order = state.pending(fill.order_id) if fill.order_id else None
    absorbed = _reflected_by_last_correction(state if account is None else account, fill, order)
    leg = state.key.leg_side
    reduce_only = (order is not None and order.reduce_only) or (
        leg is not None and fill.side is not leg
    )
    over_order = max(SIZES.subtract(fill.qty, order.remaining), ZERO) if order is not None else ZERO
    reducible = state.size if state.side is not None and fill.side is not state.side else ZERO
    over_position = max(SIZES.subtract(fill.qty, reducible), ZERO) if reduce_only else ZERO
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


def _reflected_by_last_correction(
    state: PositionState, fill: Fill, order: PendingOrder | None
) -> bool:
    """Whether the snapshot the last correction came from already counted this execution.

    Bybit ``seq`` orders an execution against that snapshot exactly. Without it, time does, but
    never for an order the ledger saw requested at or after the snapshot's ``taken_at`` (as for
    orders in flight, the read cannot have seen it): an execution time earlier than
    ``taken_at`` then only means the two clocks disagree (docs/design.md#absorbed)."""
    if fill.seq is not None and state.corrected_seq is not None:
        return fill.seq <= state.corrected_seq
    corrected_at = state.corrected_at
    if corrected_at is None or fill.exec_time > corrected_at:
        return False
    return order is None or order.requested_at < corrected_at


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


# --- recording executions: dedup markers and per-fill results ----------------------------------


@attrs.frozen
class FillResult:
    """What became of one execution: applied (and as which event), or a harmless duplicate."""

    exec_id: str
    duplicate: bool
    event: str | None
    overfill: Decimal


@attrs.frozen
class FillBatchResult:
    """What recording a batch of executions did: the key's state after it, and one
    :class:`FillResult` per distinct ``exec_id``."""

    position: PositionState
    fills: tuple[FillResult, ...]

    @property
    def applied(self) -> int:
        return sum(1 for f in self.fills if not f.duplicate)


@attrs.frozen
class Marker:
    """A new execution's dedup marker: its stream id and the payload every later sighting of the
    exec_id must repeat."""

    stream_id: UUID
    payload: str


@attrs.frozen
class Recording:
    """The decision of recording executions: the position's events then one marker per new
    exec_id (all saved in one transaction), what became of each fill, the state after the
    position's events, and the markers to remember once saved."""

    events: tuple[Any, ...]
    results: tuple[FillResult, ...]
    after: PositionState
    markers: tuple[Marker, ...]


def marker_payload(key: PositionKey, fill: Fill) -> str:
    return f"{key}|{fill.payload()}"


def decide_recording(
    state: PositionState, fills: Sequence[Fill], recorded: Callable[[UUID], str | None]
) -> Recording:
    """Record ``fills`` on ``state``'s key. ``recorded`` gives the payload stored for a marker
    (None if unknown): a known exec_id with the same payload is a duplicate, with another one an
    :class:`ExecutionConflict`, as is one exec_id offered twice with different payloads."""
    key = state.key
    fresh: list[tuple[Fill, Marker]] = []
    offered: dict[str, str] = {}
    for fill in fills:
        payload = marker_payload(key, fill)
        if fill.exec_id in offered:
            if offered[fill.exec_id] != payload:
                raise ExecutionConflict(fill.exec_id, offered[fill.exec_id], payload)
            continue
        offered[fill.exec_id] = payload
        marker = Marker(marker_id(key.venue, key.account, fill.exec_id), payload)
        known = recorded(marker.stream_id)
        if known is None:
            fresh.append((fill, marker))
        elif known != payload:
            raise ExecutionConflict(fill.exec_id, known, payload)
    decided, after = preview_fills(state, [fill for fill, _ in fresh])
    applied = {e.exec_id: e for e in decided if isinstance(e, ExecutionEvent)}
    results = tuple(
        FillResult(
            exec_id=exec_id,
            duplicate=exec_id not in applied,
            event=type(applied[exec_id]).__name__ if exec_id in applied else None,
            overfill=applied[exec_id].overfill if exec_id in applied else ZERO,
        )
        for exec_id in offered
    )
    markers = tuple(
        ExecutionSeen(
            originator_id=marker.stream_id,
            originator_version=1,
            timestamp=fill.exec_time,
            exec_id=fill.exec_id,
            stream_id=key.stream_id,
            payload=marker.payload,
        )
        for fill, marker in fresh
    )
    return Recording(
        events=(*decided, *markers),
        results=results,
        after=after,
        markers=tuple(marker for _, marker in fresh),
    )
