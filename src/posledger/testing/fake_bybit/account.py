"""A scripted Bybit V5 account: the exchange's state (positions, orders, executions, listed
instruments), the calls a test scripts it with, and the rules Bybit holds them to (position
modes, hedge legs, average prices, what an execution closes)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from posledger.testing.fake_bybit.records import (
    CATEGORIES,
    FakeClosedPnl,
    FakeExecution,
    FakeInstrument,
    FakeOrder,
    FakePosition,
    average_of,
    coins_of,
    settle_coin_of,
)
from posledger.testing.fake_http import COIN_PLACES, Number, to_decimal, to_ms

Leg = tuple[str, str, int]
"""(category, symbol, positionIdx)."""


@dataclass(frozen=True)
class _Carried:
    """The opening fees and the funding a held leg carries until it closes (positive = paid,
    as Bybit writes ``execFee``): each close takes the share of its size."""

    open_fees: Decimal = Decimal(0)
    funding: Decimal = Decimal(0)

    def share(self, closed: Decimal, held: Decimal) -> _Carried:
        """What ``closed`` of ``held`` takes away: everything at the last close, else its
        share to 8 places (so a lifecycle's shares add up to exactly what it carried)."""
        if closed >= held:
            return self
        return _Carried(
            _portion(self.open_fees, closed, held), _portion(self.funding, closed, held)
        )

    def less(self, taken: _Carried) -> _Carried:
        return _Carried(self.open_fees - taken.open_fees, self.funding - taken.funding)


def _portion(amount: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    return (amount * part / whole).quantize(COIN_PLACES)


@dataclass
class _Book:
    """The exchange's state. Every access holds the account's lock."""

    positions: dict[tuple[str, str, int], FakePosition] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    executions: list[FakeExecution] = field(default_factory=list)
    hedged: set[tuple[str, str]] = field(default_factory=set)
    instruments: dict[tuple[str, str], FakeInstrument] = field(default_factory=dict)
    carried: dict[Leg, _Carried] = field(default_factory=dict)
    closed_pnl: list[FakeClosedPnl] = field(default_factory=list)


Listener = Callable[[str, FakePosition | FakeOrder | FakeExecution], None]
"""Told each change of the book as (topic, record): "position", "order" or "execution"."""


class BybitAccount:
    """The account a fake Bybit serves, as a test scripts it. It is one side of
    :class:`~posledger.testing.fake_bybit.FakeBybit`: the server's lock guards the book (so a reply
    reads it at one moment) and the server's clock stamps scripted events.
    """

    _lock: threading.RLock
    _clock: Callable[[], datetime]

    def __init__(self) -> None:
        self._book = _Book()
        self._seq = itertools.count(1000)
        self._ids = itertools.count(1)
        self._listeners: list[Listener] = []

    # scripting the exchange

    def set_hedge_mode(self, symbol: str, hedge: bool = True, *, category: str = "linear") -> None:
        """Switch a symbol between one-way (positionIdx 0) and hedge mode (legs 1 and 2)."""
        with self._lock:
            held = [p for p in self._stored_legs(category, symbol) if p.size]
            if held:
                raise ValueError(f"{symbol}: Bybit switches position mode only while flat")
            if hedge:
                self._book.hedged.add((category, symbol))
            else:
                self._book.hedged.discard((category, symbol))

    def set_position(
        self,
        symbol: str,
        side: str,
        size: Number,
        avg_price: Number = 0,
        *,
        idx: int = 0,
        category: str = "linear",
        seq: int | None = None,
        at: datetime | None = None,
    ) -> FakePosition:
        """Make the exchange hold this leg, whatever it held before (``size`` 0: flat)."""
        amount = to_decimal(size)
        if amount < 0 or (amount > 0) != (side in ("Buy", "Sell")):
            raise ValueError(f"{symbol}: size {size} with side {side!r}")
        with self._lock:
            self._check_leg(category, symbol, idx, side if amount else "")
            position = FakePosition(
                category=category,
                symbol=symbol,
                idx=idx,
                side=side if amount else "",
                size=amount,
                avg_price=to_decimal(avg_price) if amount else Decimal(0),
                seq=next(self._seq) if seq is None else seq,
                updated_ms=to_ms(at or self._clock()),
                settle_coin=settle_coin_of(category, symbol),
            )
            self._book.positions[(category, symbol, idx)] = position
            self._book.carried.pop((category, symbol, idx), None)
            self._notify("position", position)
            return position

    def position(self, symbol: str, idx: int = 0, *, category: str = "linear") -> FakePosition:
        """The leg as the exchange holds it now (a flat leg if it was never set)."""
        with self._lock:
            return self._leg(category, symbol, idx)

    def add_open_order(
        self,
        symbol: str,
        side: str,
        qty: Number,
        price: Number,
        *,
        idx: int = 0,
        order_id: str | None = None,
        category: str = "linear",
        order_type: str = "Limit",
        reduce_only: bool = False,
        at: datetime | None = None,
    ) -> str:
        """A resting order (status New); returns its id."""
        with self._lock:
            self._check_leg(category, symbol, idx, "")
            created = to_ms(at or self._clock())
            order = FakeOrder(
                category=category,
                symbol=symbol,
                order_id=order_id or f"order-{next(self._ids)}",
                side=side,
                qty=to_decimal(qty),
                price=to_decimal(price),
                idx=idx,
                order_type=order_type,
                reduce_only=reduce_only,
                status="New",
                cum_exec_qty=Decimal(0),
                created_ms=created,
                updated_ms=created,
                settle_coin=settle_coin_of(category, symbol),
            )
            self._book.orders[order.order_id] = order
            self._notify("order", order)
            return order.order_id

    def cancel_order(self, order_id: str, *, at: datetime | None = None) -> None:
        """End a resting order: Cancelled, or PartiallyFilledCanceled if it had fills."""
        with self._lock:
            order = self._open_order(order_id)
            status = "PartiallyFilledCanceled" if order.cum_exec_qty else "Cancelled"
            updated = to_ms(at or self._clock())
            self._book.orders[order_id] = replace(order, status=status, updated_ms=updated)
            self._notify("order", self._book.orders[order_id])

    def order(self, order_id: str) -> FakeOrder:
        with self._lock:
            return self._book.orders[order_id]

    def partial_fill(
        self,
        order_id: str,
        qty: Number,
        *,
        price: Number | None = None,
        fee: Number = 0,
        exec_id: str | None = None,
        is_maker: bool = True,
        at: datetime | None = None,
    ) -> FakeExecution:
        """Execute part (or the rest) of an open order: the leg's size moves AND the execution
        is recorded, so a test can make the exchange move while the client misses the fill."""
        amount = to_decimal(qty)
        with self._lock:
            order = self._open_order(order_id)
            if not 0 < amount <= order.leaves_qty:
                raise ValueError(f"{order_id}: cannot fill {qty}, {order.leaves_qty} left")
            when = to_ms(at or self._clock())
            fill_price = order.price if price is None else to_decimal(price)
            seq = next(self._seq)
            before = self._leg(order.category, order.symbol, order.idx)
            closed = self._trade(order, amount, fill_price, seq, when)
            self._book_money(order, before, amount, closed, fill_price, to_decimal(fee), when)
            cum = order.cum_exec_qty + amount
            status = "Filled" if cum == order.qty else "PartiallyFilled"
            order = replace(order, cum_exec_qty=cum, status=status, updated_ms=when)
            self._book.orders[order_id] = order
            execution = FakeExecution(
                category=order.category,
                symbol=order.symbol,
                exec_id=exec_id or f"exec-{next(self._ids)}",
                order_id=order_id,
                side=order.side,
                exec_qty=amount,
                exec_price=fill_price,
                exec_fee=to_decimal(fee),
                exec_ms=when,
                exec_type="Trade",
                seq=seq,
                leaves_qty=order.qty - cum,
                closed_size=closed,
                order_type=order.order_type,
                is_maker=is_maker,
            )
            self._book.executions.append(execution)
            self._notify("order", order)
            self._notify("execution", execution)
            self._notify("position", self._leg(order.category, order.symbol, order.idx))
            return execution

    def add_execution(
        self,
        symbol: str,
        side: str,
        qty: Number,
        price: Number,
        *,
        exec_type: str = "Trade",
        idx: int = 0,
        order_id: str | None = None,
        exec_id: str | None = None,
        fee: Number = 0,
        leaves_qty: Number = 0,
        closed_size: Number = 0,
        order_type: str = "Market",
        is_maker: bool = False,
        seq: int | None = None,
        category: str = "linear",
        at: datetime | None = None,
    ) -> FakeExecution:
        """Record an execution only (positions are untouched), of any ``exec_type``: the ones
        posledger knows (``Trade``, ``BlockTrade``, ``MovePosition`` ...) or any other string.
        Its order, if new, is put in the order history with ``idx`` as its positionIdx, so
        hedge legs can be looked up; a funding execution has no real order."""
        with self._lock:
            when = to_ms(at or self._clock())
            oid = f"order-{next(self._ids)}" if order_id is None else order_id
            if oid and oid not in self._book.orders and exec_type != "Funding":
                self._book.orders[oid] = FakeOrder(
                    category=category,
                    symbol=symbol,
                    order_id=oid,
                    side=side,
                    qty=to_decimal(qty) + to_decimal(leaves_qty),
                    price=to_decimal(price),
                    idx=idx,
                    order_type=order_type,
                    reduce_only=False,
                    status="Filled",
                    cum_exec_qty=to_decimal(qty),
                    created_ms=when,
                    updated_ms=when,
                    settle_coin=settle_coin_of(category, symbol),
                )
            execution = FakeExecution(
                category=category,
                symbol=symbol,
                exec_id=exec_id or f"exec-{next(self._ids)}",
                order_id=oid,
                side=side,
                exec_qty=to_decimal(qty),
                exec_price=to_decimal(price),
                exec_fee=to_decimal(fee),
                exec_ms=when,
                exec_type=exec_type,
                seq=next(self._seq) if seq is None else seq,
                leaves_qty=to_decimal(leaves_qty),
                closed_size=to_decimal(closed_size),
                order_type=order_type,
                is_maker=is_maker,
            )
            self._book.executions.append(execution)
            self._notify("execution", execution)
            return execution

    def settle_funding(
        self,
        symbol: str,
        *,
        fee: Number,
        price: Number,
        idx: int = 0,
        exec_id: str | None = None,
        category: str = "linear",
        at: datetime | None = None,
    ) -> FakeExecution:
        """A funding execution on a held leg: ``execQty`` is the whole position size, the side
        is the position's, the size does not change, and the ``orderId`` is synthetic, shaped
        like Bybit's ("1682553600-BTCUSDT-592334-Sell") and in no order list."""
        with self._lock:
            leg = self._leg(category, symbol, idx)
            if not leg.size:
                raise ValueError(f"{symbol}#{idx}: funding needs a held position")
            when = at or self._clock()
            carried = self._book.carried.get((category, symbol, idx), _Carried())
            paid = _Carried(carried.open_fees, carried.funding + to_decimal(fee))
            self._book.carried[(category, symbol, idx)] = paid
            return self.add_execution(
                symbol,
                leg.side,
                leg.size,
                price,
                exec_type="Funding",
                idx=idx,
                order_id=f"{to_ms(when) // 1000}-{symbol}-592334-{leg.side}",
                exec_id=exec_id,
                fee=fee,
                order_type="UNKNOWN",
                category=category,
                at=when,
            )

    def add_instrument(
        self,
        symbol: str,
        *,
        category: str = "linear",
        base: str | None = None,
        quote: str | None = None,
        settle_coin: str | None = None,
        status: str = "Trading",
        qty_step: Number | None = None,
    ) -> FakeInstrument:
        """List a symbol in instruments-info. Every symbol a position, order or execution names
        is listed anyway (coins read from its name); this adds others, spot twins, or a symbol
        whose coins its name does not tell (``base``/``quote``/``settle_coin``). ``qty_step``
        defaults to 0.001, or 1 USD contract on an inverse symbol."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        named_base, named_quote = (base, quote) if base and quote else coins_of(category, symbol)
        settle = settle_coin or ("" if category == "spot" else settle_coin_of(category, symbol))
        instrument = FakeInstrument(
            category=category,
            symbol=symbol,
            base=named_base,
            quote=named_quote,
            settle_coin=settle,
            status=status,
            qty_step=None if qty_step is None else to_decimal(qty_step),
        )
        with self._lock:
            self._book.instruments[(category, symbol)] = instrument
        return instrument

    # observation

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(topic, record)`` after each change of the book, under the account's lock
        (so it must not block): a partial fill tells its order, execution and position, in that
        order. Returns the function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, topic: str, record: FakePosition | FakeOrder | FakeExecution) -> None:
        for listener in list(self._listeners):
            listener(topic, record)

    # the exchange's rules

    def _check_leg(self, category: str, symbol: str, idx: int, side: str) -> None:
        """Bybit's position-mode rules; a hedge leg on a flat one-way symbol switches it."""
        if idx not in (0, 1, 2):
            raise ValueError(f"positionIdx must be 0, 1 or 2, not {idx}")
        if side and idx and side != ("Buy" if idx == 1 else "Sell"):
            raise ValueError(f"{symbol}: hedge leg {idx} cannot hold side {side}")
        hedged = (category, symbol) in self._book.hedged
        if idx == 0 and hedged:
            raise ValueError(f"{symbol} is in hedge mode: use idx 1 (long) or 2 (short)")
        if idx and not hedged:
            if any(p.size for p in self._stored_legs(category, symbol)):
                raise ValueError(f"{symbol} holds a one-way position; it cannot take hedge legs")
            self._book.hedged.add((category, symbol))

    def _stored_legs(self, category: str, symbol: str) -> list[FakePosition]:
        return [
            p for p in self._book.positions.values() if (p.category, p.symbol) == (category, symbol)
        ]

    def _leg(self, category: str, symbol: str, idx: int) -> FakePosition:
        """The stored leg, or the flat row Bybit shows for a never-traded one (seq -1)."""
        return self._book.positions.get((category, symbol, idx)) or FakePosition(
            category=category,
            symbol=symbol,
            idx=idx,
            side="",
            size=Decimal(0),
            avg_price=Decimal(0),
            seq=-1,
            updated_ms=0,
            settle_coin=settle_coin_of(category, symbol),
        )

    def closed_pnl(self) -> list[FakeClosedPnl]:
        """Every closed-pnl record the book has booked, oldest first."""
        with self._lock:
            return list(self._book.closed_pnl)

    def _book_money(
        self,
        order: FakeOrder,
        before: FakePosition,
        qty: Decimal,
        closed: Decimal,
        price: Decimal,
        fee: Decimal,
        ms: int,
    ) -> None:
        """Book what one execution of ``qty`` did to the leg's money: the part that closed takes
        its share of the carried opening fees and funding into a closed-pnl record, with the
        closing part of ``fee``; the part that opened (an add, or a flip's rest) carries the
        remaining fee until it closes."""
        leg = (order.category, order.symbol, order.idx)
        carried = self._book.carried.get(leg, _Carried())
        close_fee = fee if closed == qty else _portion(fee, closed, qty)
        if closed:
            taken = carried.share(closed, before.size)
            carried = carried.less(taken)
            self._book.closed_pnl.append(
                FakeClosedPnl(
                    category=order.category,
                    symbol=order.symbol,
                    order_id=order.order_id,
                    side=order.side,
                    order_qty=order.qty,
                    order_price=order.price,
                    order_type=order.order_type,
                    exec_type="Trade",
                    closed_size=closed,
                    avg_entry_price=before.avg_price,
                    avg_exit_price=price,
                    open_fee=taken.open_fees,
                    close_fee=close_fee,
                    funding=taken.funding,
                    created_ms=ms,
                )
            )
        opened = _Carried(carried.open_fees + fee - close_fee, carried.funding)
        self._book.carried[leg] = opened

    def _open_order(self, order_id: str) -> FakeOrder:
        order = self._book.orders.get(order_id)
        if order is None or not order.is_open:
            raise ValueError(f"{order_id} is not an open order")
        return order

    def _trade(self, order: FakeOrder, qty: Decimal, price: Decimal, seq: int, ms: int) -> Decimal:
        """Move the order's leg by one execution; returns the size it closed."""
        leg = self._leg(order.category, order.symbol, order.idx)
        held = leg.size if leg.side == "Buy" else -leg.size
        delta = qty if order.side == "Buy" else -qty
        after = held + delta
        if order.idx and (after < 0 if order.idx == 1 else after > 0):
            raise ValueError(f"{order.order_id}: would push hedge leg {order.idx} past zero")
        closed = min(abs(held), qty) if held * delta < 0 else Decimal(0)
        if held * delta >= 0:
            avg = average_of(order.category, abs(held), leg.avg_price, qty, price)
        elif held * after > 0:
            avg = leg.avg_price
        else:
            avg = price
        side = "" if after == 0 else ("Buy" if after > 0 else "Sell")
        self._book.positions[(leg.category, leg.symbol, leg.idx)] = replace(
            leg,
            side=side,
            size=abs(after),
            avg_price=avg if after else Decimal(0),
            seq=seq,
            updated_ms=ms,
        )
        return closed
