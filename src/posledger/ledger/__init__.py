"""The imperative shell: load state, call a pure decision, save the events, retry on conflict.

Every save carries the version the decision was computed against; if another writer got there
first, the store refuses it (eventsourcing's ``IntegrityError``), the state is reloaded and the
decision recomputed from scratch, never re-applied. States are cached in process and kept
coherent by following the application's notification log, so queries see other processes'
writes and an agreeing reconciliation costs no per-key reads.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar, cast

import attrs
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)

from posledger.core.decide import (
    check_fill_key,
    decide_order_end,
    decide_request,
    preview_fills,
    register,
)
from posledger.core.errors import (
    ConcurrencyError,
    ExecutionConflict,
    InvalidInput,
)
from posledger.core.events import (
    POSITION_TOPICS,
    ExecutionEvent,
    ExecutionSeen,
    KeyRegistered,
    PositionEvent,
    marker_id,
)
from posledger.core.model import (
    Fill,
    PositionKey,
    Side,
    Snapshot,
    Status,
    aware_utc,
    positive_decimal,
)
from posledger.core.position import PositionState, evolve, key_of, project
from posledger.core.reconcile import (
    Judgement,
    KeyOutcome,
    ReconcilePolicy,
    ReconcileReport,
    decide_reconcile,
)
from posledger.store.application import LedgerApplication, open_application, storage_errors
from posledger.store.decoding import StoredEventDecoder
from posledger.store.encoding import StoredEventEncoder
from posledger.store.replay import (
    load_states,
    log_rows,
    registered_ids,
    registered_keys,
)
from posledger.store.snapshot import PositionSnapshot, project_from_store
from posledger.store.storage import StorageSettings, settings_for

log = logging.getLogger("posledger")

SEEN_CACHE_SIZE = 65_536
LOG_PAGE = 1_000
LOG_END = 2**63 - 1
"""No upper bound on a catch-up's read of the log (PostgreSQL's largest bigint)."""

T = TypeVar("T")
Clock = Callable[[], datetime]
Decision = tuple[list[Any], T, "PositionState | None"]
"""What a decision returns: the events to save, its own result, and the state after the events
when deciding already folded them (else None: the shell folds them)."""
Marker = tuple[Fill, uuid.UUID, str]
"""A new execution with its marker stream id and payload."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class FillResult:
    """What became of one execution: applied (and as which event), or a harmless duplicate."""

    exec_id: str
    duplicate: bool
    event: str | None
    overfill: Decimal


@attrs.frozen
class FillBatchResult:
    position: PositionState
    fills: tuple[FillResult, ...]

    @property
    def applied(self) -> int:
        return sum(1 for f in self.fills if not f.duplicate)


_REFUSED = object()
"""A command whose group transaction the store refused: recompute it on its own."""


@attrs.define
class _Command:
    """A queued command: its key, when, its decision, and (once run) its outcome: the state
    and the decision's result, an error to raise, or ``_REFUSED``."""

    key: PositionKey
    at: datetime
    decide: Callable[[PositionState], Any]
    outcome: Any = None


def _marker_payload(key: PositionKey, fill: Fill) -> str:
    return f"{key}|{fill.payload()}"


