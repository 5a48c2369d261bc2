"""Books: several owners of positions in one account, judged together (docs/books.md).

The exchange reports one position per account key (venue, account, category, symbol, idx);
each book keeps its own stream. :func:`account_view` folds the books into the account's
position, the state every rule of reconciliation is decided on; :func:`to_books` writes what
was decided for the account into the books' streams: the evidence (``ExchangeSnapshot``) to
every book, proposals to the unassigned book, and a correction as each book's share of it
(``Allocated`` then ``Reconciled``, in every book, so late executions are absorbed wherever
they land). Executions are routed by :func:`decide_account_fills`: to their order's book, or,
belonging to no book, by the allocation policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs

from posledger.core.allocation import (
    FUNDING,
    MONEY_UNIT,
    AllocationPolicy,
    Rule,
    allocate_change,
    hamilton,
    split_funding,
    unit_of,
)
from posledger.core.contract import COIN_COST
from posledger.core.decide import (
    Emitter,
    FillResult,
    Marker,
    emit_fill,
    marker_payload,
    register,
)
from posledger.core.errors import ExecutionConflict
from posledger.core.events import (
    Allocated,
    Closed,
    CorrectionProposed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExecutionSeen,
    PositionEvent,
    ProposalDecided,
    Reconciled,
    marker_id,
)
from posledger.core.model import SIZES, Fill, PositionKey, Side
from posledger.core.position import ZERO, PositionState, evolve

Books = Mapping[str, PositionState]
"""An account key's books: each book's state, by book name."""


def account_view(key: PositionKey, books: Books, home: str) -> PositionState:
    """The account's position as one state: sizes, money and pending orders summed over the
    books; the latest fill, snapshot and correction of any book; the unassigned (``home``)
    book's proposal. Its version is the sum of the books' (it only grows), so ids derived
    from it are never reused. One book of the default book's key is itself."""
    states = [books[book] for book in sorted(books)]
    if len(states) == 1 and states[0].key == key:
        return states[0]
    net = sum((s.signed_size for s in states), ZERO)
    side = None if net == 0 else (Side.BUY if net > 0 else Side.SELL)
    latest = max(states, key=lambda s: (s.last_snapshot_at is not None, s.last_snapshot_at))
    first = min(states, key=lambda s: s.version)
    return attrs.evolve(
        first,
        key=key,
        version=sum(s.version for s in states),
        updated_at=max(s.updated_at for s in states),
        lifecycle=max(s.lifecycle for s in states),
        active=any(s.active for s in states),
        opened_at=min((s.opened_at for s in states if s.opened_at), default=None),
        side=side,
        size=abs(net),
        avg_entry_price=_average(key, [s for s in states if s.side is side and side]),
        cost_basis=None,
        realized_pnl=sum((s.realized_pnl for s in states), ZERO),
        fees=sum((s.fees for s in states), ZERO),
        funding=sum((s.funding for s in states), ZERO),
        lifecycle_realized_pnl=sum((s.lifecycle_realized_pnl for s in states), ZERO),
        lifecycle_fees=sum((s.lifecycle_fees for s in states), ZERO),
        lifecycle_funding=sum((s.lifecycle_funding for s in states), ZERO),
        pending_orders=tuple(o for s in states for o in s.pending_orders),
        last_fill_seq=max((s.last_fill_seq for s in states if s.last_fill_seq), default=None),
        last_fill_time=max((s.last_fill_time for s in states if s.last_fill_time), default=None),
        corrected_seq=max((s.corrected_seq for s in states if s.corrected_seq), default=None),
        corrected_at=max((s.corrected_at for s in states if s.corrected_at), default=None),
        last_snapshot_at=latest.last_snapshot_at,
        suspect=latest.suspect,
        overfills=sum(s.overfills for s in states),
        last_closed=None,
        proposal=books[home].proposal if home in books else None,
        adopted_pnl=sum((s.adopted_pnl for s in states), ZERO),
        unexplained_pnl=sum((s.unexplained_pnl for s in states), ZERO),
        money_checked_until=None,
    )


def _average(key: PositionKey, holders: Sequence[PositionState]) -> Decimal | None:
    """The books on the account's side as one average entry price (harmonic on inverse)."""
    if not holders or any(s.avg_entry_price is None for s in holders):
        return None
    size = sum((s.size for s in holders), ZERO)
    if key.inverse:
        coin = sum((COIN_COST.cost(s.avg_entry_price, s.size) for s in holders), ZERO)  # type: ignore[arg-type]
        return size / coin
    return sum((s.avg_entry_price * s.size for s in holders), ZERO) / size  # type: ignore[operator]


class BookEmitters:
    """One :class:`Emitter` per book of an account key, the unassigned book registered on its
    first event if it has no stream yet."""

    def __init__(self, key: PositionKey, books: Books, allocation: AllocationPolicy) -> None:
        self.key = key
        self.allocation = allocation
        self.emitters = {book: Emitter(state) for book, state in books.items()}

    def of(self, book: str, at: datetime) -> Emitter:
        emitter = self.emitters.get(book)
        if emitter is None:
            fresh = evolve(None, register(self.key.in_book(book), at))
            emitter = self.emitters[book] = Emitter(fresh)
        return emitter

    def sizes(self) -> dict[str, Decimal]:
        return {book: e.preview.signed_size for book, e in self.emitters.items()}

    def events(self) -> dict[PositionKey, list[Any]]:
        return {e.start.key: list(e.events) for e in self.emitters.values() if e.events}


