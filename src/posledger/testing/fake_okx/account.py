"""A scripted OKX V5 account: instruments, positions (net or long/short legs, cross or
isolated), orders and fills, the calls a test scripts it with, and how a fill moves its leg."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from posledger.testing.fake_http import (
    COIN_PLACES,
    EPOCH,
    Number,
    coin_value,
    inverse_average,
    to_decimal,
    to_ms,
)
from posledger.testing.fake_okx.records import (
    FakeFill,
    FakeInstrument,
    FakeOrder,
    FakePosition,
    FakePositionHistory,
)

Leg = tuple[str, str]
"""(instId, posSide)."""


@dataclass
class _Book:
    instruments: dict[str, FakeInstrument] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], FakePosition] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    fills: list[FakeFill] = field(default_factory=list)
    open_histories: dict[Leg, FakePositionHistory] = field(default_factory=dict)
    closed_histories: list[FakePositionHistory] = field(default_factory=list)


class OkxAccount:
    """The account a fake OKX serves, as a test scripts it. It is one side of
    :class:`~posledger.testing.fake_okx.FakeOkx`: the server's lock guards the book (so a reply
    reads it at one moment) and the server's clock stamps scripted events.
    """

    _lock: threading.RLock
    _clock: Callable[[], datetime]

    def __init__(self) -> None:
        self._book = _Book()
        self._ids = itertools.count(600_000_000_000_000_001)

    # scripting the account

    def add_instrument(
        self,
        inst_id: str,
        *,
        ct_val: Number = "1",
        ct_mult: Number = "1",
        settle: str | None = None,
        lot_sz: Number = "0.01",
    ) -> FakeInstrument:
        """List an instrument (``BTC-USDT-SWAP``, ``BTC-USD-251226``); its type and settle
        currency follow from its name unless given."""
        parts = inst_id.split("-")
        inst_type = "SWAP" if parts[-1] == "SWAP" else "FUTURES" if len(parts) == 3 else "SPOT"
        coin = parts[0] if parts[1] == "USD" else parts[1]
        listed = FakeInstrument(
            inst_id=inst_id,
            inst_type=inst_type,
            ct_val=to_decimal(ct_val),
            ct_mult=to_decimal(ct_mult),
            settle=settle or coin,
            lot_sz=to_decimal(lot_sz),
        )
        with self._lock:
            self._book.instruments[inst_id] = listed
        return listed

    def set_position(
        self,
        inst_id: str,
        pos: Number,
        avg_px: Number = 0,
        *,
        pos_side: str = "net",
        mgn_mode: str = "cross",
        at: datetime | None = None,
    ) -> FakePosition:
        """Make the account hold ``pos`` contracts (signed in net mode). ``pos`` 0 leaves a
        listed zero row, as OKX does for an isolated position after a margin transfer. The
        leg's money record starts afresh (nothing it carried is booked)."""
        with self._lock:
            self._book.open_histories.pop((inst_id, pos_side), None)
            return self._place(inst_id, pos, avg_px, pos_side=pos_side, mgn_mode=mgn_mode, at=at)

    def _place(
        self,
        inst_id: str,
        pos: Number,
        avg_px: Number,
        *,
        pos_side: str,
        mgn_mode: str,
        at: datetime | None,
    ) -> FakePosition:
        """Store a leg's row (its ``posId`` and ``cTime`` kept while it is held)."""
        contracts = to_decimal(pos)
        if pos_side != "net" and contracts < 0:
            raise ValueError(f"{inst_id}: a {pos_side} leg holds a positive pos")
        with self._lock:
            instrument = self._instrument(inst_id)
            when = to_ms(at or self._clock())
            held = self._book.positions.get((inst_id, pos_side, mgn_mode))
            position = FakePosition(
                inst_id=inst_id,
                inst_type=instrument.inst_type,
                pos_side=pos_side,
                mgn_mode=mgn_mode,
                pos=contracts,
                avg_px=to_decimal(avg_px),
                pos_id=held.pos_id if held is not None else str(next(self._ids)),
                c_ms=held.c_ms if held is not None else when,
                u_ms=when,
                ccy=instrument.settle,
            )
            self._book.positions[(inst_id, pos_side, mgn_mode)] = position
            return position

    def add_open_order(
        self,
        inst_id: str,
        side: str,
        sz: Number,
        px: Number,
        *,
        pos_side: str = "net",
        reduce_only: bool = False,
        at: datetime | None = None,
    ) -> str:
        """A resting order of ``sz`` contracts; returns its ``ordId``."""
        with self._lock:
            instrument = self._instrument(inst_id)
            when = to_ms(at or self._clock())
            order = FakeOrder(
                inst_id=inst_id,
                inst_type=instrument.inst_type,
                ord_id=str(next(self._ids)),
                side=side,
                pos_side=pos_side,
                sz=to_decimal(sz),
                px=to_decimal(px),
                reduce_only=reduce_only,
                state="live",
                acc_fill_sz=Decimal(0),
                c_ms=when,
                u_ms=when,
            )
            self._book.orders[order.ord_id] = order
            return order.ord_id

    def partial_fill(
        self,
        ord_id: str,
        sz: Number,
        *,
        fee: Number = 0,
        trade_id: str | None = None,
        at: datetime | None = None,
    ) -> FakeFill:
        """Fill ``sz`` contracts of an open order: the position moves AND the fill is recorded
        (``fee`` as OKX writes it: negative when paid)."""
        amount = to_decimal(sz)
        with self._lock:
            order = self._book.orders[ord_id]
            if not order.is_open or not 0 < amount <= order.sz - order.acc_fill_sz:
                raise ValueError(f"{ord_id}: cannot fill {sz}")
            when = to_ms(at or self._clock())
            held = self._held(order.inst_id, order.pos_side)
            self._move(order.inst_id, order.pos_side, order.side, amount, order.px, when)
            fill = (order.side, amount, order.px, to_decimal(fee), when)
            self._book_history(order.inst_id, order.pos_side, held, fill)
            filled = order.acc_fill_sz + amount
            state = "filled" if filled == order.sz else "partially_filled"
            self._book.orders[ord_id] = replace(order, acc_fill_sz=filled, state=state, u_ms=when)
            return self._record_fill(
                order.inst_id, order.side, order.pos_side, amount, order.px, fee, when,
                ord_id=ord_id, trade_id=trade_id, sub_type="1" if order.side == "buy" else "2",
            )  # fmt: skip

    def add_fill(
        self,
        inst_id: str,
        side: str,
        sz: Number,
        px: Number,
        *,
        pos_side: str = "net",
        fee: Number = 0,
        sub_type: str | None = None,
        ord_id: str | None = None,
        trade_id: str | None = None,
        at: datetime | None = None,
    ) -> FakeFill:
        """Record a fill without moving any position (history a test scripts directly), of any
        ``sub_type`` (default: a plain buy or sell); ``ord_id`` "" is a fill without an order,
        as OKX reports block trades (None: a new order id)."""
        with self._lock:
            self._instrument(inst_id)
            order = str(next(self._ids)) if ord_id is None else ord_id
            return self._record_fill(
                inst_id, side, pos_side, to_decimal(sz), to_decimal(px), fee,
                to_ms(at or self._clock()), ord_id=order,
                trade_id=trade_id, sub_type=sub_type or ("1" if side == "buy" else "2"),
            )  # fmt: skip

    def settle_funding(
        self, inst_id: str, fee: Number, *, pos_side: str = "net", at: datetime | None = None
    ) -> None:
        """Funding on a held leg (``fee`` as OKX writes it: negative when paid), booked on the
        position's money record (its ``fundingFee``); no size moves and no fill is listed (OKX
        books funding as a bill). ``at`` is accepted for symmetry and leaves ``uTime`` alone."""
        with self._lock:
            if not self._held(inst_id, pos_side):
                raise ValueError(f"{inst_id} {pos_side}: funding needs a held position")
            leg = (inst_id, pos_side)
            history = self._book.open_histories[leg]
            paid = history.funding_fee + to_decimal(fee)
            self._book.open_histories[leg] = replace(history, funding_fee=paid)

    def position_histories(self) -> list[FakePositionHistory]:
        """Every position's money record that positions-history lists: the closed positions,
        and the held ones that have closed in part."""
        with self._lock:
            held = [h for h in self._book.open_histories.values() if h.close_total_pos]
            return [*self._book.closed_histories, *held]

    # the book

    def _held(self, inst_id: str, pos_side: str) -> Decimal:
        """The leg's contracts (signed in net mode) before a fill; a held leg's money record
        is begun if it has none yet (a position a test set directly)."""
        row = self._book.positions.get((inst_id, pos_side, "cross"))
        if row is None or not row.pos:
            return Decimal(0)
        if (inst_id, pos_side) not in self._book.open_histories:
            self._book.open_histories[(inst_id, pos_side)] = _history_of(row, row.c_ms)
        return row.pos

    def _book_history(
        self,
        inst_id: str,
        pos_side: str,
        held: Decimal,
        fill: tuple[str, Decimal, Decimal, Decimal, int],
    ) -> None:
        """Book one fill on the leg's money record: the part that closes adds its PnL, its share
        of ``fee`` and its contracts (the record is done when the leg is flat); the part that
        opens (an add, or a flip's rest) adds the remaining fee to the held position's record."""
        side, sz, px, fee, ms = fill
        delta = sz if side == "buy" else -sz
        if pos_side == "short":
            delta = -delta
        closed = min(abs(held), sz) if held * delta < 0 else Decimal(0)
        close_fee = fee if closed == sz else (fee * closed / sz).quantize(COIN_PLACES)
        if closed:
            self._close_history((inst_id, pos_side), abs(held) - closed, closed, px, close_fee, ms)
        if closed < sz:
            row = self._book.positions[(inst_id, pos_side, "cross")]
            history = self._book.open_histories.get((inst_id, pos_side)) or _history_of(row, ms)
            self._book.open_histories[(inst_id, pos_side)] = replace(
                history,
                open_avg_px=row.avg_px,
                open_max_pos=max(history.open_max_pos, abs(row.pos)),
                fee=history.fee + fee - close_fee,
            )

    def _close_history(
        self, leg: Leg, left: Decimal, closed: Decimal, px: Decimal, fee: Decimal, ms: int
    ) -> None:
        history = self._book.open_histories.pop(leg)
        listed = self._book.instruments[leg[0]]
        size = closed * listed.ct_val
        if listed.inverse:
            gained = coin_value(size, history.open_avg_px) - coin_value(size, px)
        else:
            gained = size * (px - history.open_avg_px)
        history = replace(
            history,
            close_total_pos=history.close_total_pos + closed,
            close_avg_px=_average(
                listed, history.close_total_pos, history.close_avg_px, closed, px
            ),
            pnl=history.pnl + (gained if history.direction == "long" else -gained),
            fee=history.fee + fee,
            u_ms=ms,
            type="1" if left else "2",
        )
        if left:
            self._book.open_histories[leg] = history
        else:
            self._book.closed_histories.append(history)

    def _instrument(self, inst_id: str) -> FakeInstrument:
        listed = self._book.instruments.get(inst_id)
        return listed if listed is not None else self.add_instrument(inst_id)

    def _record_fill(
        self,
        inst_id: str,
        side: str,
        pos_side: str,
        sz: Decimal,
        px: Decimal,
        fee: Number,
        ts: int,
        *,
        ord_id: str,
        trade_id: str | None,
        sub_type: str,
    ) -> FakeFill:
        bill_id = str(next(self._ids))
        listed = self._book.instruments[inst_id]
        recorded = FakeFill(
            inst_id=inst_id,
            inst_type=listed.inst_type,
            trade_id=trade_id or f"t{bill_id[-6:]}",
            ord_id=ord_id,
            bill_id=bill_id,
            side=side,
            pos_side=pos_side,
            fill_sz=sz,
            fill_px=px,
            fee=to_decimal(fee),
            ts=ts,
            sub_type=sub_type,
            fee_ccy=listed.settle,
        )
        self._book.fills.append(recorded)
        return recorded

    def _move(
        self, inst_id: str, pos_side: str, side: str, sz: Decimal, px: Decimal, ms: int
    ) -> None:
        """A fill's effect on its leg (the cross-margin row), which disappears at zero."""
        key = (inst_id, pos_side, "cross")
        held = self._book.positions.get(key)
        pos = held.pos if held is not None else Decimal(0)
        if pos_side == "net":
            after = pos + (sz if side == "buy" else -sz)
        else:
            adds = (side == "buy") == (pos_side == "long")
            after = pos + sz if adds else pos - sz
            if after < 0:
                raise ValueError(f"{inst_id} {pos_side}: fill would push the leg past zero")
        if after == 0:
            self._book.positions.pop(key, None)
            return
        if held is None or pos == 0 or (after > 0) != (pos > 0):
            avg = px
        elif abs(after) > abs(pos):
            avg = _average(self._book.instruments[inst_id], abs(pos), held.avg_px, sz, px)
        else:
            avg = held.avg_px
        moment = EPOCH + timedelta(milliseconds=ms)
        self._place(inst_id, after, avg, pos_side=pos_side, mgn_mode="cross", at=moment)


def _average(
    listed: FakeInstrument, held: Decimal, avg: Decimal, sz: Decimal, px: Decimal
) -> Decimal:
    """The ``avgPx`` of ``held`` contracts at ``avg`` plus ``sz`` at ``px``: contract-weighted,
    harmonic on a coin-margined instrument."""
    if listed.inverse:
        return inverse_average(held, avg, sz, px)
    return (held * avg + sz * px) / (held + sz)


def _history_of(row: FakePosition, c_ms: int) -> FakePositionHistory:
    """A money record begun for the position ``row`` holds, from ``c_ms``."""
    long = row.pos_side == "long" or (row.pos_side == "net" and row.pos > 0)
    return FakePositionHistory(
        inst_id=row.inst_id,
        inst_type=row.inst_type,
        pos_side=row.pos_side,
        pos_id=row.pos_id,
        c_ms=c_ms,
        u_ms=c_ms,
        ccy=row.ccy,
        direction="long" if long else "short",
        open_avg_px=row.avg_px,
        open_max_pos=abs(row.pos),
    )
