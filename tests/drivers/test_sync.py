"""Synchronizer: recovery before correction, failures write nothing, conflicts stay per key."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import (
    Correction,
    ExchangeAuthFailed,
    ExchangeUnavailable,
    Fill,
    Ledger,
    Outcome,
    PositionKey,
    Snapshot,
)
from posledger.drivers.aio import AsyncSynchronizer
from posledger.drivers.sync import Synchronizer
from posledger.ledger.aio import AsyncLedger
from posledger.venues.base import Venue
from tests.conftest import T0, key
from tests.helpers import at, event_names, fill, last_event, row, snapshot


class ScriptedVenue:
    """An exchange account in memory: positions, execution history, and read failures on demand."""

    venue, account, category = "bybit", "main", "linear"

    def __init__(self) -> None:
        self.now = at(0)
        self.rows: dict[tuple[str, int], tuple[str, str]] = {}
        self.history: list[Fill] = []
        self.open_orders: set[str] = set()
        self.fail_snapshot = 0
        self.fail_executions = 0
        self.execution_reads: list[tuple[datetime, datetime | None]] = []

    def fetch_snapshot(self) -> Snapshot:
        if self.fail_snapshot:
            self.fail_snapshot -= 1
            raise ExchangeUnavailable("retCode 10006: rate limited")
        positions = [row(sym, side, size, idx) for (sym, idx), (side, size) in self.rows.items()]
        return snapshot(self.now, positions, open_order_ids=sorted(self.open_orders))

    def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        self.execution_reads.append((since, until))
        if self.fail_executions:
            self.fail_executions -= 1
            raise ExchangeUnavailable("HTTP 502")
        return [f for f in self.history if f.exec_time >= since]


@pytest.fixture
def venue() -> ScriptedVenue:
    return ScriptedVenue()


@pytest.fixture
def sync(ledger: Ledger, venue: ScriptedVenue) -> Iterator[Synchronizer]:
    yield Synchronizer(ledger, venue, clock=lambda: venue.now)


AGI = key("AGIUSDT")


def open_aged_short(ledger: Ledger, venue: ScriptedVenue) -> None:
    ledger.record_fill(AGI, fill("open", "sell", "4160", "0.05", symbol="AGIUSDT"))
    ledger.request_exit(AGI, order_id="aged-exit", qty=Decimal(4160), at=at(60), price="0.04784")
    venue.rows[("AGIUSDT", 0)] = ("sell", "4160")
    venue.open_orders.add("aged-exit")


def test_the_scripted_venue_is_a_venue(venue: ScriptedVenue) -> None:
    assert isinstance(venue, Venue)


def test_a_missed_partial_exit_fill_is_recovered_as_a_real_fill(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    open_aged_short(ledger, venue)
    venue.history.append(
        fill(
            "p1",
            "buy",
            "1000",
            "0.04784",
            order_id="aged-exit",
            symbol="AGIUSDT",
            idx=0,
            exec_time=at(100),
            leaves_qty="3160",
        )
    )
    venue.rows[("AGIUSDT", 0)] = ("sell", "3160")
    venue.now = at(120)
    report = sync.run_once()
    assert report.recovered == {AGI: 1}
    assert report.reconcile.outcome(AGI).outcome is Outcome.AGREES  # type: ignore[union-attr]
    assert event_names(ledger, AGI)[-1] == "PartiallyFilled"
    assert "Reconciled" not in event_names(ledger, AGI)
    assert ledger.position(AGI).size == Decimal(3160)  # type: ignore[union-attr]


def test_what_history_cannot_explain_becomes_a_correction(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    open_aged_short(ledger, venue)
    venue.rows[("AGIUSDT", 0)] = ("sell", "3160")
    venue.now = at(120)
    assert sync.run_once().reconcile.outcome(AGI).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    venue.now = at(121)
    report = sync.run_once()
    assert report.reconcile.outcome(AGI).correction is Correction.STALE_QUANTITY  # type: ignore[union-attr]
    assert last_event(ledger, AGI, "Reconciled").after_size == Decimal(3160)


def test_positions_closed_by_unrecorded_fills_close_as_filled_not_phantom(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    eth = key("ETHUSDT")
    ledger.record_fill(eth, fill("o", "buy", "0.5", "3000", symbol="ETHUSDT"))
    venue.history.append(fill("tp", "sell", "0.5", "3100", symbol="ETHUSDT", exec_time=at(30)))
    venue.now = at(40)
    report = sync.run_once()
    assert report.recovered == {eth: 1}
    assert last_event(ledger, eth, "Closed").reason == "filled"
    assert ledger.position(eth).realized_pnl == Decimal(50)  # type: ignore[union-attr]
    assert ledger.open_positions() == []


@pytest.mark.parametrize("failing", ["fail_snapshot", "fail_executions"])
def test_a_failed_read_raises_and_writes_nothing(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer, failing: str
) -> None:
    open_aged_short(ledger, venue)
    venue.rows.clear()
    venue.now = at(200)
    setattr(venue, failing, 5)
    before = ledger.history(AGI)
    for minute in range(5):
        venue.now = at(200 + minute)
        with pytest.raises(ExchangeUnavailable):
            sync.run_once()
    assert ledger.history(AGI) == before
    assert [p.key for p in ledger.open_positions()] == [AGI]


def test_a_conflicting_recovered_execution_blocks_only_its_key(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    btc, sol = key("BTCUSDT"), key("SOLUSDT")
    ledger.record_fill(btc, fill("b1", "buy", "1", symbol="BTCUSDT"))
    ledger.record_fill(sol, fill("s1", "buy", "2", symbol="SOLUSDT"))
    venue.history.append(fill("b1", "buy", "3", symbol="BTCUSDT", exec_time=T0))
    venue.rows[("BTCUSDT", 0)] = ("buy", "3")
    for minute in (10, 11):
        venue.now = at(minute)
        report = sync.run_once()
    conflict = next(o for o in report.outcomes if o.key == btc)
    assert conflict.outcome is Outcome.CONFLICT and "b1" in conflict.detail
    assert ledger.position(btc).size == 1  # type: ignore[union-attr]
    assert report.reconcile.outcome(sol).correction is Correction.PHANTOM  # type: ignore[union-attr]


def test_an_unknown_position_is_adopted_not_reconstructed_from_partial_history(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    venue.rows[("SOLUSDT", 0)] = ("sell", "7")
    venue.history.append(fill("old", "buy", "2", symbol="SOLUSDT", exec_time=at(1)))
    for minute in (10, 11):
        venue.now = at(minute)
        report = sync.run_once()
    sol = key("SOLUSDT")
    assert report.reconcile.outcome(sol).correction is Correction.ADOPTED  # type: ignore[union-attr]
    assert ledger.position(sol).size == 7  # type: ignore[union-attr]
    assert event_names(ledger, sol) == ["KeyRegistered", "ExchangeSnapshot", "Reconciled"]


def test_run_forever_backs_off_and_recovers(
    ledger: Ledger, venue: ScriptedVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    venue.fail_snapshot = 2
    stop = threading.Event()
    sync = Synchronizer(ledger, venue, interval=timedelta(milliseconds=5), clock=lambda: venue.now)
    rounds: list[int] = []
    real_run_once = sync.run_once

    def counting_run_once(now: datetime | None = None) -> object:
        rounds.append(sync.consecutive_failures)
        if len(rounds) >= 4:
            stop.set()
        return real_run_once(now)

    monkeypatch.setattr(sync, "run_once", counting_run_once)
    thread = threading.Thread(target=sync.run_forever, args=(stop,))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert rounds[:4] == [0, 1, 2, 0]
    assert sync.staleness(at(5)) == timedelta(minutes=5)


class RefusingVenue(ScriptedVenue):
    """An account whose key the exchange refuses: every snapshot read fails with 10003."""

    def fetch_snapshot(self) -> Snapshot:
        self.refusals = getattr(self, "refusals", 0) + 1
        raise ExchangeAuthFailed(
            "Bybit position list: retCode 10003: API key is invalid.", code=10003
        )


class AsyncRefusingVenue(RefusingVenue):
    async def fetch_snapshot(self) -> Snapshot:  # type: ignore[override]
        return super().fetch_snapshot()


def test_run_forever_stops_on_refused_credentials(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """No backoff fixes a key: the loop raises instead of retrying forever (a stop after three
    rounds keeps a loop that did retry from hanging the test)."""
    venue = RefusingVenue()
    stop = threading.Event()
    sync = Synchronizer(ledger, venue, interval=timedelta(milliseconds=1), clock=lambda: venue.now)
    real_run_once = sync.run_once

    def stopping_after_three(now: datetime | None = None) -> object:
        if getattr(venue, "refusals", 0) >= 2:
            stop.set()
        return real_run_once(now)

    sync.run_once = stopping_after_three  # type: ignore[method-assign]
    with pytest.raises(ExchangeAuthFailed):
        sync.run_forever(stop)
    assert venue.refusals == 1
    assert "sync stopped: the exchange refused the credentials" in caplog.text
    assert ledger.positions() == []


def test_the_async_loop_stops_on_refused_credentials() -> None:
    venue = AsyncRefusingVenue()

    async def scenario() -> None:
        async with AsyncLedger.open("memory://") as aledger:
            sync = AsyncSynchronizer(
                aledger, venue, interval=timedelta(milliseconds=1), clock=lambda: venue.now
            )
            with pytest.raises(ExchangeAuthFailed):
                await asyncio.wait_for(sync.run_forever(), timeout=10)
        assert venue.refusals == 1

    asyncio.run(scenario())


def test_staleness_is_unknown_before_the_first_snapshot(ledger: Ledger) -> None:
    assert Synchronizer(ledger, ScriptedVenue()).staleness(T0) is None


def test_hedge_legs_keep_their_keys(
    ledger: Ledger, venue: ScriptedVenue, sync: Synchronizer
) -> None:
    venue.rows[("BTCUSDT", 1)] = ("buy", "1")
    venue.rows[("BTCUSDT", 2)] = ("sell", "2")
    for minute in (1, 2):
        venue.now = at(minute)
        sync.run_once()
    assert [p.key for p in ledger.open_positions()] == [
        PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT", idx=i)
        for i in (1, 2)
    ]


def test_run_forever_outlives_a_store_outage(tmp_path: Path) -> None:
    """An unreachable store is a failed round, backed off like a failed read: the loop that
    keeps phantoms away must not die of it."""
    path = tmp_path / "ledger.db"
    venue = ScriptedVenue()
    venue.rows[("BTCUSDT", 0)] = ("Buy", "2")
    stop = threading.Event()
    with Ledger.open(f"sqlite:///{path}", timeout=0.5) as ledger:
        sync = Synchronizer(
            ledger, venue, interval=timedelta(milliseconds=5), clock=lambda: venue.now
        )
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        thread = threading.Thread(target=sync.run_forever, args=(stop,))
        thread.start()
        try:
            assert wait_until(lambda: sync.consecutive_failures >= 2)
            assert thread.is_alive()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert wait_until(lambda: sync.consecutive_failures == 0)
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert "ExchangeSnapshot" in event_names(ledger, key("BTCUSDT"))


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