def to_books(
    events: Sequence[PositionEvent],
    books: Books,
    allocation: AllocationPolicy,
    key: PositionKey,
    home: str,
) -> dict[PositionKey, list[Any]]:
    """The events decided on the :func:`account_view` of ``books`` as each book's events
    (proposals and their decisions to ``home``, the book holding the account's proposal)."""
    out = BookEmitters(key, books, allocation)
    for event in events:
        fields = _fields(event)
        if isinstance(event, ExchangeSnapshot):
            for book in sorted(books):
                out.of(book, event.timestamp).emit(ExchangeSnapshot, event.timestamp, **fields)
        elif isinstance(event, CorrectionProposed | ProposalDecided):
            out.of(home, event.timestamp).emit(type(event), event.timestamp, **fields)
        elif isinstance(event, Reconciled):
            _allocate_correction(out, event)
        elif not isinstance(event, Closed):  # each book closes its own lifecycle
            raise ValueError(f"{type(event).__name__} is not an account-level decision")
    return out.events()


def _fields(event: PositionEvent) -> dict[str, Any]:
    skip = ("originator_id", "originator_version", "timestamp")
    return {name: value for name, value in event.__dict__.items() if name not in skip}


def _signed(side: str | None, size: Decimal) -> Decimal:
    return -size if side == Side.SELL.value else size if side else ZERO


def _allocate_correction(out: BookEmitters, event: Reconciled) -> None:
    """The account's correction as every book's ``Allocated`` (its share, none for some, and
    the account's size before and after: the exchange's) then ``Reconciled`` (its orders among
    those cleared), and ``Closed`` where its lifecycle ended."""
    at = event.timestamp
    change = SIZES.subtract(
        _signed(event.after_side, event.after_size), _signed(event.before_side, event.before_size)
    )
    rule = out.allocation.rule(event.kind)
    shares = allocate_change(change, out.sizes(), rule, out.allocation.unassigned)
    for book in shares:
        out.of(book, at)
    cleared = set(event.cleared_orders)
    for book in sorted(out.emitters):
        emitter = out.emitters[book]
        before = emitter.preview
        share = shares.get(book, ZERO)
        emitter.emit(
            Allocated,
            at,
            cause=event.kind,
            rule=rule.value,
            exec_id=None,
            total=change,
            share=share,
            books=sorted(shares),
            account_before=_signed(event.before_side, event.before_size),
            account_after=_signed(event.after_side, event.after_size),
        )
        after = SIZES.add(before.signed_size, share)
        after_side = None if after == 0 else (Side.BUY if after > 0 else Side.SELL)
        emitter.emit(
            Reconciled,
            at,
            **{
                **_fields(event),
                "before_side": before.side.value if before.side else None,
                "before_size": before.size,
                "after_side": after_side.value if after_side else None,
                "after_size": abs(after),
                "after_avg_price": _book_average(before, after_side, abs(after), event),
                "cleared_orders": [
                    o.order_id for o in before.pending_orders if o.order_id in cleared
                ],
            },
        )
        emitter.close_if_ended(event.kind, at, before)


def _book_average(
    before: PositionState, side: Side | None, size: Decimal, event: Reconciled
) -> Decimal | None:
    """A reduced book keeps its own average; a book that grew, flipped or opened takes the
    exchange's (the correction's), else keeps its own."""
    if size == 0:
        return None
    if side is before.side and size <= before.size:
        return before.avg_entry_price
    return event.after_avg_price or before.avg_entry_price


# --- executions of an account, routed to books --------------------------------------------


@attrs.frozen
class AccountRecording:
    """Recording executions of an account key: each book's events (markers at the end of the
    first book's), what became of each fill, and the markers to remember once saved."""

    events: dict[PositionKey, list[Any]]
    results: tuple[FillResult, ...]
    markers: tuple[Marker, ...]
    books: dict[str, tuple[str, ...]]
    """The books each new execution went to, by exec_id."""


