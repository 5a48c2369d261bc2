"""An asyncio trading bot on ccxt.async_support with posledger: the bot records the fills it is
told about while an AsyncSynchronizer runs beside it, and nothing is lost or counted twice.

Offline (``--offline``), everything runs against posledger's fake Bybit V5 server on 127.0.0.1
through real ccxt: the bot opens and trims positions, the exchange pushes each execution to the
bot's fill task, and one execution in four is lost on the way (as a dropped WebSocket message
would be). The synchronizer, reading positions and execution history through ccxt, recovers the
lost ones as real fills; the fills the bot did hear about are deduplicated by exec_id.

    python examples/asyncio_bot.py --offline            # a few seconds, no network
    python examples/asyncio_bot.py --offline --db sqlite:///bot.db

Needs the ``ccxt`` and ``testing`` extras (``pip install -e '.[ccxt,testing]'``). An offline run
wants a new ``--db``: one that already holds a ledger is refused with one line.

Without ``--offline`` it reads your Bybit account (BYBIT_API_KEY / BYBIT_API_SECRET, read-only
keys are enough; ``--testnet`` for the testnet) and runs one synchronizer round. It never trades.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import ccxt.async_support as accxt  # type: ignore[import-untyped]

from posledger import Fill, Ledger, PositionKey, ReconcilePolicy, Side
from posledger.aio import AsyncLedger, AsyncSynchronizer
from posledger.testing.fake_bybit import FakeBybit, FakeExecution
from posledger.venues.ccxt import AsyncCcxtVenue

ACCOUNT, CATEGORY = "example", "linear"
KEY_ENV, SECRET_ENV = "BYBIT_API_KEY", "BYBIT_API_SECRET"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PRICES = {"BTCUSDT": Decimal("43000.5"), "ETHUSDT": Decimal("3420.25"), "SOLUSDT": Decimal("151.7")}
SIDES = {"BTCUSDT": Side.BUY, "ETHUSDT": Side.SELL, "SOLUSDT": Side.BUY}
TICK = timedelta(milliseconds=20)
GRACE = timedelta(milliseconds=200)
"""The fake fills every order at once, so a request may be looked up in history this soon."""


def key(symbol: str) -> PositionKey:
    return PositionKey(venue="bybit", account=ACCOUNT, category=CATEGORY, symbol=symbol)


def as_fill(execution: FakeExecution) -> Fill:
    """What the bot's execution feed delivers, in posledger's terms."""
    return Fill(
        exec_id=execution.exec_id,
        order_id=execution.order_id,
        side=execution.side,
        qty=execution.exec_qty,
        price=execution.exec_price,
        fee=execution.exec_fee,
        exec_time=execution.exec_time,
        seq=execution.seq,
        leaves_qty=execution.leaves_qty,
        symbol=execution.symbol,
    )


class OfflineBot:
    """Trades on the fake exchange; its executions reach the bot through a queue that loses one
    in four."""

    def __init__(self, fake: FakeBybit, ledger: AsyncLedger) -> None:
        self.fake = fake
        self.ledger = ledger
        self.feed: asyncio.Queue[Fill] = asyncio.Queue()
        self.executions: list[FakeExecution] = []
        self.lost: list[str] = []
        self.order_ids = itertools.count(1)

    async def trade(self, rounds: int) -> None:
        for step in range(rounds):
            symbol = SYMBOLS[step % len(SYMBOLS)]
            held = await self.ledger.position(key(symbol))
            if held is None or held.size == 0:
                await self.open(symbol, SIDES[symbol], Decimal("0.010"))
            else:
                await self.trim(symbol, held.side, min(held.size, Decimal("0.004")))
            await asyncio.sleep(TICK.total_seconds())  # the fill task and the synchronizer run

    async def open(self, symbol: str, side: Side, qty: Decimal) -> None:
        order_id = f"bot-{next(self.order_ids)}"
        await self.ledger.request_open(key(symbol), order_id=order_id, side=side, qty=qty)
        await self.send(symbol, order_id, side, qty, reduce_only=False)

    async def trim(self, symbol: str, side: Side | None, qty: Decimal) -> None:
        """Exit part of the ``side`` position the bot read. The exit names its side: between
        that read and this request the synchronizer may recover a lost fill that closed the
        position, and an exit without a side has no position left to imply it from."""
        order_id = f"bot-{next(self.order_ids)}"
        exit_side = Side.SELL if side is Side.BUY else Side.BUY
        await self.ledger.request_exit(key(symbol), order_id=order_id, qty=qty, side=exit_side)
        await self.send(symbol, order_id, exit_side, qty, reduce_only=True)

    async def send(
        self, symbol: str, order_id: str, side: Side, qty: Decimal, *, reduce_only: bool
    ) -> None:
        """The exchange fills the order at once and pushes the execution, or loses it. Like
        Bybit, it fills a reduce-only order only up to the position and cancels the rest (the
        ledger may still count a lost fill as held); the bot hears of the cancel."""
        price = PRICES[symbol]
        self.fake.add_open_order(
            symbol, side.value.title(), qty, price, order_id=order_id, reduce_only=reduce_only
        )
        fillable = min(qty, self.fake.position(symbol).size) if reduce_only else qty
        if fillable:
            fee = fillable * price * Decimal("0.00055")
            execution = self.fake.partial_fill(order_id, fillable, fee=fee)
            self.executions.append(execution)
            if len(self.executions) % 4 == 0:
                self.lost.append(execution.exec_id)
            else:
                self.feed.put_nowait(as_fill(execution))
        if fillable < qty:
            self.fake.cancel_order(order_id)
            await self.feed.join()  # the order's fills come before its end
            await self.ledger.record_order_end(key(symbol), order_id=order_id, status="Cancelled")

    async def record_fills(self) -> None:
        """The bot's fill task: every execution it hears of goes to the ledger."""
        while True:
            fill = await self.feed.get()
            await self.ledger.record_fill(key(str(fill.symbol)), fill)
            self.feed.task_done()


