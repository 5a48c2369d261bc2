"""The :class:`~posledger.drivers.sync.Synchronizer` for asyncio bots: the same round, awaited.

Venue reads are awaited on the event loop; ledger steps run on the
:class:`~posledger.ledger.aio.AsyncLedger`'s worker thread, queued with the bot's own commands,
so the loop never blocks on the store.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from posledger.drivers.sync import (
    FetchExecutions,
    FetchMoney,
    FetchSnapshot,
    Step,
    SyncReport,
    SyncRounds,
    on_ledger,
)
from posledger.ledger import Ledger
from posledger.ledger.aio import AsyncLedger
from posledger.venues.base import AsyncVenue
from posledger.venues.common import run_async


class AsyncSynchronizer(SyncRounds[AsyncLedger, AsyncVenue]):
    """The :class:`~posledger.sync.Synchronizer` round for asyncio: same plan, awaited reads."""

    @property
    def blocking_ledger(self) -> Ledger:
        return self.ledger.ledger

    async def run_once(self, now: datetime | None = None) -> SyncReport:
        """One round. Raises ExchangeUnavailable (writing nothing) if any read fails."""
        with self.reporting_failure():
            return await run_async(self._round(now), self._answer)

    async def run_forever(self) -> None:
        """Rounds every ``interval`` until cancelled. A failed exchange read, an unreachable
        store or exhausted concurrency retries wrote nothing: the loop backs off (exponential,
        with jitter, up to ``max_backoff``) and tries again, so a database hiccup never ends a
        synchronizer running beside a bot. Refused credentials
        (:class:`~posledger.ExchangeAuthFailed`) are raised: the loop stops. Cancelling it while
        a round writes lets that write finish on the worker thread (atomic per key), then ends
        the loop."""
        while True:
            with self.backoff.pacing(self.staleness):
                await self.run_once()
            await asyncio.sleep(self.backoff.delay.total_seconds())

    async def _answer(self, step: Step) -> Any:
        if isinstance(step, FetchSnapshot):
            return await self.venue.fetch_snapshot()
        if isinstance(step, FetchExecutions):
            return await self.venue.fetch_executions(step.since, step.until)
        if isinstance(step, FetchMoney):
            return await self.venue.fetch_money(step.since, step.until)  # type: ignore[attr-defined]
        return await self.ledger._call(on_ledger, self.ledger.ledger, step)
