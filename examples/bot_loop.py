"""A trading bot's loop wired to posledger, against a tiny fake exchange (no network, ~1 s).

Every tick the bot
  1. records the executions the exchange pushed since the last tick (``record_fill``);
  2. reads the exchange: a complete ``Snapshot`` that the ledger reconciles, or an
     ``ExchangeUnavailable`` that it must never mistake for "no position";
  3. asks ``ledger.open_positions()`` before acting on a signal, and records each order
     (``request_open`` / ``request_exit``) before sending it.

The fake exchange loses one take-profit execution on its way to the bot, as in the incident
posledger was written for: the ledger keeps ETHUSDT open (and the bot skips ETHUSDT signals) until
two complete snapshots show it flat; then it closes it as a phantom and the bot trades again.

Run it:  python examples/bot_loop.py
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from posledger import (
    ExchangePosition,
    ExchangeUnavailable,
    Fill,
    Ledger,
    Outcome,
    PositionKey,
    Side,
    Snapshot,
)

VENUE, ACCOUNT, CATEGORY = "bybit", "example", "linear"
START = datetime(2025, 11, 12, 12, 0, tzinfo=UTC)
TICK = timedelta(seconds=30)


def key(symbol: str) -> PositionKey:
    return PositionKey(venue=VENUE, account=ACCOUNT, category=CATEGORY, symbol=symbol)


class FakeExchange:
    """Market orders fill at once; take-profits rest until the price reaches them. It can lose
    the next execution on its way to the bot, and fail a read at chosen times."""

    def __init__(self) -> None:
        self.positions: dict[str, tuple[Side, Decimal]] = {}
        self.take_profits: dict[str, tuple[str, Side, Decimal, Decimal]] = {}
        self.outbox: list[tuple[str, Fill]] = []
        self.exec_ids = itertools.count(1)
        self.lose_next_execution = False
        self.failing_reads: set[datetime] = set()

    def market(
        self, symbol: str, order_id: str, side: Side, qty: Decimal, price: Decimal, now: datetime
    ) -> None:
        self._execute(symbol, order_id, side, qty, price, now)

    def take_profit(
        self, symbol: str, order_id: str, side: Side, qty: Decimal, price: Decimal
    ) -> None:
        self.take_profits[order_id] = (symbol, side, qty, price)

    def move_price(self, symbol: str, price: Decimal, now: datetime) -> list[str]:
        """Trigger the take-profits of ``symbol`` that ``price`` reached; returns their ids."""
        hit = [
            order_id
            for order_id, (sym, side, _, limit) in self.take_profits.items()
            if sym == symbol and (price >= limit if side is Side.SELL else price <= limit)
        ]
        for order_id in hit:
            sym, side, qty, limit = self.take_profits.pop(order_id)
            self._execute(sym, order_id, side, qty, limit, now)
        return hit

    def executions(self) -> list[tuple[str, Fill]]:
        """What the exchange pushed since the last call (think: the private WebSocket)."""
        pushed, self.outbox = self.outbox, []
        return pushed

    def snapshot(self, now: datetime) -> Snapshot:
        """A complete read of every position and working order, or an exception: never None."""
        if now in self.failing_reads:
            raise ExchangeUnavailable("GET /v5/position/list: 503 Service Unavailable")
        rows = [
            ExchangePosition(symbol=s, idx=0, side=side, size=size)
            for s, (side, size) in self.positions.items()
        ]
        return Snapshot(
            venue=VENUE,
            account=ACCOUNT,
            category=CATEGORY,
            taken_at=now,
            positions=rows,
            open_order_ids=set(self.take_profits),
        )

    def _execute(
        self, symbol: str, order_id: str, side: Side, qty: Decimal, price: Decimal, now: datetime
    ) -> None:
        held_side, held = self.positions.get(symbol, (side, Decimal(0)))
        size = held + qty if side is held_side else held - qty
        if size < 0:
            raise ValueError("this fake exchange does not flip positions")
        if size:
            self.positions[symbol] = (held_side, size)
        else:
            self.positions.pop(symbol, None)
        fill = Fill(
            exec_id=f"x{next(self.exec_ids)}",
            order_id=order_id,
            side=side,
            qty=qty,
            price=price,
            exec_time=now,
            fee=qty * price * Decimal("0.00055"),
        )
        if self.lose_next_execution:
            self.lose_next_execution = False
        else:
            self.outbox.append((symbol, fill))


class Clock:
    """Simulated time: the ledger reads it (``Ledger.open(clock=...)``), the loop advances it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class Bot:
    def __init__(self, ledger: Ledger, exchange: FakeExchange, clock: Clock) -> None:
        self.ledger, self.exchange, self.clock = ledger, exchange, clock
        self.order_ids = itertools.count(1)

    def say(self, text: str) -> None:
        print(f"{self.clock.now:%H:%M:%S}  {text}")

    def sync(self) -> None:
        """Record pushed executions, then reconcile a complete snapshot (if the read works)."""
        for symbol, fill in self.exchange.executions():
            result = self.ledger.record_fill(key(symbol), fill)
            self.say(f"{symbol}: recorded {result.event} {fill.side} {fill.qty} @ {fill.price}")
        try:
            snapshot = self.exchange.snapshot(self.clock.now)
        except ExchangeUnavailable as error:
            self.say(f"read failed ({error}): not a snapshot, nothing reconciled")
            return
        for outcome in self.ledger.reconcile(snapshot).outcomes:
            if outcome.outcome is not Outcome.AGREES:
                written = ", ".join(outcome.events) or "nothing"
                self.say(
                    f"{outcome.key.symbol}: reconcile says {outcome.outcome} "
                    f"({outcome.correction}, {outcome.detail or 'confirmed'}); wrote {written}"
                )

    def on_signal(self, symbol: str, side: Side, qty: Decimal, price: Decimal) -> None:
        """Trade only if the ledger holds nothing on ``symbol``; record each order first."""
        held = [p.key.symbol for p in self.ledger.open_positions()]
        if symbol in held:
            self.say(f"{symbol}: {side} signal skipped, already in position (open: {held})")
            return
        order_id = f"{symbol.lower()}-{next(self.order_ids)}"
        self.ledger.request_open(key(symbol), order_id=order_id, side=side, qty=qty)
        self.exchange.market(symbol, order_id, side, qty, price, self.clock.now)
        self.sync()
        target = price * (Decimal("1.01") if side is Side.BUY else Decimal("0.99"))
        self.ledger.request_exit(key(symbol), order_id=f"{order_id}-tp", qty=qty, price=target)
        self.exchange.take_profit(symbol, f"{order_id}-tp", side.opposite, qty, target)
        self.say(f"{symbol}: opened {side} {qty} @ {price} ({order_id}), take-profit @ {target}")

    def on_price(self, symbol: str, price: Decimal, *, lose_execution: bool = False) -> None:
        self.exchange.lose_next_execution = lose_execution
        hit = self.exchange.move_price(symbol, price, self.clock.now)
        lost = "; its execution never reaches the bot" if lose_execution else ""
        self.say(f"{symbol}: price {price} triggers {', '.join(hit)} on the exchange{lost}")


