"""The loop that ties a venue to a ledger: snapshot, recover missed executions, reconcile.

Recovery comes first: before any correction, the executions the ledger missed are fetched from the
exchange's history and applied as real fills (deduplication makes overlap with WebSocket delivery
harmless), so a missed partial exit fill (seed 002) is recorded as the fill it was, not as a
``stale_quantity`` correction. Only what history cannot explain becomes ``Reconciled``.

A failed read raises :class:`~posledger.ExchangeUnavailable` before anything is written.

The round is written once, as a plan in the style of :mod:`posledger.venues.common`: a generator
that yields the I/O steps it needs (fetch the snapshot, read positions, fetch executions, record
recovered fills, reconcile) and is sent their answers. :class:`Synchronizer` carries the steps
out blocking; :class:`~posledger.drivers.aio.AsyncSynchronizer` awaits them.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from operator import methodcaller
from typing import Any, Generic, Literal, TypeVar

import attrs

from posledger.core.errors import (
    ConcurrencyError,
    ExchangeAuthFailed,
    ExchangeUnavailable,
    ExecutionConflict,
    InvalidInput,
    PosledgerError,
    StorageUnavailable,
)
from posledger.core.model import ExecKind, Fill, PositionKey, Snapshot, aware_utc
from posledger.core.money import MoneyRecord
from posledger.core.position import PositionState
from posledger.core.reconcile import (
    KeyOutcome,
    Outcome,
    ReconcilePolicy,
    ReconcileReport,
    needs_recovery,
)
from posledger.drivers.money import (
    MoneyChecks,
    MoneyDue,
    MoneyOutcome,
    candidates,
    check_due,
    due,
    funding_of,
)
from posledger.drivers.observers import SyncObserver
from posledger.drivers.report import Disagreement, disagreements, unsettled_keys
from posledger.drivers.report import SyncReport as SyncReport  # its public path too
from posledger.drivers.report import UnknownExecution as UnknownExecution
from posledger.ledger import Ledger
from posledger.ledger.observers import notify
from posledger.venues.base import AsyncVenue, Venue
from posledger.venues.common import run

log = logging.getLogger("posledger.drivers.sync")

RECOVERY_MARGIN = timedelta(minutes=1)
"""Executions this long before a key's last known event are still offered to it (clock skew
between the bot recording a request and the exchange executing it); dedup keeps this safe."""

RETRIED = (ExchangeUnavailable, StorageUnavailable, ConcurrencyError)
"""Failures of a round that wrote nothing: a loop backs off and tries again (except
:class:`~posledger.ExchangeAuthFailed`, which ends it)."""

T = TypeVar("T")
LedgerT = TypeVar("LedgerT")
VenueT = TypeVar("VenueT", bound=Venue | AsyncVenue)


@attrs.frozen
class RecoveryPlan:
    """Which keys may have missed executions, since when, and which fetched fills are theirs.

    Pure, so the blocking and the asyncio synchronizers share every decision."""

    since: datetime | None
    knowledge: dict[PositionKey, datetime]
    states: dict[PositionKey, PositionState]

    @classmethod
    def for_round(
        cls,
        states: dict[PositionKey, PositionState],
        snapshot: Snapshot,
        now: datetime,
        policy: ReconcilePolicy,
        lookback: timedelta,
        books: Iterable[PositionState] = (),
    ) -> RecoveryPlan:
        covered = {key: state for key, state in states.items() if snapshot.covers(key)}
        points = _knowledge_points(covered, books)
        knowledge = {
            key: points[key]
            for key, state in covered.items()
            if needs_recovery(state, snapshot, now, policy)
        }
        since = (
            max(min(knowledge.values()) - RECOVERY_MARGIN, now - lookback) if knowledge else None
        )
        return cls(since, knowledge, covered)

    def assign(self, snapshot: Snapshot, fills: list[Fill]) -> list[tuple[PositionKey, list[Fill]]]:
        """Fetched fills grouped by the recovering key they belong to, in key order, each key's
        in the order the exchange applied them (:meth:`Fill.exchange_order`, whatever order the
        venue listed them in). A fill older than the key's last known event is offered only if
        it is of a pending order."""
        by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
        for fill in fills:
            if fill.symbol is None:
                continue
            key = snapshot.key(fill.symbol, fill.idx or 0)
            if key not in self.knowledge:
                continue
            ours = bool(fill.order_id) and self.states[key].pending(fill.order_id) is not None
            if ours or fill.exec_time >= self.knowledge[key] - RECOVERY_MARGIN:
                by_key[key].append(fill)
        groups = [(key, sorted(found, key=Fill.exchange_order)) for key, found in by_key.items()]
        return sorted(groups, key=lambda item: str(item[0]))


def conflict_outcome(key: PositionKey, conflict: ExecutionConflict) -> KeyOutcome:
    log.error("%s: recovered execution conflicts: %s", key, conflict)
    return KeyOutcome(key, Outcome.CONFLICT, detail=str(conflict))


@attrs.frozen
class Recovered:
    """What applying fetched executions did: how many were new per key, a conflict outcome per
    key whose batch hit an ``ExecutionConflict``, and the new executions of an unknown type."""

    counts: dict[PositionKey, int]
    conflicts: list[KeyOutcome]
    unknown: list[UnknownExecution]


def record_recovered(ledger: Ledger, groups: Iterable[tuple[PositionKey, list[Fill]]]) -> Recovered:
    """Apply fetched executions account key by account key, each in one atomic save (routed
    to the books of an account with several, docs/books.md#routing); a key whose batch
    conflicts gets nothing, the others go on."""
    recovered = Recovered({}, [], [])
    for key, key_fills in groups:
        try:
            result = ledger.record_account_fills(key, key_fills)
        except ExecutionConflict as conflict:
            recovered.conflicts.append(conflict_outcome(key, conflict))
            continue
        if result.applied:
            recovered.counts[key] = result.applied
        new = {r.exec_id for r in result.fills if not r.duplicate}
        recovered.unknown.extend(
            unknown_executions(key, [f for f in key_fills if f.exec_id in new])
        )
    return recovered


def unknown_executions(key: PositionKey, fills: Iterable[Fill]) -> list[UnknownExecution]:
    """The fills of kind ``unknown`` among ``fills`` (each exec_id once), each logged."""
    flagged: dict[str, UnknownExecution] = {}
    for fill in fills:
        if fill.kind is ExecKind.UNKNOWN and fill.exec_id not in flagged:
            log.warning(
                "%s: execution %s has a type posledger does not know (%s): recorded as moving "
                "size by its signed quantity; the next snapshots confirm or correct it",
                key,
                fill.exec_id,
                fill.venue_type,
                extra={"key": str(key), "exec_id": fill.exec_id, "venue_type": fill.venue_type},
            )
            flagged[fill.exec_id] = UnknownExecution(
                key, fill.exec_id, fill.venue_type, fill.side, fill.qty
            )
    return list(flagged.values())


def finish_round(
    venue: Venue | AsyncVenue,
    snapshot: Snapshot,
    recovered: Recovered,
    report: ReconcileReport,
    open_disagreements: tuple[Disagreement, ...] = (),
) -> SyncReport:
    result = SyncReport(
        snapshot,
        recovered.counts,
        tuple(recovered.conflicts),
        report,
        tuple(recovered.unknown),
        open_disagreements,
    )
    for caveat in snapshot.caveats:
        log.warning("sync round: %s", caveat, extra={"venue": venue.venue})
    log.info(
        "sync round",
        extra={
            "venue": venue.venue,
            "account": venue.account,
            "category": venue.category,
            "taken_at": snapshot.taken_at.isoformat(),
            "fills_recovered": result.fills_recovered,
            "corrections": len(report.corrections),
            "suspects": len(report.suspects),
            "conflicts": len(recovered.conflicts),
            "unknown_executions": len(recovered.unknown),
            "caveats": len(snapshot.caveats),
        },
    )
    return result


class Backoff:
    """Exponential backoff with jitter after failed reads, capped; reset by a good round."""

    def __init__(self, interval: timedelta, max_backoff: timedelta) -> None:
        self.interval = interval
        self.max_backoff = max_backoff
        self.failures = 0
        self.delay = interval

    @contextlib.contextmanager
    def pacing(self, staleness: Callable[[], timedelta | None]) -> Iterator[None]:
        """Around one round of a loop: a failure that wrote nothing (:data:`RETRIED`) is
        logged and backed off, never treated as flat and never ending the loop; afterwards
        ``delay`` is the pause before the next round. Refused credentials
        (:class:`ExchangeAuthFailed`) end the loop: no retry can fix a key."""
        try:
            yield
        except ExchangeAuthFailed as error:
            log.error("sync stopped: the exchange refused the credentials (%s)", error)
            raise
        except RETRIED as error:
            self.delay = self.failed(error, staleness())
        else:
            self.delay = self.succeeded()

    def succeeded(self) -> timedelta:
        self.failures = 0
        return self.interval

    def failed(self, error: PosledgerError, staleness: timedelta | None) -> timedelta:
        self.failures += 1
        base: timedelta = self.interval * 2 ** min(self.failures - 1, 16)
        delay = min(base, self.max_backoff) * random.uniform(0.5, 1.0)
        log.warning(
            "sync round failed (%s); retrying in %.1fs",
            error,
            delay.total_seconds(),
            extra={
                "failures": self.failures,
                "staleness_s": None if staleness is None else staleness.total_seconds(),
            },
        )
        return delay


@attrs.frozen
class FetchSnapshot:
    """Step: the venue's complete snapshot."""


@attrs.frozen
class FetchExecutions:
    """Step: the venue's executions in ``[since, until]``."""

    since: datetime
    until: datetime


@attrs.frozen
class ReadPositions:
    """Step: every position the ledger holds (account views), and every key's own state (each
    book's, whose knowledge point is its own)."""


@attrs.frozen
class RecordRecovered:
    """Step: fetched executions applied key by key (:func:`record_recovered`)."""

    groups: list[tuple[PositionKey, list[Fill]]]


@attrs.frozen
class Reconcile:
    """Step: the ledger reconciled with the snapshot, except the keys whose recovery conflicted."""

    snapshot: Snapshot
    now: datetime
    policy: ReconcilePolicy
    skip: Sequence[PositionKey]


@attrs.frozen
class ReadStates:
    """Step: the ledger's states of ``keys`` (those a round left unsettled), None for unknown."""

    keys: Sequence[PositionKey]


@attrs.frozen
class FetchMoney:
    """Step: the venue's money records of the closes in ``[since, until]``."""

    since: datetime
    until: datetime


@attrs.frozen
class FindMoneyDue:
    """Step: which of these keys' last closed lifecycles are due for a money check."""

    states: Sequence[PositionState]
    now: datetime
    settings: MoneyChecks


@attrs.frozen
class CheckMoney:
    """Step: the due lifecycles checked against the records read for them."""

    dues: Sequence[MoneyDue]
    records: Sequence[MoneyRecord]
    settings: MoneyChecks
    now: datetime
    runs: Mapping[tuple[PositionKey, int], tuple[Decimal, int]]


VenueStep = FetchSnapshot | FetchExecutions | FetchMoney
LedgerStep = ReadPositions | RecordRecovered | Reconcile | ReadStates | FindMoneyDue | CheckMoney
Step = VenueStep | LedgerStep
Round = Generator[Step, Any, T]
"""Yields a round's steps, is sent each step's answer, returns the round's value."""


def on_ledger(ledger: Ledger, step: LedgerStep) -> Any:
    """A ledger step carried out. Blocking, so the asyncio synchronizer runs it on the ledger's
    worker thread, queued with the bot's own commands."""
    if isinstance(step, ReadPositions):
        return ledger.account_positions(), ledger.positions()
    if isinstance(step, RecordRecovered):
        return record_recovered(ledger, step.groups)
    if isinstance(step, ReadStates):
        return [ledger.account_position(key) for key in step.keys]
    if isinstance(step, FindMoneyDue):
        single = [s for s in step.states if not ledger.has_books(s.key)]
        found = (due(s, ledger.history(s.key), step.now, step.settings) for s in single)
        return [item for item in found if item is not None]
    if isinstance(step, CheckMoney):
        return check_due(ledger, step.dues, step.records, step.settings, step.now, step.runs)
    return ledger.reconcile(step.snapshot, now=step.now, policy=step.policy, skip=step.skip)


class SyncRounds(ABC, Generic[LedgerT, VenueT]):
    """What the blocking and the asyncio synchronizer share: their settings, the round, the
    backoff between rounds and when the last complete snapshot was taken."""

    def __init__(
        self,
        ledger: LedgerT,
        venue: VenueT,
        *,
        policy: ReconcilePolicy | None = None,
        lookback: timedelta = timedelta(days=7),
        interval: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] | None = None,
        observers: Iterable[SyncObserver] = (),
        money: MoneyChecks | Literal["auto"] | None = "auto",
    ) -> None:
        reads_money = callable(getattr(venue, "fetch_money", None))
        if money == "auto":
            money = MoneyChecks() if reads_money else None
        elif money is not None and not reads_money:
            raise InvalidInput(f"{type(venue).__name__} cannot read money records (fetch_money)")
        self.ledger = ledger
        self.venue = venue
        self.money = money
        """The money check of closed lifecycles (docs/design.md#money): by default on when the
        venue reads money records (``fetch_money``); off when None."""
        self._money_checked: dict[PositionKey, int] = {}
        self._money_runs: dict[tuple[PositionKey, int], tuple[Decimal, int]] = {}
        """Differences seen and not yet confirmed, per lifecycle: (difference, times seen)."""
        self.observers = tuple(observers)
        """Told of every round done or failed (docs/operations.md); none by default."""
        self.policy = policy or self.blocking_ledger.policy
        self.lookback = lookback
        self.backoff = Backoff(interval, max_backoff)
        self.clock = clock or self.blocking_ledger.clock
        self.last_good_snapshot_at: datetime | None = None

    @property
    @abstractmethod
    def blocking_ledger(self) -> Ledger:
        """The :class:`~posledger.Ledger` behind ``ledger``: its policy and clock are the
        defaults."""

    @property
    def consecutive_failures(self) -> int:
        return self.backoff.failures

    def staleness(self, now: datetime | None = None) -> timedelta | None:
        """Time since the last complete snapshot; None before the first one."""
        if self.last_good_snapshot_at is None:
            return None
        return aware_utc(now or self.clock(), "now") - self.last_good_snapshot_at

    def _round(self, now: datetime | None) -> Round[SyncReport]:
        """One round as a plan: snapshot, recovery of missed executions, reconciliation, each
        on account keys (an account's books together, docs/books.md)."""
        when = aware_utc(now or self.clock(), "now")
        snapshot: Snapshot = yield FetchSnapshot()
        states: list[PositionState]
        states, books = yield ReadPositions()
        plan = RecoveryPlan.for_round(
            {s.key: s for s in states}, snapshot, when, self.policy, self.lookback, books
        )
        fills: list[Fill] = [] if plan.since is None else (yield FetchExecutions(plan.since, when))
        self.last_good_snapshot_at = snapshot.taken_at
        recovered: Recovered = yield RecordRecovered(plan.assign(snapshot, fills))
        skip = [c.key for c in recovered.conflicts]
        report: ReconcileReport = yield Reconcile(snapshot, when, self.policy, skip)
        unsettled = unsettled_keys(report.outcomes + tuple(recovered.conflicts))
        states = (yield ReadStates(unsettled)) if unsettled else []
        result = finish_round(
            self.venue, snapshot, recovered, report, disagreements(snapshot, states)
        )
        if self.money is not None:
            states = list(plan.states.values())
            try:
                money = yield from self._money_round(states, snapshot, when, self.money)
                result = attrs.evolve(result, money=tuple(money))
            except ExchangeAuthFailed:
                raise
            except ExchangeUnavailable as error:  # the size is done; money waits for next round
                log.warning("money check not run, its read failed: %s", error)
                result = attrs.evolve(result, money_failure=str(error))
        notify(self.observers, methodcaller("round_done", self, result))
        return result

    def _money_round(
        self, states: list[PositionState], snapshot: Snapshot, when: datetime, settings: MoneyChecks
    ) -> Round[list[MoneyOutcome]]:
        """The money check of the lifecycles due (docs/design.md#money): their executions and
        the venue's money records read completely first (a failed read writes nothing), then
        their funding rows recorded and each lifecycle checked."""
        fresh = candidates(states, self._money_checked, when, settings.lookback)
        dues: list[MoneyDue] = (yield FindMoneyDue(fresh, when, settings)) if fresh else []
        if not dues:
            return []
        since, until = min(d.since for d in dues), max(d.until for d in dues)
        fills: list[Fill] = yield FetchExecutions(since, until)
        records: list[MoneyRecord] = yield FetchMoney(since, until)
        funding = funding_of(dues, fills, snapshot)
        if funding:
            recovered: Recovered = yield RecordRecovered(funding)
            conflicted = {c.key for c in recovered.conflicts}
            dues = [item for item in dues if item.key not in conflicted]
        runs = dict(self._money_runs)
        outcomes: list[MoneyOutcome] = yield CheckMoney(dues, records, settings, when, runs)
        for outcome in outcomes:
            lifecycle = (outcome.key, outcome.lifecycle)
            if outcome.settled:
                self._money_checked[outcome.key] = outcome.lifecycle
                self._money_runs.pop(lifecycle, None)
            else:
                self._money_runs[lifecycle] = (outcome.check.difference, outcome.seen)
        return outcomes

    @contextlib.contextmanager
    def reporting_failure(self) -> Iterator[None]:
        """Around one round: its observers hear of the error it raises (which goes on)."""
        try:
            yield
        except Exception as error:
            notify(self.observers, methodcaller("round_failed", self, error))
            raise