async def offline(db: str, rounds: int) -> int:
    with FakeBybit() as fake:
        # The fake has no rate limit: ccxt's throttle (tens of ms per request) would only slow
        # the synchronizer down against the bot's 20 ms ticks.
        exchange = accxt.bybit(fake.ccxt_config(enableRateLimit=False))
        try:
            async with AsyncLedger.open(db, policy=ReconcilePolicy(grace=GRACE)) as ledger:
                venue = AsyncCcxtVenue(
                    exchange,
                    account=ACCOUNT,
                    category=CATEGORY,
                    settle_coin="USDT",
                    hedge_mode=False,  # the bot trades one-way: no need to ask per symbol
                )
                sync = AsyncSynchronizer(ledger, venue, interval=timedelta(milliseconds=50))
                bot = OfflineBot(fake, ledger)
                tasks = [
                    asyncio.create_task(sync.run_forever()),
                    asyncio.create_task(bot.record_fills()),
                ]
                try:
                    await bot.trade(rounds)
                    await bot.feed.join()
                    settled = await until_settled(ledger, fake)
                finally:  # the tasks end before the ledger closes, even if the bot failed
                    for task in tasks:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                return await summary(ledger, fake, bot) if settled else 1
        finally:
            await exchange.close()


def held_by_exchange(fake: FakeBybit) -> dict[str, tuple[Side, Decimal]]:
    legs = {symbol: fake.position(symbol) for symbol in SYMBOLS}
    return {s: (Side.parse(leg.side), leg.size) for s, leg in legs.items() if leg.size}


async def held_by_ledger(ledger: AsyncLedger) -> dict[str, tuple[Side | None, Decimal]]:
    return {p.key.symbol: (p.side, p.size) for p in await ledger.positions() if p.size}


async def until_settled(ledger: AsyncLedger, fake: FakeBybit, rounds: int = 400) -> bool:
    """Let the synchronizer work until every order is accounted for and the ledger holds what
    the exchange holds (lost fills of orders younger than the grace wait for it to pass)."""
    for _ in range(rounds):
        pending = [p for p in await ledger.positions() if p.pending_orders]
        if not pending and await held_by_ledger(ledger) == held_by_exchange(fake):
            return True
        await asyncio.sleep(0.05)
    print("the synchronizer did not catch up")
    return False


def shown(held: tuple[Side | None, Decimal] | None) -> str:
    return "flat" if held is None else f"{held[0]} {held[1]}"


async def summary(ledger: AsyncLedger, fake: FakeBybit, bot: OfflineBot) -> int:
    recorded: list[str] = []
    corrections = 0
    for symbol in SYMBOLS:
        history = await ledger.history(key(symbol))
        recorded += [e.exec_id for e in history if hasattr(e, "exec_id")]
        corrections += sum(type(e).__name__ == "Reconciled" for e in history)
    executed = sorted(e.exec_id for e in bot.executions)
    once = sorted(recorded) == executed
    print(
        f"executions on the exchange: {len(executed)}, lost on the way to the bot: "
        f"{len(bot.lost)}, recorded once each: {once}, corrections needed: {corrections}"
    )
    ours, theirs = await held_by_ledger(ledger), held_by_exchange(fake)
    for symbol in SYMBOLS:
        print(f"  {symbol}: ledger {shown(ours.get(symbol))}, exchange {shown(theirs.get(symbol))}")
    agreed = ours == theirs and once and not corrections
    print("nothing lost, nothing twice" if agreed else "MISMATCH")
    return 0 if agreed else 1


async def live(db: str, testnet: bool) -> int:
    config: dict[str, Any] = {
        "apiKey": os.environ[KEY_ENV],
        "secret": os.environ[SECRET_ENV],
    }
    exchange = accxt.bybit(config)
    exchange.set_sandbox_mode(testnet)
    try:
        async with AsyncLedger.open(db) as ledger:
            venue = AsyncCcxtVenue(exchange, account=ACCOUNT, category=CATEGORY, settle_coin="USDT")
            report = await AsyncSynchronizer(ledger, venue).run_once()
            for outcome in report.outcomes:
                print(f"{outcome.key}: {outcome.outcome} {outcome.correction or ''}")
            return 0
    finally:
        await exchange.close()


def holds_a_ledger(db: str) -> bool:
    """Whether ``db`` already holds keys: the fake exchange starts empty, so an old ledger there
    would disagree with it (and reuse its execution ids with other payloads)."""
    if db.startswith("memory://"):
        return False
    with Ledger.open(db) as ledger:
        return bool(ledger.keys())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="trade on the fake Bybit server")
    parser.add_argument("--db", default="memory://", help="ledger URL (default memory://)")
    parser.add_argument("--rounds", type=int, default=30, help="offline bot steps")
    parser.add_argument("--testnet", action="store_true", help="live mode on Bybit's testnet")
    args = parser.parse_args()
    if not args.offline and not (os.environ.get(KEY_ENV) and os.environ.get(SECRET_ENV)):
        print(f"asyncio_bot: set {KEY_ENV} and {SECRET_ENV}, or run --offline", file=sys.stderr)
        return 2
    if args.offline:
        if holds_a_ledger(args.db):
            print(
                f"asyncio_bot: {args.db} already holds a ledger; the offline run trades on a new "
                "fake exchange, so give it a new --db (or memory://)",
                file=sys.stderr,
            )
            return 2
        return asyncio.run(offline(args.db, args.rounds))
    return asyncio.run(live(args.db, args.testnet))


if __name__ == "__main__":
    raise SystemExit(main())
