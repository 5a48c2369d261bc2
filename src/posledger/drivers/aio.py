"""The :class:`~posledger.drivers.sync.Synchronizer` for asyncio bots: the same round, awaited.

Venue reads are awaited on the event loop; ledger work runs on the
:class:`~posledger.ledger.aio.AsyncLedger`'s worker thread, queued with the bot's own commands,
so the loop never blocks on the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from posledger.core.errors import ConcurrencyError, ExchangeUnavailable, StorageUnavailable
from posledger.core.model import aware_utc
from posledger.core.reconcile import ReconcilePolicy
from posledger.drivers.sync import (
    Backoff,
    RecoveryPlan,
    SyncReport,
    finish_round,
    record_recovered,
)
from posledger.ledger.aio import AsyncLedger
from posledger.venues.base import AsyncVenue


class AsyncSynchronizer:
    """The :class:`~posledger.sync.Synchronizer` round for asyncio: same plan, awaited reads."""

    def __init__(
        self,
        ledger: AsyncLedger,
        venue: AsyncVenue,
        *,
        policy: ReconcilePolicy | None = None,
        lookback: timedelta = timedelta(days=7),
        interval: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.venue = venue
        self.policy = policy or ledger.ledger.policy
        self.lookback = lookback
        self.backoff = Backoff(interval, max_backoff)
        self.clock = clock or ledger.ledger.clock
        self.last_good_snapshot_at: datetime | None = None

    @property
    def consecutive_failures(self) -> int:
        return self.backoff.failures

    def staleness(self, now: datetime | None = None) -> timedelta | None:
        """Time since the last complete snapshot; None before the first one."""
        if self.last_good_snapshot_at is None:
            return None
        return aware_utc(now or self.clock(), "now") - self.last_good_snapshot_at

    async def run_once(self, now: datetime | None = None) -> SyncReport:
        """One round. Raises ExchangeUnavailable (writing nothing) if any read fails."""
        when = aware_utc(now or self.clock(), "now")
        snapshot = await self.venue.fetch_snapshot()
        states = {s.key: s for s in await self.ledger.positions()}
        plan = RecoveryPlan.for_round(states, snapshot, when, self.policy, self.lookback)
        fills = [] if plan.since is None else await self.venue.fetch_executions(plan.since, when)
        self.last_good_snapshot_at = snapshot.taken_at
        groups = plan.assign(snapshot, fills)
        recovered, conflicts = await self.ledger._call(record_recovered, self.ledger.ledger, groups)
        report = await self.ledger.reconcile(
            snapshot, now=when, policy=self.policy, skip=[c.key for c in conflicts]
        )
        return finish_round(self.venue, snapshot, recovered, conflicts, report)

    async def run_forever(self) -> None:
        """Rounds every ``interval`` until cancelled. A failed exchange read, an unreachable
        store or exhausted concurrency retries wrote nothing: the loop backs off (exponential,
        with jitter, up to ``max_backoff``) and tries again, so a database hiccup never ends a
        synchronizer running beside a bot. Cancelling it while a round writes lets that write
        finish on the worker thread (atomic per key), then ends the loop."""
        while True:
            try:
                await self.run_once()
            except (ExchangeUnavailable, StorageUnavailable, ConcurrencyError) as error:
                delay = self.backoff.failed(error, self.staleness())
            else:
                delay = self.backoff.succeeded()
            await asyncio.sleep(delay.total_seconds())