TIMELINE: list[tuple[str, ...]] = [
    ("signal", "ETHUSDT", "buy", "0.5", "3400"),
    ("signal", "SOLUSDT", "buy", "10", "150"),
    ("signal", "ETHUSDT", "buy", "0.5", "3400"),  # skipped: already in position
    ("price, execution lost", "ETHUSDT", "3468"),  # and this tick's read fails
    ("signal", "ETHUSDT", "buy", "0.5", "3400"),  # skipped: the ledger still holds ETHUSDT
    ("price", "SOLUSDT", "153"),  # SOLUSDT's take-profit fill is delivered
    ("idle",),
    ("signal", "ETHUSDT", "buy", "0.5", "3400"),  # the phantom is gone: trades again
]
"""One step per 30 s tick; after each step the bot syncs with the exchange."""


def main() -> None:
    clock = Clock(START)
    exchange = FakeExchange()
    exchange.failing_reads.add(START + 3 * TICK)
    with Ledger.open("memory://", clock=clock) as ledger:
        bot = Bot(ledger, exchange, clock)
        for step in TIMELINE:
            match step:
                case ("signal", symbol, side, qty, price):
                    bot.on_signal(symbol, Side.parse(side), Decimal(qty), Decimal(price))
                case ("price", symbol, price):
                    bot.on_price(symbol, Decimal(price))
                case ("price, execution lost", symbol, price):
                    bot.on_price(symbol, Decimal(price), lose_execution=True)
            bot.sync()
            clock.now += TICK
        ledger_view = [f"{p.key.symbol} {p.side} {p.size}" for p in ledger.open_positions()]
        exchange_view = [f"{s} {side} {size}" for s, (side, size) in exchange.positions.items()]
        bot.say(f"done: ledger holds {ledger_view}, exchange holds {exchange_view}")
        if ledger_view != exchange_view:
            raise SystemExit("the ledger and the exchange disagree")


if __name__ == "__main__":
    main()