class Synchronizer(SyncRounds[Ledger, Venue]):
    """Keeps one ledger in step with one venue account/category."""

    @property
    def blocking_ledger(self) -> Ledger:
        return self.ledger

    def run_once(self, now: datetime | None = None) -> SyncReport:
        """One round. Raises ExchangeUnavailable (writing nothing) if any read fails."""
        with self.reporting_failure():
            return run(self._round(now), self._answer)

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Run rounds every ``interval`` until ``stop`` is set; on a failed read or an unreachable
        or contended store back off exponentially (with jitter) up to ``max_backoff``, never
        treating a failure as flat and never letting it end the loop. Refused credentials
        (:class:`~posledger.ExchangeAuthFailed`) are raised: the loop stops."""
        stop = stop or threading.Event()
        while not stop.is_set():
            with self.backoff.pacing(self.staleness):
                self.run_once()
            stop.wait(self.backoff.delay.total_seconds())

    def _answer(self, step: Step) -> Any:
        if isinstance(step, FetchSnapshot):
            return self.venue.fetch_snapshot()
        if isinstance(step, FetchExecutions):
            return self.venue.fetch_executions(step.since, step.until)
        if isinstance(step, FetchMoney):
            return self.venue.fetch_money(step.since, step.until)  # type: ignore[attr-defined]
        return on_ledger(self.ledger, step)


def _knowledge_points(
    views: Mapping[PositionKey, PositionState], books: Iterable[PositionState]
) -> dict[PositionKey, datetime]:
    """Since when each account key may have missed executions: the earliest point of its
    books, as each book's bot hears only of its own executions (another book's later fill
    says nothing of them); an account without books has only its own."""
    points = {key: _knowledge_point(state) for key, state in views.items()}
    for book in books:
        account = book.key.account_key
        if account in points:
            points[account] = min(points[account], _knowledge_point(book))
    return points


def _knowledge_point(state: PositionState) -> datetime:
    """Since when the ledger may have missed executions of this key."""
    if state.last_fill_time is not None:
        return state.last_fill_time
    if state.pending_orders:
        return min(order.requested_at for order in state.pending_orders)
    return state.updated_at