class Ledger:
    """An event-sourced position ledger. Open with :meth:`open`; close it (or use ``with``)."""

    def __init__(
        self,
        settings: StorageSettings,
        *,
        policy: ReconcilePolicy | None = None,
        clock: Clock | None = None,
        max_retries: int = 12,
        snapshot_every: int = 200,
    ) -> None:
        self.settings = settings
        self.snapshot_every = snapshot_every
        self.retry_budget_s = settings.timeout_s
        self.policy = policy or ReconcilePolicy()
        self.clock: Clock = clock or utc_now
        self.max_retries = max_retries
        self._lock = threading.RLock()
        self._states: dict[uuid.UUID, PositionState] = {}
        self._keys: dict[uuid.UUID, PositionKey] = {}
        self._every_key_known = False
        """``_keys`` holds every key of the store (catch-up and our own writes keep it so)."""
        self._seen: OrderedDict[uuid.UUID, str] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._log_position = 0
        self._unsnapshotted: set[uuid.UUID] = set()
        self._queue_changed = threading.Condition(threading.Lock())
        self._queue: list[_Command] = []
        self._committing = False
        self.conflict_retries = 0
        """Saves refused for a stale version and recomputed: an operational figure."""
        self.transactions = 0
        """Transactions written by commands; fewer than the commands when several threads'
        commands were committed together."""
        with self._storage_errors():
            self._app = open_application(settings)
            self._decoder = StoredEventDecoder(self._app.mapper)
            self._encoder = StoredEventEncoder(self._app.mapper)
            self._log_position = self._app.recorder.max_notification_id() or 0

    @classmethod
    def open(
        cls,
        url: str = "memory://",
        *,
        policy: ReconcilePolicy | None = None,
        clock: Clock | None = None,
        timeout: float = 5.0,
        max_retries: int = 12,
        snapshot_every: int = 200,
        create_tables: bool = True,
    ) -> Ledger:
        """Open (creating if needed) the ledger at ``url``: ``memory://``, ``sqlite:///path.db``
        or ``postgresql://user@host:port/db?schema=name``.

        ``timeout`` bounds each wait for the database; a decision refused because another writer
        changed the position is recomputed at least ``max_retries`` times and for at least
        ``timeout`` seconds before :class:`ConcurrencyError`. A key's state is snapshotted
        every ``snapshot_every`` events so loading it never replays its whole history. With
        ``create_tables=False`` the tables must exist (``posledger init-db URL``)."""
        return cls(
            settings_for(url, lock_timeout_s=timeout, create_tables=create_tables),
            policy=policy,
            clock=clock,
            max_retries=max_retries,
            snapshot_every=snapshot_every,
        )

    def close(self) -> None:
        """Snapshot the states this ledger changed since their last snapshot, so the next open
        loads one row per key instead of replaying their tails; then release the store. If the
        store is unavailable the snapshots are skipped (they are only derived data)."""
        try:
            if self.settings.scheme != "memory":
                with self._lock:
                    states = [self._states[s] for s in self._unsnapshotted if s in self._states]
                    self._snapshot_all(states)
        except (OperationalError, InterfaceError, InternalError, ProgrammingError) as error:
            log.warning("%s: snapshots on close skipped: %s", self.settings.description, error)
        finally:
            self._app.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.settings.description!r})"

    @property
    def application(self) -> LedgerApplication:
        """The eventsourcing application this ledger writes through: for read models and
        audits that share its connection (the only way to read a ``memory://`` store)."""
        return self._app

    # --- commands ------------------------------------------------------------------------

    def request_open(
        self,
        key: PositionKey,
        *,
        order_id: str,
        side: Side | str,
        qty: object,
        at: datetime | None = None,
        price: object = None,
    ) -> PositionState:
        """Record an order that is not reduce-only, before (or as) it is submitted."""
        return self._request(key, order_id, Side.parse(side), qty, at, price, reduce_only=False)

    def request_exit(
        self,
        key: PositionKey,
        *,
        order_id: str,
        qty: object,
        at: datetime | None = None,
        side: Side | str | None = None,
        price: object = None,
    ) -> PositionState:
        """Record a reduce-only order (TP/SL, aged-position exit). Its side is implied by the
        position; pass ``side`` only to exit a position the ledger does not know yet."""
        parsed = None if side is None else Side.parse(side)
        return self._request(key, order_id, parsed, qty, at, price, reduce_only=True)

    def record_fill(self, key: PositionKey, fill: Fill) -> FillResult:
        """Record one execution. A repeated ``exec_id`` is a no-op; a repeated ``exec_id`` with a
        different payload raises :class:`ExecutionConflict`."""
        return self.record_fills(key, [fill]).fills[0]

    def record_fills(self, key: PositionKey, fills: Sequence[Fill]) -> FillBatchResult:
        """Record executions of one key in one atomic save (a backfill, a WebSocket burst)."""
        self._check_fills(key, fills)
        at = _earliest(fills)

        fresh: list[Marker] = []

        def decide(state: PositionState) -> Decision[tuple[FillResult, ...]]:
            events, results, after, fresh[:] = self._decide_fills(key, fills, state)
            return events, results, after

        state, results = self._execute(key, at, decide, on_conflict=lambda: self._learn(key, fills))
        self._after_fills(key, results, fresh)
        return FillBatchResult(position=state, fills=results)

    def backfill(
        self,
        fills_by_key: Mapping[PositionKey, Sequence[Fill]],
        *,
        events_per_transaction: int = 20_000,
    ) -> dict[PositionKey, FillBatchResult]:
        """Import historical executions of many keys: for each key exactly the events
        ``record_fills(key, fills)`` would write (duplicates skipped, markers included), but
        saved for many keys per transaction of about ``events_per_transaction`` events. Every
        key it changed is snapshotted at the end, so the next load reads one row per key.
        Bad input anywhere raises :class:`InvalidInput` before anything is written."""
        if not isinstance(fills_by_key, Mapping):
            raise InvalidInput(f"expected a mapping of keys to fills, got {fills_by_key!r}")
        for key, fills in fills_by_key.items():
            self._check_fills(key, fills)
        chunks: list[list[tuple[PositionKey, Sequence[Fill]]]] = [[]]
        size = 0
        for key, fills in fills_by_key.items():
            if size >= events_per_transaction:
                chunks.append([])
                size = 0
            chunks[-1].append((key, fills))
            size += 2 * len(fills)
        with self._lock, self._storage_errors():
            self._catch_up()
            self._load_missing([key.stream_id for key in fills_by_key])
        results: dict[PositionKey, FillBatchResult] = {}
        for chunk in chunks:
            with self._lock, self._storage_errors():
                saved = self._backfill_chunk(chunk)
            if saved is None:  # refused: each key on its own learns duplicates, recomputes
                saved = {key: self.record_fills(key, fills) for key, fills in chunk}
            results.update(saved)
        with self._lock, self._storage_errors():
            self._snapshot_all([r.position for r in results.values() if r.applied])
        return results

    def _backfill_chunk(
        self, chunk: list[tuple[PositionKey, Sequence[Fill]]]
    ) -> dict[PositionKey, FillBatchResult] | None:
        """Save every key of ``chunk`` in one transaction; None if the store refused it
        (another writer, or exec_ids recorded before but not cached here)."""
        events: list[Any] = []
        decided = []
        for key, fills in chunk:
            # Loaded in bulk by backfill(): a key missing here is new (if another writer
            # registers it meanwhile, the store refuses this chunk and it is redone alone).
            stored = self._states.get(key.stream_id)
            registration = None if stored is not None else register(key, _earliest(fills))
            base = stored if stored is not None else evolve(None, registration)  # type: ignore[arg-type]
            key_events, results, after, fresh = self._decide_fills(key, fills, base)
            if key_events and registration is not None:
                events.append(registration)
            events += key_events
            decided.append((key, fresh, results, after, bool(key_events)))
        try:
            notification_ids = self._save(events) if events else []
        except IntegrityError:
            self.conflict_retries += 1
            for key, _ in chunk:
                self._states.pop(key.stream_id, None)
            return None
        self._advance_log(notification_ids)
        outcome = {}
        for key, fresh, results, state, saved in decided:
            if saved:
                self._states[key.stream_id] = state
                self._keys[key.stream_id] = key
                self._unsnapshotted.add(key.stream_id)
            self._after_fills(key, results, fresh)
            outcome[key] = FillBatchResult(position=state, fills=results)
        return outcome

    def _snapshot_all(self, states: list[PositionState]) -> None:
        """Snapshot ``states`` in one transaction (one by one if some exist already)."""
        if self._app.snapshots is None or not states:
            return
        try:
            self._app.snapshots.put([PositionSnapshot.take(state) for state in states])
        except IntegrityError:  # some were snapshotted already (another writer, or due)
            for state in states:
                with contextlib.suppress(IntegrityError):
                    self._app.snapshots.put([PositionSnapshot.take(state)])
        self._unsnapshotted.difference_update(state.key.stream_id for state in states)

    def _check_fills(self, key: PositionKey, fills: Sequence[Fill]) -> None:
        self._check_key(key)
        for fill in fills:
            if not isinstance(fill, Fill):
                raise InvalidInput(f"expected a Fill, got {type(fill).__name__}")
            check_fill_key(key, fill)
        if not fills:
            raise InvalidInput("record_fills needs at least one fill")

    def _decide_fills(
        self, key: PositionKey, fills: Sequence[Fill], state: PositionState
    ) -> tuple[list[Any], tuple[FillResult, ...], PositionState, list[Marker]]:
        """The events of recording ``fills`` (the position's, then one marker per new exec_id),
        what became of each fill, the state after them, and the new fills' markers."""
        fresh = self._fresh_fills(key, fills)
        decided, after = preview_fills(state, [fill for fill, _, _ in fresh])
        events: list[Any] = list(decided)
        applied = {e.exec_id: e for e in events if isinstance(e, ExecutionEvent)}
        results = tuple(
            FillResult(
                exec_id=f.exec_id,
                duplicate=f.exec_id not in applied,
                event=type(applied[f.exec_id]).__name__ if f.exec_id in applied else None,
                overfill=applied[f.exec_id].overfill if f.exec_id in applied else Decimal(0),
            )
            for f in _first_of_each(fills)
        )
        events += [
            ExecutionSeen(
                originator_id=marker,
                originator_version=1,
                timestamp=fill.exec_time,
                exec_id=fill.exec_id,
                stream_id=key.stream_id,
                payload=payload,
            )
            for fill, marker, payload in fresh
        ]
        return events, results, after, fresh

    def _after_fills(
        self, key: PositionKey, results: tuple[FillResult, ...], fresh: list[Marker]
    ) -> None:
        """Once saved: warn of overfills, and remember the new exec_ids."""
        for result in results:
            if result.overfill > 0:
                log.warning("%s: %s overfilled by %s", key, result.exec_id, result.overfill)
        for _, marker, payload in fresh:
            self._seen_put(marker, payload)

    def record_order_end(
        self, key: PositionKey, *, order_id: str, status: str, at: datetime | None = None
    ) -> PositionState:
        """An order ended without (full) fill: cancelled, rejected, expired."""
        when = self._time(at, "at")
        state, _ = self._execute(
            key,
            when,
            lambda s: (decide_order_end(s, order_id=order_id, status=status, at=when), None, None),
        )
        return state

    def reconcile(
        self,
        snapshot: Snapshot,
        *,
        now: datetime | None = None,
        policy: ReconcilePolicy | None = None,
        skip: Collection[PositionKey] = (),
    ) -> ReconcileReport:
        """Judge every key the snapshot covers (but those in ``skip``); write only explicit,
        auditable corrections."""
        if not isinstance(snapshot, Snapshot):
            raise InvalidInput(f"expected a Snapshot, got {type(snapshot).__name__}")
        when = self._time(now, "now")
        rules = policy or self.policy
        with self._lock, self._storage_errors():
            self._catch_up()
            self._know_every_key()
            keys = {k for k in self._keys.values() if snapshot.covers(k)}
            keys.update(snapshot.key_for(p) for p in snapshot.positions if p.size > 0)
            keys.difference_update(skip)
            self._load_missing([k.stream_id for k in keys])
            # Keys that agree need no save: judge them here against the states just caught up
            # with, the ones a save would be decided against.
            agreeing = {}
            for key in keys:
                state = self._states.get(key.stream_id)
                if state is not None:
                    judgement = decide_reconcile(state, snapshot, when, rules)
                    if not judgement.events:
                        agreeing[key] = judgement
        outcomes = []
        for key in sorted(keys, key=str):

            def judge(state: PositionState, key: PositionKey = key) -> Decision[Judgement]:
                judgement = decide_reconcile(state, snapshot, when, rules)
                return list(judgement.events), judgement, None

            judgement = agreeing.get(key) or self._execute(key, snapshot.taken_at, judge)[1]
            outcomes.append(
                KeyOutcome(
                    key=key,
                    outcome=judgement.outcome,
                    correction=judgement.correction,
                    events=tuple(type(e).__name__ for e in judgement.events),
                    detail=judgement.detail,
                )
            )
        return ReconcileReport(taken_at=snapshot.taken_at, outcomes=tuple(outcomes))

    # --- queries -------------------------------------------------------------------------

    def position(
        self, key: PositionKey, *, version: int | None = None, at: datetime | None = None
    ) -> PositionState | None:
        """The key's state now, at a stream ``version``, or as of business time ``at``
        (the events up to the first one stamped later than ``at``). None if never seen."""
        self._check_key(key)
        if version is not None and at is not None:
            raise InvalidInput("pass version= or at=, not both")
        with self._lock, self._storage_errors():
            if version is not None:
                return self._load(key.stream_id, version=version)
            if at is not None:
                when = aware_utc(at, "at")
                state: PositionState | None = None
                for event in self.history(key):
                    if event.timestamp > when:
                        break
                    state = evolve(state, event)
                return state
            self._catch_up()
            return self._state(key.stream_id)

    def positions(self) -> list[PositionState]:
        """Every key the ledger has seen, in key order."""
        with self._lock, self._storage_errors():
            self._catch_up()
            self._load_missing()
            return sorted(self._states.values(), key=lambda s: str(s.key))

    def open_positions(self) -> list[PositionState]:
        """What the bot holds according to the ledger: status ``open``. Phantoms are closed by
        reconciliation, never listed here once corrected."""
        return [s for s in self.positions() if s.status is Status.OPEN]

    def keys(self) -> list[PositionKey]:
        with self._lock, self._storage_errors():
            self._catch_up()
            self._know_every_key()
            return sorted(self._keys.values(), key=str)

    def history(self, key: PositionKey) -> list[PositionEvent]:
        """The key's events, oldest first."""
        self._check_key(key)
        with self._storage_errors():
            return list(self._app.events.get(key.stream_id))  # type: ignore[arg-type]

    # --- shell machinery -----------------------------------------------------------------

    def _request(
        self,
        key: PositionKey,
        order_id: str,
        side: Side | None,
        qty: object,
        at: datetime | None,
        price: object,
        *,
        reduce_only: bool,
    ) -> PositionState:
        if not isinstance(order_id, str):
            raise InvalidInput(f"order_id must be a string, got {order_id!r}")
        amount = positive_decimal(qty, "qty")
        limit = None if price is None else positive_decimal(price, "price")
        when = self._time(at, "at")
        state, _ = self._execute(
            key,
            when,
            lambda s: (
                decide_request(
                    s,
                    order_id=order_id,
                    side=side,
                    qty=amount,
                    price=limit,
                    at=when,
                    reduce_only=reduce_only,
                ),
                None,
                None,
            ),
        )
        return state

    def _execute(
        self,
        key: PositionKey,
        at: datetime,
        decide: Callable[[PositionState], Decision[T]],
        on_conflict: Callable[[], None] | None = None,
    ) -> tuple[PositionState, T]:
        """Load, decide, save; on a version conflict reload and decide again.

        Group commit: the command joins a queue, and whichever caller holds the ledger's lock
        decides every queued command (each against the state its predecessors in the queue
        left) and saves them all in one transaction; each caller returns once that
        transaction is durable, with its own result or error. If the store refuses the
        transaction, every command in it is recomputed on its own."""
        self._check_key(key)
        started = time.monotonic()
        command = _Command(key, at, decide)
        with self._queue_changed:
            self._queue.append(command)
            while command.outcome is None and self._committing:
                self._queue_changed.wait()
            leading = command.outcome is None
            if leading:
                self._committing = True
        if leading:
            self._commit_queue()
        outcome = command.outcome
        if isinstance(outcome, BaseException):
            with self._storage_errors():
                raise outcome
        if outcome is not _REFUSED:
            return cast("tuple[PositionState, T]", outcome)
        with self._lock, self._storage_errors():
            if on_conflict is not None:
                on_conflict()
        time.sleep(random.uniform(0, 0.002))
        return self._execute_alone(key, at, decide, on_conflict, started)

    def _commit_queue(self) -> None:
        """As the committing thread: run every queued command (ours among them) as one group,
        then wake the waiters; the commands queued meanwhile form the next group."""
        batch: list[_Command] = []
        try:
            with self._lock:
                with self._queue_changed:
                    batch, self._queue = self._queue, []
                self._run_batch(batch)
        finally:
            for interrupted in (c for c in batch if c.outcome is None):
                interrupted.outcome = ConcurrencyError(
                    f"{interrupted.key}: the thread saving this command was interrupted"
                )
            with self._queue_changed:
                self._committing = False
                self._queue_changed.notify_all()

    def _run_batch(self, batch: list[_Command]) -> None:
        """Decide each queued command, then save all their events in one transaction."""
        after: dict[uuid.UUID, PositionState] = {}
        saving: list[tuple[_Command, list[Any], PositionState, Any, int]] = []
        for command in batch:
            stream = command.key.stream_id
            try:
                stored = after[stream] if stream in after else self._state(stream)
                registration = None if stored is not None else register(command.key, command.at)
                base = stored if stored is not None else evolve(None, registration)  # type: ignore[arg-type]
                events, extra, state = command.decide(base)
                if not events:
                    command.outcome = (base, extra)
                    continue
                if registration is not None:
                    events = [registration, *events]
                if state is None:
                    state = project(stored, [e for e in events if isinstance(e, PositionEvent)])
                assert state is not None
            except Exception as error:
                command.outcome = error
                continue
            after[stream] = state
            saving.append((command, events, state, extra, stored.version if stored else 0))
        if not saving:
            return
        try:
            notification_ids = self._save(
                [event for _, events, _, _, _ in saving for event in events]
            )
        except IntegrityError:
            self.conflict_retries += len(saving)
            for command, *_ in saving:
                self._states.pop(command.key.stream_id, None)
                command.outcome = _REFUSED
            return
        except Exception as error:
            for command, *_ in saving:
                command.outcome = error
            return
        self.transactions += 1
        self._advance_log(notification_ids)
        for command, _, state, extra, _ in saving:
            self._states[command.key.stream_id] = state
            self._keys[command.key.stream_id] = command.key
            self._unsnapshotted.add(command.key.stream_id)
            command.outcome = (state, extra)
        for command, _, state, _, previous in saving:
            try:
                self._snapshot_if_due(previous, state)
            except Exception as error:
                command.outcome = error

    def _execute_alone(
        self,
        key: PositionKey,
        at: datetime,
        decide: Callable[[PositionState], Decision[T]],
        on_conflict: Callable[[], None] | None,
        started: float,
    ) -> tuple[PositionState, T]:
        """One command in its own transactions until it is saved or gives up."""
        attempt = 1
        while attempt < self.max_retries or time.monotonic() - started < self.retry_budget_s:
            attempt += 1
            with self._lock, self._storage_errors():
                stored = self._state(key.stream_id)
                registration = None if stored is not None else register(key, at)
                base = stored if stored is not None else evolve(None, registration)  # type: ignore[arg-type]
                events, extra, after = decide(base)
                if not events:
                    return base, extra
                if registration is not None:
                    events = [registration, *events]
                try:
                    notification_ids = self._save(events)
                except IntegrityError:
                    self.conflict_retries += 1
                    self._states.pop(key.stream_id, None)
                    if on_conflict is not None:
                        on_conflict()
                else:
                    self.transactions += 1
                    state = (
                        after
                        if after is not None
                        else project(stored, [e for e in events if isinstance(e, PositionEvent)])
                    )
                    assert state is not None
                    self._states[key.stream_id] = state
                    self._keys[key.stream_id] = key
                    self._unsnapshotted.add(key.stream_id)
                    self._advance_log(notification_ids)
                    self._snapshot_if_due(base.version if stored is not None else 0, state)
                    return state, extra
            time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))
        raise ConcurrencyError(
            f"{key}: gave up after {attempt} attempts in {time.monotonic() - started:.1f}s; "
            "other writers kept changing it"
        )

    def _save(self, events: list[Any]) -> list[int]:
        """``Application.save`` without its per-event protocol checks, aggregate collection and
        recordings (our events are plain frozen dataclasses, and the application has no save
        hooks): the same stored events in the same one transaction. Returns their notification
        ids."""
        stored = [self._encoder(event) for event in events]
        return list(self._app.recorder.insert_events(stored) or ())

    def _snapshot_if_due(self, previous_version: int, state: PositionState) -> None:
        """Snapshot the state we already hold when a save crossed a multiple of the interval.
        A concurrent writer's identical snapshot wins harmlessly."""
        every = self.snapshot_every
        if self._app.snapshots is None or state.version // every == previous_version // every:
            return
        with contextlib.suppress(IntegrityError):
            self._app.snapshots.put([PositionSnapshot.take(state)])
        self._unsnapshotted.discard(state.key.stream_id)

    def _fresh_fills(self, key: PositionKey, fills: Sequence[Fill]) -> list[Marker]:
        """Fills not recorded before, with their marker ids and payloads; raises on a known
        exec_id with another payload."""
        fresh = []
        offered: dict[str, str] = {}
        for fill in fills:
            payload = _marker_payload(key, fill)
            if fill.exec_id in offered:
                if offered[fill.exec_id] != payload:
                    raise ExecutionConflict(fill.exec_id, offered[fill.exec_id], payload)
                continue
            offered[fill.exec_id] = payload
            marker = marker_id(key.venue, key.account, fill.exec_id)
            recorded = self._seen.get(marker)
            if recorded is None:
                fresh.append((fill, marker, payload))
            elif recorded != payload:
                raise ExecutionConflict(fill.exec_id, recorded, payload)
        return fresh

    def _learn(self, key: PositionKey, fills: Sequence[Fill]) -> None:
        """After a refused save, learn which of these exec_ids the store already holds."""
        for fill in fills:
            marker = marker_id(key.venue, key.account, fill.exec_id)
            if marker in self._seen:
                continue
            for event in self._app.events.get(marker, limit=1):
                assert isinstance(event, ExecutionSeen)
                self._seen_put(marker, event.payload)

    def _seen_put(self, marker: uuid.UUID, payload: str) -> None:
        """Callers of a group commit remember their exec_ids after it, outside the ledger's
        lock (taking it would wait for the next group's commit): guard the cache itself."""
        with self._seen_lock:
            self._seen[marker] = payload
            self._seen.move_to_end(marker)
            while len(self._seen) > SEEN_CACHE_SIZE:
                self._seen.popitem(last=False)

    def _state(self, stream_id: uuid.UUID) -> PositionState | None:
        state = self._states.get(stream_id)
        if state is None:
            state = self._load(stream_id)
            if state is not None:
                self._states[stream_id] = state
                self._keys[stream_id] = state.key
        return state

    def _load(self, stream_id: uuid.UUID, version: int | None = None) -> PositionState | None:
        try:
            return self._app.repository.get(  # type: ignore[type-var]
                stream_id, version=version, projector_func=project_from_store
            )
        except AggregateNotFoundError:
            return None

    def _know_every_key(self) -> None:
        """Learn every key from its KeyRegistered event (an indexed read, not a log scan), once:
        opening a ledger reads no key, so a bot that touches a few of its thousands opens fast.
        Run after a catch-up; the log is followed from where the ledger opened it."""
        if not self._every_key_known:
            for stream, key in registered_keys(self._app).items():
                self._keys.setdefault(stream, key)
            self._every_key_known = True

    def _catch_up(self) -> None:
        """Apply what other writers (and other ledger objects) appended since we last looked."""
        while True:
            page = log_rows(self._app, self._log_position, LOG_END, POSITION_TOPICS, LOG_PAGE)
            for row in page:
                event = self._decoder(row[1], row[2], row[3], row[4])
                assert isinstance(event, PositionEvent)
                self._follow(event)
                self._log_position = row[0]
            if len(page) < LOG_PAGE:
                return

    def _follow(self, event: PositionEvent) -> None:
        stream = event.originator_id
        if isinstance(event, KeyRegistered):
            self._keys[stream] = key_of(event)
        state = self._states.get(stream)
        if state is None:
            if isinstance(event, KeyRegistered):
                self._states[stream] = evolve(None, event)
        elif event.originator_version == state.version + 1:
            self._states[stream] = evolve(state, event)
        elif event.originator_version > state.version + 1:
            del self._states[stream]

    def _advance_log(self, notification_ids: list[int]) -> None:
        """Skip re-reading our own save when nothing else was written in between."""
        ids = sorted(i for i in notification_ids if i is not None)
        if ids and ids[0] == self._log_position + 1 and ids[-1] - ids[0] == len(ids) - 1:
            self._log_position = ids[-1]

    def _load_missing(self, streams: Collection[uuid.UUID] | None = None) -> None:
        """Load the states not cached yet (of ``streams``, or of every key) in bulk. Every key's
        state names its key, so loading them all needs only the keys' stream ids."""
        every = streams is None
        if streams is None:
            streams = self._keys if self._every_key_known else registered_ids(self._app)
        missing = [s for s in streams if s not in self._states]
        if missing:
            for stream, state in load_states(self._app, missing).items():
                self._states[stream] = state
                self._keys[stream] = state.key
        if every:
            self._every_key_known = True

    def _check_key(self, key: object) -> None:
        if not isinstance(key, PositionKey):
            raise InvalidInput(f"expected a PositionKey, got {type(key).__name__}")

    def _time(self, value: datetime | None, what: str) -> datetime:
        return aware_utc(self.clock() if value is None else value, what)

    def _storage_errors(self) -> contextlib.AbstractContextManager[None]:
        return storage_errors(self.settings.description)


def _earliest(fills: Sequence[Fill]) -> datetime:
    return min(fill.exec_time for fill in fills)


def _first_of_each(fills: Sequence[Fill]) -> list[Fill]:
    seen: set[str] = set()
    unique = []
    for fill in fills:
        if fill.exec_id not in seen:
            seen.add(fill.exec_id)
            unique.append(fill)
    return unique
