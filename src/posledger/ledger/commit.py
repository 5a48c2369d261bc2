"""The one path every write takes: load, decide, save; on a conflict, recompute.

Every save carries the versions its decisions were computed against; if another writer got
there first, the store refuses it (eventsourcing's ``IntegrityError``) and the commands are
decided again from reloaded states, never re-applied. Single commands, group commits and
backfill chunks all plan and save through :meth:`Writer.run_group`.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import attrs
from eventsourcing.persistence import IntegrityError

from posledger.core.decide import register
from posledger.core.errors import ConcurrencyError
from posledger.core.events import PositionEvent
from posledger.core.model import PositionKey
from posledger.core.position import PositionState, evolve, project
from posledger.ledger.states import StateCache
from posledger.store.application import LedgerApplication
from posledger.store.encoding import StoredEventEncoder

T = TypeVar("T")
Lookup = Callable[[uuid.UUID], PositionState | None]


@attrs.frozen
class Decision(Generic[T]):
    """What deciding a command gives: the events to save, the command's own result, and the
    state after the events when deciding already folded them (else None: they are folded)."""

    events: Sequence[Any]
    result: T
    after: PositionState | None = None


REFUSED = object()
"""The outcome of a command whose transaction the store refused: recompute it on its own."""


@attrs.define
class Command(Generic[T]):
    """A write waiting to be decided: its key, its business time (for a new key's
    registration), its decision, and once run its outcome: ``(state, result)``, an error to
    raise, or :data:`REFUSED`."""

    key: PositionKey
    at: datetime
    decide: Callable[[PositionState], Decision[T]]
    outcome: Any = None


@attrs.frozen
class Planned:
    """A decided command: the events to save (a new key's registration first), the state
    after them, and the version it was decided against (0 for a new key)."""

    command: Command[Any]
    events: list[Any]
    state: PositionState
    result: Any
    previous_version: int


class Writer:
    """Saves commands for one ledger object, committing the commands of concurrent callers
    together (group commit)."""

    def __init__(
        self,
        app: LedgerApplication,
        cache: StateCache,
        lock: threading.RLock,
        storage_errors: Callable[[], AbstractContextManager[None]],
        *,
        max_retries: int,
        retry_budget_s: float,
        on_write: Callable[[float], None] | None = None,
    ) -> None:
        self.app = app
        self.on_write = on_write
        """Told each written transaction's seconds (the ledger's observers), if any."""
        self.cache = cache
        self.lock = lock
        self.storage_errors = storage_errors
        self.max_retries = max_retries
        self.retry_budget_s = retry_budget_s
        self.encoder = StoredEventEncoder(app.mapper)
        self.queue: list[Command[Any]] = []
        self.queue_changed = threading.Condition(threading.Lock())
        self.committing = False
        self.conflict_retries = 0
        self.transactions = 0

    def execute(
        self,
        key: PositionKey,
        at: datetime,
        decide: Callable[[PositionState], Decision[T]],
        on_conflict: Callable[[], None] | None = None,
    ) -> tuple[PositionState, T]:
        """Decide and save one command; returns the key's state after it and its result.

        The command joins a queue, and whichever caller holds the lock decides every queued
        command (each against the state its predecessors in the queue left) and saves them all
        in one transaction; each caller returns once that transaction is durable, with its own
        result or error. If the store refuses the transaction, every command in it is
        recomputed on its own (``on_conflict`` first, under the lock)."""
        started = time.monotonic()
        command = Command(key, at, decide)
        with self.queue_changed:
            self.queue.append(command)
            while command.outcome is None and self.committing:
                self.queue_changed.wait()
            leading = command.outcome is None
            if leading:
                self.committing = True
        if leading:
            self._commit_queue()
        outcome = command.outcome
        if isinstance(outcome, BaseException):
            with self.storage_errors():
                raise outcome
        if outcome is not REFUSED:
            return cast("tuple[PositionState, T]", outcome)
        with self.lock, self.storage_errors():
            if on_conflict is not None:
                on_conflict()
        time.sleep(random.uniform(0, 0.002))
        return self._execute_alone(command, on_conflict, started)

    def _commit_queue(self) -> None:
        """As the committing thread: run every queued command (ours among them) as one group,
        then wake the waiters; the commands queued meanwhile form the next group."""
        batch: list[Command[Any]] = []
        try:
            with self.lock:
                with self.queue_changed:
                    batch, self.queue = self.queue, []
                self.run_group(batch, self.cache.state)
        finally:
            for interrupted in (c for c in batch if c.outcome is None):
                interrupted.outcome = ConcurrencyError(
                    f"{interrupted.key}: the thread saving this command was interrupted"
                )
            with self.queue_changed:
                self.committing = False
                self.queue_changed.notify_all()

    def _execute_alone(
        self,
        command: Command[T],
        on_conflict: Callable[[], None] | None,
        started: float,
    ) -> tuple[PositionState, T]:
        """One command in its own transactions until it is saved or gives up."""
        attempt = 1
        while attempt < self.max_retries or time.monotonic() - started < self.retry_budget_s:
            attempt += 1
            with self.lock, self.storage_errors():
                command.outcome = None
                self.run_group([command], self.cache.state, all_or_nothing=True)
                if command.outcome is not REFUSED:
                    return cast("tuple[PositionState, T]", command.outcome)
                if on_conflict is not None:
                    on_conflict()
            time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))
        raise ConcurrencyError(
            f"{command.key}: gave up after {attempt} attempts in "
            f"{time.monotonic() - started:.1f}s; other writers kept changing it"
        )

    def execute_many(
        self,
        at: datetime,
        decide: Callable[[Lookup], tuple[Mapping[PositionKey, Sequence[Any]], T]],
        on_conflict: Callable[[], None] | None = None,
    ) -> T:
        """One decision over several streams (an account's books, docs/books.md), saved in one
        transaction: ``decide`` reads states through the lookup it is given and returns each
        stream's events (a new stream's from version 2: it is registered here) and its result.
        If the store refuses the save, it is decided again from reloaded states."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            with self.lock, self.storage_errors():
                self.cache.catch_up()
                events, result = decide(self.cache.state)
                commands = [
                    Command(key, at, _decided(list(stream_events)))
                    for key, stream_events in events.items()
                    if stream_events
                ]
                if not commands or self.run_group(commands, self.cache.state, all_or_nothing=True):
                    return result
                if on_conflict is not None:
                    on_conflict()
            if attempt >= self.max_retries and time.monotonic() - started >= self.retry_budget_s:
                raise ConcurrencyError(
                    f"gave up after {attempt} attempts in {time.monotonic() - started:.1f}s; "
                    "other writers kept changing the account's books"
                )
            time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 5)))

    def run_group(
        self,
        commands: Sequence[Command[Any]],
        lookup: Lookup,
        *,
        all_or_nothing: bool = False,
        snapshots: bool = True,
    ) -> bool:
        """Decide each command against the state ``lookup`` gives (or the one an earlier command
        of the group left), then save every command's events in one transaction and set each
        outcome. A command whose decision fails gets its error as outcome and the others are
        saved, unless ``all_or_nothing``: then the error propagates and nothing is saved, as
        does a failed save. Returns False when the store refused the transaction (every
        outcome is then :data:`REFUSED`). Call with the lock held."""
        after: dict[uuid.UUID, PositionState] = {}

        def current(stream: uuid.UUID) -> PositionState | None:
            return after[stream] if stream in after else lookup(stream)

        planned: list[Planned] = []
        for command in commands:
            try:
                plan = self._plan(command, current)
            except Exception as error:
                if all_or_nothing:
                    raise
                command.outcome = error
                continue
            if plan is not None:
                after[command.key.stream_id] = plan.state
                planned.append(plan)
        if not planned:
            return True
        try:
            stored = [self.encoder(event) for plan in planned for event in plan.events]
            started = time.perf_counter()
            notification_ids = self.app.recorder.insert_events(stored) or ()
            if self.on_write is not None:
                self.on_write(time.perf_counter() - started)
        except IntegrityError:
            self.conflict_retries += len(planned)
            self.cache.forget(plan.command.key.stream_id for plan in planned)
            for plan in planned:
                plan.command.outcome = REFUSED
            return False
        except Exception as error:
            if all_or_nothing:
                raise
            for plan in planned:
                plan.command.outcome = error
            return True
        self.transactions += 1
        self.cache.advance_log(notification_ids)
        for plan in planned:
            self.cache.saved(plan.state)
            plan.command.outcome = (plan.state, plan.result)
        if snapshots:
            for plan in planned:
                try:
                    self.cache.snapshot_if_due(plan.previous_version, plan.state)
                except Exception as error:
                    if all_or_nothing:
                        raise
                    plan.command.outcome = error
        return True

    @staticmethod
    def _plan(command: Command[Any], current: Lookup) -> Planned | None:
        """Decide one command, registering its key if new; None (with the outcome set) when the
        decision writes nothing."""
        stored = current(command.key.stream_id)
        registration = None if stored is not None else register(command.key, command.at)
        base = stored if stored is not None else evolve(None, registration)  # type: ignore[arg-type]
        decision = command.decide(base)
        if not decision.events:
            command.outcome = (base, decision.result)
            return None
        events = list(decision.events)
        if registration is not None:
            events.insert(0, registration)
        state = decision.after
        if state is None:
            state = project(stored, [e for e in events if isinstance(e, PositionEvent)])
        assert state is not None
        return Planned(command, events, state, decision.result, stored.version if stored else 0)


def _decided(events: list[Any]) -> Callable[[PositionState], Decision[None]]:
    """A command whose events were decided already (with the others of its transaction)."""
    return lambda _: Decision(events, None)
