"""The loop that ties a venue to a ledger: snapshot, recover missed executions, reconcile.

Recovery comes first: before any correction, the executions the ledger missed are fetched from the
exchange's history and applied as real fills (deduplication makes overlap with WebSocket delivery
harmless), so a missed partial exit fill (seed 002) is recorded as the fill it was, not as a
``stale_quantity`` correction. Only what history cannot explain becomes ``Reconciled``.

A failed read raises :class:`~posledger.ExchangeUnavailable` before anything is written.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs

from posledger.errors import ExchangeUnavailable, ExecutionConflict
from posledger.ledger import Ledger
from posledger.model import Fill, PositionKey, Snapshot, aware_utc
from posledger.position import PositionState
from posledger.reconcile import (
    KeyOutcome,
    Outcome,
    ReconcilePolicy,
    ReconcileReport,
    needs_recovery,
)
from posledger.venues.base import Venue

log = logging.getLogger("posledger.sync")

RECOVERY_MARGIN = timedelta(minutes=1)
"""Executions this long before a key's last known event are still offered to it (clock skew
between the bot recording a request and the exchange executing it); dedup keeps this safe."""


@attrs.frozen
class SyncReport:
    """One round: the snapshot used, the fills recovered per key, and every key's outcome."""

    snapshot: Snapshot
    recovered: dict[PositionKey, int]
    conflicts: tuple[KeyOutcome, ...]
    reconcile: ReconcileReport

    @property
    def outcomes(self) -> tuple[KeyOutcome, ...]:
        return self.reconcile.outcomes + self.conflicts

    @property
    def fills_recovered(self) -> int:
        return sum(self.recovered.values())


class Synchronizer:
    """Keeps one ledger in step with one venue account/category."""

    def __init__(
        self,
        ledger: Ledger,
        venue: Venue,
        *,
        policy: ReconcilePolicy | None = None,
        lookback: timedelta = timedelta(days=7),
        interval: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.venue = venue
        self.policy = policy or ledger.policy
        self.lookback = lookback
        self.interval = interval
        self.max_backoff = max_backoff
        self.clock = clock or ledger.clock
        self.last_good_snapshot_at: datetime | None = None
        self.consecutive_failures = 0

    def staleness(self, now: datetime | None = None) -> timedelta | None:
        """Time since the last complete snapshot; None before the first one."""
        if self.last_good_snapshot_at is None:
            return None
        return aware_utc(now or self.clock(), "now") - self.last_good_snapshot_at

    def run_once(self, now: datetime | None = None) -> SyncReport:
        """One round. Raises ExchangeUnavailable (writing nothing) if any read fails."""
        when = aware_utc(now or self.clock(), "now")
        snapshot = self.venue.fetch_snapshot()
        states = {s.key: s for s in self.ledger.positions() if snapshot.covers(s.key)}
        recovering = {
            key: _knowledge_point(state)
            for key, state in states.items()
            if needs_recovery(state, snapshot, when, self.policy)
        }
        fills: list[Fill] = []
        if recovering:
            since = max(min(recovering.values()) - RECOVERY_MARGIN, when - self.lookback)
            fills = self.venue.fetch_executions(since=since, until=when)
        self.last_good_snapshot_at = snapshot.taken_at
        recovered, conflicts = self._apply(snapshot, recovering, states, fills)
        report = self.ledger.reconcile(
            snapshot, now=when, policy=self.policy, skip=[c.key for c in conflicts]
        )
        result = SyncReport(snapshot, recovered, tuple(conflicts), report)
        log.info(
            "sync round",
            extra={
                "venue": self.venue.venue,
                "account": self.venue.account,
                "category": self.venue.category,
                "taken_at": snapshot.taken_at.isoformat(),
                "fills_recovered": result.fills_recovered,
                "corrections": len(report.corrections),
                "suspects": len(report.suspects),
                "conflicts": len(conflicts),
            },
        )
        return result

    def _apply(
        self,
        snapshot: Snapshot,
        recovering: dict[PositionKey, datetime],
        states: dict[PositionKey, PositionState],
        fills: list[Fill],
    ) -> tuple[dict[PositionKey, int], list[KeyOutcome]]:
        by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
        for fill in fills:
            if fill.symbol is None:
                continue
            key = snapshot.key(fill.symbol, fill.idx or 0)
            if key not in recovering:
                continue
            ours = states[key].pending(fill.order_id) is not None if fill.order_id else False
            if ours or fill.exec_time >= recovering[key] - RECOVERY_MARGIN:
                by_key[key].append(fill)
        recovered: dict[PositionKey, int] = {}
        conflicts: list[KeyOutcome] = []
        for key, key_fills in sorted(by_key.items(), key=lambda item: str(item[0])):
            try:
                batch = self.ledger.record_fills(key, key_fills)
            except ExecutionConflict as conflict:
                log.error("%s: recovered execution conflicts: %s", key, conflict)
                conflicts.append(KeyOutcome(key, Outcome.CONFLICT, detail=str(conflict)))
                continue
            if batch.applied:
                recovered[key] = batch.applied
        return recovered, conflicts

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Run rounds every ``interval`` until ``stop`` is set; on a failed read back off
        exponentially (with jitter) up to ``max_backoff``, never treating it as flat."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.run_once()
            except ExchangeUnavailable as error:
                self.consecutive_failures += 1
                delay = self._backoff()
                log.warning(
                    "exchange read failed (%s); retrying in %.1fs",
                    error,
                    delay.total_seconds(),
                    extra={
                        "failures": self.consecutive_failures,
                        "staleness_s": _seconds(self.staleness()),
                    },
                )
            else:
                self.consecutive_failures = 0
                delay = self.interval
            stop.wait(delay.total_seconds())

    def _backoff(self) -> timedelta:
        base: timedelta = self.interval * 2 ** min(self.consecutive_failures - 1, 16)
        return min(base, self.max_backoff) * random.uniform(0.5, 1.0)


def _knowledge_point(state: PositionState) -> datetime:
    """Since when the ledger may have missed executions of this key."""
    if state.last_fill_time is not None:
        return state.last_fill_time
    if state.pending_orders:
        return min(order.requested_at for order in state.pending_orders)
    return state.updated_at


def _seconds(delta: timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()
