"""asyncio: the loop never blocks on the store, cancellation never leaves half a write, and the
AsyncSynchronizer makes the same decisions as the blocking one."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import (
    Correction,
    ExchangeUnavailable,
    Fill,
    Ledger,
    LedgerClosed,
    Outcome,
    Snapshot,
)
from posledger.drivers.aio import AsyncSynchronizer
from posledger.ledger.aio import AsyncLedger
from posledger.venues.base import AsyncVenue
from tests.conftest import T0, key
from tests.helpers import at, event_names, fill, row, snapshot

K = key()
AGI = key("AGIUSDT")


def test_commands_and_queries_are_awaited(ledger_url: str) -> None:
    async def scenario() -> None:
        async with AsyncLedger.open(ledger_url) as aledger:
            await aledger.request_open(K, order_id="o1", side="buy", qty=Decimal(2), at=T0)
            result = await aledger.record_fill(K, fill("e1", "buy", "2", order_id="o1"))
            assert result.event == "Filled"
            assert (await aledger.record_fill(K, fill("e1", "buy", "2", order_id="o1"))).duplicate
            assert [p.key for p in await aledger.open_positions()] == [K]
            agreeing = snapshot(at(5), [row("BTCUSDT", "buy", "2")])
            report = await aledger.reconcile(agreeing, now=at(5))
            assert report.events_written == 0
            assert (await aledger.position(K)).size == 2  # type: ignore[union-attr]
            assert len(await aledger.history(K)) == 3

    asyncio.run(scenario())


def test_the_loop_keeps_running_while_the_store_waits(tmp_path: Path) -> None:
    path = tmp_path / "l.db"

    async def scenario() -> int:
        ticks = 0
        async with AsyncLedger.open(f"sqlite:///{path}", timeout=5) as aledger:
            await aledger.record_fill(K, fill("e0", "buy", "1"))
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            write = asyncio.create_task(aledger.record_fill(K, fill("e1", "buy", "1")))
            while ticks < 50:
                await asyncio.sleep(0.005)
                ticks += 1
            assert not write.done()
            blocker.execute("ROLLBACK")
            blocker.close()
            await write
            assert (await aledger.position(K)).size == 2  # type: ignore[union-attr]
        return ticks

    assert asyncio.run(scenario()) == 50


def test_a_cancelled_caller_never_leaves_half_a_write(durable_url: str) -> None:
    batch = [fill(f"e{n}", "buy", "1") for n in range(200)]

    async def scenario() -> None:
        async with AsyncLedger.open(durable_url) as aledger:
            task = asyncio.create_task(aledger.record_fills(K, batch))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    with Ledger.open(durable_url) as ledger:
        fills = event_names(ledger, K).count("Filled")
        assert fills in (0, len(batch))
        state = ledger.position(K)
        assert (state.size if state else 0) == fills


class AsyncScriptedVenue:
    venue, account, category = "bybit", "main", "linear"

    def __init__(self) -> None:
        self.now = at(0)
        self.rows: dict[str, tuple[str, str]] = {}
        self.history: list[Fill] = []
        self.failing = 0

    async def fetch_snapshot(self) -> Snapshot:
        await asyncio.sleep(0)
        if self.failing:
            self.failing -= 1
            raise ExchangeUnavailable("timeout")
        rows = [row(symbol, side, size) for symbol, (side, size) in self.rows.items()]
        return snapshot(self.now, rows, open_order_ids=["aged-exit"])

    async def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        await asyncio.sleep(0)
        return [f for f in self.history if f.exec_time >= since]


def test_the_async_venue_protocol() -> None:
    assert isinstance(AsyncScriptedVenue(), AsyncVenue)


def test_async_synchronizer_recovers_a_missed_partial_exit(ledger_url: str) -> None:
    venue = AsyncScriptedVenue()

    async def scenario() -> None:
        async with AsyncLedger.open(ledger_url) as aledger:
            await aledger.record_fill(AGI, fill("open", "sell", "4160", "0.05", symbol="AGIUSDT"))
            await aledger.request_exit(AGI, order_id="aged-exit", qty=Decimal(4160), at=at(60))
            venue.history.append(
                fill("p1", "buy", "1000", order_id="aged-exit", symbol="AGIUSDT", exec_time=at(90))
            )
            venue.rows["AGIUSDT"] = ("sell", "3160")
            venue.now = at(120)
            sync = AsyncSynchronizer(aledger, venue, clock=lambda: venue.now)
            report = await sync.run_once()
            assert report.recovered == {AGI: 1}
            assert report.reconcile.outcome(AGI).outcome is Outcome.AGREES  # type: ignore[union-attr]
            assert (await aledger.position(AGI)).size == 3160  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_async_synchronizer_failures_write_nothing_and_it_stops_on_cancel(
    ledger_url: str,
) -> None:
    venue = AsyncScriptedVenue()

    async def scenario() -> None:
        async with AsyncLedger.open(ledger_url) as aledger:
            await aledger.record_fill(K, fill("e1", "buy", "1", symbol="BTCUSDT"))
            before = await aledger.history(K)
            venue.failing = 3
            sync = AsyncSynchronizer(
                aledger, venue, interval=timedelta(milliseconds=2), clock=lambda: venue.now
            )
            with pytest.raises(ExchangeUnavailable):
                await sync.run_once()
            assert await aledger.history(K) == before
            runner = asyncio.create_task(sync.run_forever())
            while venue.failing or sync.last_good_snapshot_at is None:
                await asyncio.sleep(0.01)
            venue.now = at(10)
            await asyncio.sleep(0.05)
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert sync.backoff.failures == 0
            corrections = [e for e in await aledger.history(K) if type(e).__name__ == "Reconciled"]
            assert [e.kind for e in corrections] == [Correction.PHANTOM]

    asyncio.run(scenario())


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (a hang guard, not a timing assertion: generous on a loaded box)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout=60)


def test_run_forever_outlives_a_store_outage(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    venue = AsyncScriptedVenue()

    async def scenario() -> None:
        async with AsyncLedger.open(f"sqlite:///{path}", timeout=0.2) as aledger:
            await aledger.record_fill(K, fill("e1", "buy", "1", symbol="BTCUSDT"))
            sync = AsyncSynchronizer(
                aledger, venue, interval=timedelta(milliseconds=5), clock=lambda: venue.now
            )
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            runner = asyncio.create_task(sync.run_forever())
            try:
                await until(lambda: sync.backoff.failures >= 2)
                assert not runner.done()
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            await until(lambda: sync.backoff.failures == 0)
            venue.now = at(10)
            await until(lambda: K not in {p.key for p in aledger.ledger.open_positions()})
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner
            assert event_names(aledger.ledger, K)[-2:] == ["Reconciled", "Closed"]

    asyncio.run(scenario())


def test_open_is_a_plain_call_and_aclose_ends_it(ledger_url: str) -> None:
    aledger = AsyncLedger.open(ledger_url)

    async def scenario() -> None:
        await aledger.record_fill(K, fill("e1", "buy", "1"))
        assert (await aledger.position(K)).size == 1  # type: ignore[union-attr]
        await aledger.aclose()

    asyncio.run(scenario())


def test_backfill_is_awaited(ledger_url: str) -> None:
    eth = key("ETHUSDT")

    async def scenario() -> None:
        async with AsyncLedger.open(ledger_url) as aledger:
            fills = {
                K: [fill("b1", "buy", "1")],
                eth: [fill("e1", "sell", "2"), fill("e2", "sell", "1")],
            }
            results = await aledger.backfill(fills, events_per_transaction=2)
            assert {k: r.applied for k, r in results.items()} == {K: 1, eth: 2}
            again = await aledger.backfill(fills)
            assert {k: r.applied for k, r in again.items()} == {K: 0, eth: 0}
            assert [p.size for p in await aledger.open_positions()] in ([1, 3], [3, 1])

    asyncio.run(scenario())


def test_books_are_awaited_too(ledger_url: str) -> None:
    alpha, beta = K.in_book("alpha"), K.in_book("beta")

    async def scenario() -> None:
        async with AsyncLedger.open(ledger_url) as aledger:
            await aledger.request_open(alpha, order_id="a1", side="buy", qty=Decimal(2), at=T0)
            await aledger.request_open(beta, order_id="b1", side="sell", qty=Decimal(1), at=T0)
            fills = [fill("e1", "buy", "2", order_id="a1"), fill("e2", "sell", "1", order_id="b1")]
            batch = await aledger.record_account_fills(K, fills)
            assert (batch.position.side, batch.position.size) == ("buy", 1)
            assert [s.signed_size for s in await aledger.books(K)] == [2, -1]
            assert (await aledger.account_position(K)).size == 1  # type: ignore[union-attr]
            assert [p.key for p in await aledger.account_positions()] == [K]
            assert [p.key for p in await aledger.positions(book="beta")] == [beta]

    asyncio.run(scenario())


def test_a_synchronizer_left_running_after_aclose_ends_with_ledger_closed(
    ledger_url: str,
) -> None:
    """Not a failure to back off from and retry forever: the ledger is gone."""

    async def scenario() -> None:
        aledger = AsyncLedger.open(ledger_url)
        await aledger.aclose()
        venue = AsyncScriptedVenue()
        sync = AsyncSynchronizer(aledger, venue, interval=timedelta(milliseconds=1))
        with pytest.raises(LedgerClosed):
            await asyncio.wait_for(sync.run_forever(), timeout=10)
        assert sync.backoff.failures == 0

    asyncio.run(scenario())
