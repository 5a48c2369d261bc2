"""A synchronizer's observers: told of every round done (with the disagreements it leaves open)
or failed, in the round's thread; one that raises never breaks the round."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest

from posledger import Correction, ExchangeUnavailable, Ledger, Outcome
from posledger.drivers.aio import AsyncSynchronizer
from posledger.drivers.observers import SyncObserver
from posledger.drivers.report import Disagreement
from posledger.drivers.sync import Synchronizer, SyncReport, SyncRounds
from posledger.ledger.aio import AsyncLedger
from tests.drivers.test_sync import AGI, ScriptedVenue
from tests.helpers import at, fill


@pytest.fixture
def venue() -> ScriptedVenue:
    return ScriptedVenue()


class Recording(SyncObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def round_done(self, source: SyncRounds[Any, Any], report: SyncReport) -> None:
        self.seen.append(("done", report))

    def round_failed(self, source: SyncRounds[Any, Any], error: Exception) -> None:
        self.seen.append(("failed", error))


class Raising(SyncObserver):
    def round_done(self, source: SyncRounds[Any, Any], report: SyncReport) -> None:
        raise RuntimeError("observer bug")

    def round_failed(self, source: SyncRounds[Any, Any], error: Exception) -> None:
        raise RuntimeError("observer bug")


def phantom_short(ledger: Ledger) -> None:
    """The ledger holds AGIUSDT short 4160 at 0.05; the exchange shows nothing."""
    ledger.record_fill(AGI, fill("open", "sell", "4160", "0.05", symbol="AGIUSDT"))


def test_observers_hear_each_round_with_the_disagreements_it_leaves_open(
    ledger: Ledger, venue: ScriptedVenue
) -> None:
    phantom_short(ledger)
    recording = Recording()
    sync = Synchronizer(ledger, venue, clock=lambda: venue.now, observers=[recording])
    venue.now = at(10)
    first = sync.run_once()
    assert first.reconcile.outcomes[0].outcome is Outcome.SUSPECT
    assert first.disagreements == (
        Disagreement(AGI, Decimal(-4160), Decimal(0), Decimal("208.00")),
    )
    assert first.unexplained_exposure == Decimal(208)
    venue.now = at(11)
    second = sync.run_once()
    assert second.reconcile.corrections[0].correction is Correction.PHANTOM
    assert second.disagreements == () and second.unexplained_exposure == 0
    venue.fail_snapshot = 1
    venue.now = at(12)
    with pytest.raises(ExchangeUnavailable) as raised:
        sync.run_once()
    assert recording.seen == [("done", first), ("done", second), ("failed", raised.value)]


def test_an_observer_that_raises_breaks_no_round(
    ledger: Ledger, venue: ScriptedVenue, caplog: pytest.LogCaptureFixture
) -> None:
    phantom_short(ledger)
    recording = Recording()
    sync = Synchronizer(ledger, venue, clock=lambda: venue.now, observers=[Raising(), recording])
    for minute in (10, 11):
        venue.now = at(minute)
        sync.run_once()
    assert ledger.open_positions() == []
    venue.fail_snapshot = 1
    with pytest.raises(ExchangeUnavailable, match="rate limited"):
        sync.run_once()
    assert [kind for kind, _ in recording.seen] == ["done", "done", "failed"]
    failures = [r for r in caplog.records if r.name == "posledger.observers"]
    assert len(failures) == 3 and all(r.levelno == logging.ERROR for r in failures)


class AsyncScriptedVenue(ScriptedVenue):
    async def fetch_snapshot(self) -> Any:  # type: ignore[override]
        return ScriptedVenue.fetch_snapshot(self)

    async def fetch_executions(self, since: Any, until: Any = None) -> Any:  # type: ignore[override]
        return ScriptedVenue.fetch_executions(self, since, until)


def test_the_async_synchronizer_tells_its_observers_too() -> None:
    recording = Recording()
    scripted = AsyncScriptedVenue()
    scripted.now = at(10)

    async def rounds() -> None:
        async with AsyncLedger.open("memory://") as ledger:
            phantom_short(ledger.ledger)
            sync = AsyncSynchronizer(
                ledger, scripted, clock=lambda: scripted.now, observers=[Raising(), recording]
            )
            await sync.run_once()
            scripted.fail_snapshot = 1
            with pytest.raises(ExchangeUnavailable):
                await sync.run_once()

    asyncio.run(rounds())
    assert [kind for kind, _ in recording.seen] == ["done", "failed"]
    report = recording.seen[0][1]
    assert [d.key for d in report.disagreements] == [AGI]