def decide_account_fills(
    key: PositionKey,
    books: Books,
    fills: Sequence[Fill],
    allocation: AllocationPolicy,
    book_of: Callable[[str], str | None],
    recorded: Callable[[UUID], str | None],
) -> AccountRecording:
    """Record executions of the account ``key`` (in the exchange's order) in its books: one of
    an order the ledger knows (``book_of``) goes to that order's book, as if recorded there;
    anything else is allocated by ``allocation``, each share preceded by ``Allocated``. One the
    account's last correction reflected is absorbed wherever it lands. An exec_id already
    recorded for any book of the account with the same payload is a duplicate, with another
    payload an :class:`ExecutionConflict`."""
    out = BookEmitters(key, books, allocation)
    account = account_view(key, books, allocation.unassigned) if books else None
    offered: dict[str, str] = {}
    results: list[FillResult] = []
    markers: list[tuple[ExecutionSeen, Marker]] = []
    routed: dict[str, tuple[str, ...]] = {}
    owners: dict[str, str] = {}
    """The book of each order met in this batch (its order may end within it)."""
    account_prefix = str(key)
    for fill in fills:
        payload = fill.payload()
        if fill.exec_id in offered:
            if offered[fill.exec_id] != payload:
                raise ExecutionConflict(fill.exec_id, offered[fill.exec_id], payload)
            continue
        offered[fill.exec_id] = payload
        stream = marker_id(key.venue, key.account, fill.exec_id)
        known = recorded(stream)
        if known is not None:
            owner, _, known_payload = known.partition("|")
            if known_payload != payload or not owner.startswith(account_prefix):
                raise ExecutionConflict(fill.exec_id, known, marker_payload(key, fill))
            results.append(FillResult(fill.exec_id, True, None, ZERO))
            continue
        book = _owner(out, fill.order_id, owners, book_of) if fill.order_id else None
        if book is not None:
            owners[fill.order_id] = book
        rule, shares = (Rule.UNASSIGNED, {book: fill}) if book is not None else _route(out, fill)
        routed[fill.exec_id] = tuple(shares)
        net = sum(out.sizes().values(), ZERO)
        moved = _signed_qty(fill) if fill.kind.changes_size else ZERO
        applied: list[ExecutionEvent] = []
        for share_book, share in shares.items():
            emitter = out.of(share_book, fill.exec_time)
            if book is None:
                emitter.emit(
                    Allocated,
                    fill.exec_time,
                    cause=FUNDING if not fill.kind.changes_size else fill.kind.value,
                    rule=rule.value,
                    exec_id=fill.exec_id,
                    total=fill.fee if not fill.kind.changes_size else _signed_qty(fill),
                    share=share.fee if not fill.kind.changes_size else _signed_qty(share),
                    books=sorted(shares),
                    account_before=net,
                    account_after=net + moved,
                )
            count = len(emitter.events)
            emit_fill(emitter, share, account)
            applied.extend(e for e in emitter.events[count:] if isinstance(e, ExecutionEvent))
        first = out.emitters[next(iter(shares))].start.key
        owner_key = first if book is not None else key
        marker = Marker(stream, marker_payload(owner_key, fill))
        seen = ExecutionSeen(
            originator_id=stream,
            originator_version=1,
            timestamp=fill.exec_time,
            exec_id=fill.exec_id,
            stream_id=first.stream_id,
            payload=marker.payload,
        )
        markers.append((seen, marker))
        results.append(
            FillResult(
                fill.exec_id,
                False,
                type(applied[0]).__name__ if applied else None,
                sum((e.overfill for e in applied), ZERO),
            )
        )
    events = out.events()
    if markers:  # saved with the first book's events (every new execution wrote some)
        next(iter(events.values())).extend(seen for seen, _ in markers)
    return AccountRecording(
        events=events,
        results=tuple(results),
        markers=tuple(marker for _, marker in markers),
        books=routed,
    )


def _owner(
    out: BookEmitters,
    order_id: str,
    owners: Mapping[str, str],
    book_of: Callable[[str], str | None],
) -> str | None:
    """The book an order belongs to: pending in a book as this batch left it, met earlier in
    the batch, else what ``book_of`` knows (its marker)."""
    previews = {book: emitter.preview for book, emitter in out.emitters.items()}
    found = pending_book(previews, order_id)
    if found is None:
        found = owners.get(order_id)
    return found if found is not None else book_of(order_id)


def pending_book(books: Books, order_id: str) -> str | None:
    """The book in which ``order_id`` is pending, if any."""
    for book, state in books.items():
        if state.pending(order_id) is not None:
            return book
    return None


def _signed_qty(fill: Fill) -> Decimal:
    return fill.qty * fill.side.sign


def _route(out: BookEmitters, fill: Fill) -> tuple[Rule, dict[str, Fill]]:
    """A fill of no known order as each receiving book's execution, by book, and the rule
    that placed it."""
    sizes = out.sizes()
    unassigned = out.allocation.unassigned
    if not fill.kind.changes_size:
        split = split_funding(fill.fee, sizes)
        if not split:
            return Rule.UNASSIGNED, {unassigned: fill}
        return Rule.PRO_RATA, {
            b: attrs.evolve(fill, fee=fee, qty=abs(sizes[b])) for b, fee in sorted(split.items())
        }
    rule = out.allocation.rule(fill.kind.value)
    shares = allocate_change(_signed_qty(fill), sizes, rule, unassigned)
    if len(shares) == 1:
        return rule, {next(iter(shares)): fill}
    weights = {b: abs(s) for b, s in shares.items()}
    fees = (
        hamilton(fill.fee, weights, min(unit_of(fill.fee), MONEY_UNIT))
        if fill.fee
        else dict.fromkeys(weights, ZERO)
    )
    return rule, {
        b: attrs.evolve(
            fill,
            side=Side.BUY if shares[b] > 0 else Side.SELL,
            qty=weights[b],
            fee=fees[b],
            leaves_qty=None,
        )
        for b in sorted(shares)
    }
