"""The imperative shell: the Ledger's public API over the pure core.

Each command validates its input, then hands a pure decision to the :class:`Writer`, which
loads the state, decides, saves, and recomputes on a conflict. Queries read the
:class:`StateCache`, caught up with the store's log first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import methodcaller
from types import TracebackType
from typing import Any, TypeVar

import attrs

from posledger.core.allocation import AllocationPolicy
from posledger.core.approval import (
    ApprovalResult,
    decide_approval,
    decide_rejection,
    operator_name,
)
from posledger.core.decide import (
    FillBatchResult,
    FillResult,
    Recording,
    check_fill_key,
    decide_order_end,
    decide_recording,
    decide_request,
    register,
)
from posledger.core.errors import InvalidInput, LedgerClosed, StorageUnavailable, shown
from posledger.core.events import PositionEvent
from posledger.core.model import (
    Fill,
    PositionKey,
    Side,
    Snapshot,
    Status,
    aware_utc,
    positive_decimal,
    text,
)
from posledger.core.money import (
    LedgerMoney,
    MoneyCheck,
    MoneyPolicy,
    MoneyRecord,
    decide_money,
    folded_money,
    ledger_money,
)
from posledger.core.position import PositionState, evolve
from posledger.core.reconcile import (
    Judgement,
    KeyOutcome,
    ReconcilePolicy,
    ReconcileReport,
    decide_reconcile,
)
from posledger.ledger.accounts import Accounts
from posledger.ledger.commit import Command, Decision, Writer
from posledger.ledger.observers import StoreObserver, notify
from posledger.ledger.seen import SeenExecutions
from posledger.ledger.states import StateCache
from posledger.store.application import (
    STORE_ERRORS,
    LedgerApplication,
    open_application,
    storage_errors,
)
from posledger.store.corruption import reading_stream
from posledger.store.gc_pause import gc_paused
from posledger.store.storage import StorageSettings, settings_for

log = logging.getLogger("posledger")

T = TypeVar("T")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
        observers: Iterable[StoreObserver] = (),
        allocation: AllocationPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.allocation = allocation or AllocationPolicy()
        """Where what belongs to no book goes, in accounts with several (docs/books.md)."""
        self.observers = tuple(observers)
        """Told of each write's duration and each unreachable store (docs/operations.md)."""
        self.policy = policy or ReconcilePolicy()
        self.clock: Clock = clock or utc_now
        self._lock = threading.RLock()
        self._closed = False
        """Serialises the state cache and the writer's groups; queries hold it while reading."""
        self._seen = SeenExecutions()
        with self._storage_errors():
            self._app = open_application(settings)
            self._cache = StateCache(self._app, snapshot_every)
        self._writer = Writer(
            self._app,
            self._cache,
            self._lock,
            self._storage_errors,
            max_retries=max_retries,
            retry_budget_s=settings.timeout_s,
            on_write=self._wrote if self.observers else None,
        )
        self._accounts = Accounts(self._app, self._cache, self._writer, self._seen, self.allocation)

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
        observers: Iterable[StoreObserver] = (),
        allocation: AllocationPolicy | None = None,
    ) -> Ledger:
        """Open (creating if needed) the ledger at ``url``: ``memory://``, ``sqlite:///path.db``
        or ``postgresql://user@host:port/db?schema=name``.

        ``timeout`` bounds each wait for the database; a decision refused because another writer
        changed the position is recomputed at least ``max_retries`` times and for at least
        ``timeout`` seconds before :class:`ConcurrencyError`. A key's state is snapshotted
        every ``snapshot_every`` events so loading it never replays its whole history. With
        ``create_tables=False`` the tables must exist (``posledger init-db --db URL``).
        ``observers`` (:class:`~posledger.ledger.observers.StoreObserver`) are told each
        write's duration and each ``StorageUnavailable``; one that raises is logged and
        ignored. ``allocation`` says where executions and corrections that belong to no book
        go in accounts with several books (docs/books.md)."""
        return cls(
            settings_for(url, lock_timeout_s=timeout, create_tables=create_tables),
            policy=policy,
            clock=clock,
            max_retries=max_retries,
            snapshot_every=snapshot_every,
            observers=observers,
            allocation=allocation,
        )

    def close(self) -> None:
        """Snapshot the states this ledger changed since their last snapshot, so the next open
        loads one row per key instead of replaying their tails; then release the store. If the
        store is unavailable the snapshots are skipped (they are only derived data). Closing
        twice is harmless; any other use of a closed ledger raises :class:`LedgerClosed`."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.settings.scheme != "memory":
                with self._lock:
                    self._cache.snapshot_changed()
        except STORE_ERRORS as error:
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

    @property
    def conflict_retries(self) -> int:
        """Saves refused for a stale version and recomputed: an operational figure."""
        return self._writer.conflict_retries

    @property
    def transactions(self) -> int:
        """Transactions written by commands; fewer than the commands when several threads'
        commands were committed together."""
        return self._writer.transactions

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
        """Record executions of one key in one atomic save (a WebSocket burst), applied in the
        order given: pass them in the exchange's order (:meth:`Fill.exchange_order`), as the
        venues' reads, the synchronizer and :meth:`backfill` do."""
        self._check_fills(key, fills)
        state, recording = self._writer.execute(
            key,
            _earliest(fills),
            self._recording(fills),
            on_conflict=lambda: self._seen.learn(self._app, key, fills),
        )
        self._remember(key, recording)
        return FillBatchResult(position=state, fills=recording.results)

    def record_account_fills(self, key: PositionKey, fills: Sequence[Fill]) -> FillBatchResult:
        """Record executions the exchange reported for an account key (a venue's history, a
        WebSocket) whose book the caller does not know: each goes to the book its order was
        requested in; one of no known order (a manual trade, a liquidation) by the ledger's
        ``allocation`` (docs/books.md#routing). An account without named books records them
        as :meth:`record_fills` does. The result's position is the account's, over its books."""
        self._check_fills(key, fills)
        account = key.account_key
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.know_every_key()
            books = self._accounts.has_books(account)
        if not books:
            return self.record_fills(account, fills)
        with self._storage_errors():
            return self._accounts.record(account, fills, _earliest(fills))

    @gc_paused()  # a bulk import: objects by the hundred thousand, all kept
    def backfill(
        self,
        fills_by_key: Mapping[PositionKey, Sequence[Fill]],
        *,
        events_per_transaction: int = 20_000,
    ) -> dict[PositionKey, FillBatchResult]:
        """Import historical executions of many keys: each key's fills in the order the
        exchange applied them (:meth:`Fill.exchange_order`: time, then Bybit's ``seq``), whatever
        order they come in, and for each key exactly the events ``record_fills`` of them in that
        order would write (duplicates skipped, markers included), but saved for many keys per
        transaction of about ``events_per_transaction`` events. Every key it changed is
        snapshotted at the end, so the next load reads one row per key. Bad input anywhere
        raises :class:`InvalidInput` before anything is written."""
        if not isinstance(fills_by_key, Mapping):
            raise InvalidInput(f"expected a mapping of keys to fills, got {shown(fills_by_key)}")
        for key, fills in fills_by_key.items():
            self._check_fills(key, fills)
        fills_by_key = {
            key: sorted(fills, key=Fill.exchange_order) for key, fills in fills_by_key.items()
        }
        chunks: list[list[tuple[PositionKey, Sequence[Fill]]]] = [[]]
        size = 0
        for key, fills in fills_by_key.items():
            if size >= events_per_transaction:
                chunks.append([])
                size = 0
            chunks[-1].append((key, fills))
            size += 2 * len(fills)
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.load_missing([key.stream_id for key in fills_by_key])
        results: dict[PositionKey, FillBatchResult] = {}
        for chunk in chunks:
            commands = [
                Command(key, _earliest(fills), self._recording(fills)) for key, fills in chunk
            ]
            with self._lock, self._storage_errors():
                # States were loaded in bulk above: a key missing here is new (if another writer
                # registers it meanwhile, the store refuses the chunk and each key is redone).
                saved = self._writer.run_group(
                    commands, self._cache.states.get, all_or_nothing=True, snapshots=False
                )
            if not saved:  # refused: each key on its own learns duplicates, recomputes
                results.update({key: self.record_fills(key, fills) for key, fills in chunk})
                continue
            for command in commands:
                state, recording = command.outcome
                self._remember(command.key, recording)
                results[command.key] = FillBatchResult(position=state, fills=recording.results)
        with self._lock, self._storage_errors():
            self._cache.snapshot_all([r.position for r in results.values() if r.applied])
        return results

    def record_order_end(
        self, key: PositionKey, *, order_id: str, status: str, at: datetime | None = None
    ) -> PositionState:
        """An order ended without (full) fill: cancelled, rejected, expired. Given an account
        key (a venue's order stream), the order's own book is found."""
        self._check_key(key)
        order_id = text(order_id, "order_id")
        status = text(status, "status")
        when = self._time(at, "at")
        if not key.book and self._has_books(key):  # an account key: the order's own book
            with self._lock, self._storage_errors():
                book = self._accounts.book_of_order(key, order_id, self._cache.state)
            key = key.in_book(book) if book else key

        def decide(state: PositionState) -> Decision[None]:
            events = decide_order_end(state, order_id=order_id, status=status, at=when)
            return Decision(events, None)

        return self._execute(key, when, decide)[0]

    @gc_paused()  # one snapshot may cover thousands of keys: a bulk load
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
            self._cache.catch_up()
            self._cache.know_every_key()
            # A book is judged as part of its account (docs/books.md#reconciliation).
            keys = {k.account_key for k in self._cache.keys.values() if snapshot.covers(k)}
            keys.update(snapshot.key_for(p) for p in snapshot.positions if p.size > 0)
            keys.difference_update(skip)
            accounts = (
                {key for key in keys if self._accounts.has_books(key)}
                if self._cache.keys.named_books
                else set()
            )
            single = keys - accounts if accounts else keys
            self._cache.load_missing([k.stream_id for k in single])
            # Keys that agree need no save: judge them here against the states just caught up
            # with, the ones a save would be decided against.
            agreeing = {}
            for key in single:
                state = self._cache.states.get(key.stream_id)
                if state is not None:
                    judgement = decide_reconcile(state, snapshot, when, rules)
                    if not judgement.events:
                        agreeing[key] = judgement

        def judge(state: PositionState) -> Decision[Judgement]:
            judgement = decide_reconcile(state, snapshot, when, rules)
            return Decision(judgement.events, judgement)

        def judge_account(view: PositionState, _: object) -> tuple[list[Any], Judgement]:
            judgement = decide_reconcile(view, snapshot, when, rules)
            return judgement.events, judgement

        outcomes = []
        for key in sorted(keys, key=str):
            if key in accounts:
                with self._storage_errors():
                    judgement = self._accounts.decide(key, snapshot.taken_at, judge_account)
            else:
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

    # --- approval of corrections (docs/design.md#approval) ------------------------------

    def proposals(self) -> list[PositionState]:
        """The keys an open proposal holds, oldest proposal first (``state.proposal`` says what
        approving it would correct, from what, to what, on which evidence)."""
        held = [state for state in self.positions() if state.proposal is not None]
        return sorted(held, key=lambda s: (s.proposal.proposed_at, str(s.key)))  # type: ignore[union-attr]

    def can_trade(self, key: PositionKey) -> bool:
        """False while a proposed correction of the key (of its account, in an account with
        books) waits for a person's decision."""
        self._check_key(key)
        state = self.account_position(key) if self._has_books(key) else self.position(key)
        return state is None or not state.held

    def approve(
        self, proposal_id: str, *, operator: str, at: datetime | None = None
    ) -> ApprovalResult:
        """Apply exactly the proposed correction, recorded as ``operator``'s decision; refused
        (the proposal withdrawn, ``applied`` False) when its evidence no longer stands."""
        name = operator_name(operator)
        key, when = self._proposal_key(proposal_id), self._time(at, "at")

        def decide(state: PositionState) -> Decision[ApprovalResult]:
            events, result = decide_approval(state, proposal_id, operator=name, at=when)
            return Decision(events, result)

        def decide_account(view: PositionState, _: object) -> tuple[list[Any], ApprovalResult]:
            events, result = decide_approval(view, proposal_id, operator=name, at=when)
            return events, result

        if self._has_books(key):
            with self._storage_errors():
                result = self._accounts.decide(key.account_key, when, decide_account)
        else:
            result = self._execute(key, when, decide)[1]
        log.log(
            logging.WARNING if result.applied else logging.INFO,
            "%s: proposal %s %s by %s%s",
            key,
            proposal_id,
            "approved and applied" if result.applied else "refused",
            name,
            f" ({result.detail})" if result.detail else "",
        )
        return result

    def reject(
        self, proposal_id: str, *, operator: str, reason: str, at: datetime | None = None
    ) -> None:
        """Close the proposal without correcting, recorded as ``operator``'s decision."""
        name, why = operator_name(operator), text(reason, "reason")
        key, when = self._proposal_key(proposal_id), self._time(at, "at")

        def decide(state: PositionState) -> Decision[None]:
            events = decide_rejection(state, proposal_id, operator=name, reason=why, at=when)
            return Decision(events, None)

        def decide_account(view: PositionState, _: object) -> tuple[list[Any], None]:
            return decide_rejection(view, proposal_id, operator=name, reason=why, at=when), None

        if self._has_books(key):
            with self._storage_errors():
                self._accounts.decide(key.account_key, when, decide_account)
        else:
            self._execute(key, when, decide)

    def _proposal_key(self, proposal_id: object) -> PositionKey:
        wanted = text(proposal_id, "proposal_id")
        for state in self.positions():
            if state.proposal is not None and state.proposal.proposal_id == wanted:
                return state.key
        raise InvalidInput(
            f"no open proposal {wanted!r} (decided already, or never made): "
            "posledger corrections lists the open ones"
        )

    # --- money reconciliation (docs/design.md#money) -------------------------------------

    def check_money(
        self,
        key: PositionKey,
        records: Sequence[MoneyRecord],
        *,
        since: datetime,
        until: datetime,
        policy: MoneyPolicy | None = None,
        at: datetime | None = None,
        record: bool = True,
    ) -> MoneyCheck:
        """Compare what the key realized from fills in ``[since, until]`` (a lifecycle, or a
        period) with the exchange's ``records`` (a complete read of that window): agreement
        writes nothing; a difference is one ``MoneyReconciled`` on the key's stream (with
        ``record`` False, only reported: nothing is written)."""
        self._check_key(key)
        window = (aware_utc(since, "since"), aware_utc(until, "until"))
        if window[1] < window[0]:
            raise InvalidInput(f"until {window[1]} is before since {window[0]}")
        for given in records:
            if not isinstance(given, MoneyRecord):
                raise InvalidInput(f"expected MoneyRecord, got {type(given).__name__}")
        rules, when = policy or MoneyPolicy(), self._time(at, "at")
        if not record:
            folded, money = folded_money(self.history(key), *window)
            state = folded or evolve(None, register(key, when))
            check = decide_money(state, money, records, window=window, policy=rules, at=when)
            return attrs.evolve(check, events=())  # reported, not written
        while True:
            history = self.history(key)
            money = ledger_money(history, *window)
            read = max(history[-1].originator_version if history else 0, 1)

            def decide(
                state: PositionState, money: LedgerMoney = money, read: int = read
            ) -> Decision[MoneyCheck | None]:
                if state.version != read:  # written since the history was read: read again
                    return Decision([], None)
                check = decide_money(state, money, records, window=window, policy=rules, at=when)
                return Decision(list(check.events), check)

            result = self._execute(key, when, decide)[1]
            if result is not None:
                return result

    # --- queries -------------------------------------------------------------------------

    def position(
        self, key: PositionKey, *, version: int | None = None, at: datetime | None = None
    ) -> PositionState | None:
        """The key's state now, at a stream ``version``, or as of business time ``at``
        (the events up to the first one stamped later than ``at``). None if never seen."""
        self._check_key(key)
        if version is not None and at is not None:
            raise InvalidInput("pass version= or at=, not both")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int) or version < 1
        ):
            raise InvalidInput(f"version must be an int >= 1, got {version!r}")
        with self._lock, self._storage_errors():
            if version is not None:
                return self._cache.load(key.stream_id, version=version)
            if at is not None:
                when = aware_utc(at, "at")
                state: PositionState | None = None
                for event in self.history(key):
                    if event.timestamp > when:
                        break
                    state = evolve(state, event)
                return state
            self._cache.catch_up()
            return self._cache.state(key.stream_id)

    def positions(self, *, book: str | None = None) -> list[PositionState]:
        """Every key the ledger has seen (only ``book``'s, if given), in key order."""
        wanted = None if book is None else PositionKey.book_name(book)
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.load_missing()
            states = self._cache.states.values()
            return sorted(
                (s for s in states if wanted is None or s.key.book == wanted),
                key=lambda s: str(s.key),
            )

    def account_position(self, key: PositionKey) -> PositionState | None:
        """The account's position for ``key``'s account key: its books summed (sizes, money,
        pending orders; the latest evidence), keyed by the account key; the key's own state
        in an account with one book (docs/books.md). None if never seen."""
        self._check_key(key)
        account = key.account_key
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.know_every_key()
            if not self._accounts.has_books(account):
                return self._cache.state(account.stream_id)
            return self._accounts.view(account, self._cache.state)

    def account_positions(self) -> list[PositionState]:
        """Every account key's position (:meth:`account_position`), in key order."""
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.load_missing()
            accounts = {key.account_key for key in self._cache.keys.values()}
            views = [self._accounts.view(account, self._cache.state) for account in accounts]
        return sorted((v for v in views if v is not None), key=lambda s: str(s.key))

    def books(self, key: PositionKey) -> list[PositionState]:
        """The states of every book of ``key``'s account key, in book order."""
        self._check_key(key)
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.know_every_key()
            states = self._accounts.states(key.account_key, self._cache.state)
        return [states[book] for book in sorted(states)]

    def open_positions(self) -> list[PositionState]:
        """What the bot holds according to the ledger: status ``open``. Phantoms are closed by
        reconciliation, never listed here once corrected."""
        return [s for s in self.positions() if s.status is Status.OPEN]

    def keys(self) -> list[PositionKey]:
        """Every key the store holds a stream for, in key order (learnt once, from the
        ``KeyRegistered`` events; kept whole by catch-up)."""
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.know_every_key()
            return sorted(self._cache.keys.values(), key=str)

    def history(self, key: PositionKey) -> list[PositionEvent]:
        """The key's events, oldest first; :class:`StoreCorrupted` if a stored one cannot be
        decoded."""
        self._check_key(key)
        with self._storage_errors(), reading_stream(key.stream_id, key):
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
        self._check_key(key)
        order_id = text(order_id, "order_id")
        amount = positive_decimal(qty, "qty")
        limit = None if price is None else positive_decimal(price, "price")
        when = self._time(at, "at")

        def decide(state: PositionState) -> Decision[None]:
            books = self._accounts.has_books(key.account_key)
            booked = self._accounts.order_book(key, order_id) if key.book or books else None
            events = decide_request(
                state,
                order_id=order_id,
                side=side,
                qty=amount,
                price=limit,
                at=when,
                reduce_only=reduce_only,
                booked=booked,
                books=books,
            )
            return Decision(events, None)

        return self._execute(key, when, decide)[0]

    def _recording(self, fills: Sequence[Fill]) -> Callable[[PositionState], Decision[Recording]]:
        def decide(state: PositionState) -> Decision[Recording]:
            recording = decide_recording(state, fills, self._seen.get)
            return Decision(recording.events, recording, recording.after)

        return decide

    def _remember(self, key: PositionKey, recording: Recording) -> None:
        """Once saved: warn of overfills, and remember the new exec_ids."""
        for result in recording.results:
            if result.overfill > 0:
                log.warning("%s: %s overfilled by %s", key, result.exec_id, result.overfill)
        self._seen.remember(recording.markers)

    def _execute(
        self,
        key: PositionKey,
        at: datetime,
        decide: Callable[[PositionState], Decision[T]],
    ) -> tuple[PositionState, T]:
        self._check_key(key)
        return self._writer.execute(key, at, decide)

    def _check_fills(self, key: PositionKey, fills: Sequence[Fill]) -> None:
        self._check_key(key)
        for fill in fills:
            if not isinstance(fill, Fill):
                raise InvalidInput(f"expected a Fill, got {type(fill).__name__}")
            check_fill_key(key, fill)
        if not fills:
            raise InvalidInput("record_fills needs at least one fill")

    def has_books(self, key: PositionKey) -> bool:
        """Whether ``key``'s account key has named books (docs/books.md)."""
        self._check_key(key)
        return self._has_books(key)

    def _has_books(self, key: PositionKey) -> bool:
        with self._lock, self._storage_errors():
            self._cache.catch_up()
            self._cache.know_every_key()
            return self._accounts.has_books(key.account_key)

    def _check_key(self, key: object) -> None:
        self._check_open()
        if not isinstance(key, PositionKey):
            raise InvalidInput(f"expected a PositionKey, got {type(key).__name__}")

    def _time(self, value: datetime | None, what: str) -> datetime:
        return aware_utc(self.clock() if value is None else value, what)

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerClosed(f"{self.settings.description}: this ledger is closed")

    def _storage_errors(self) -> contextlib.AbstractContextManager[None]:
        self._check_open()
        if not self.observers:
            return storage_errors(self.settings.description)
        return self._observed_storage_errors()

    @contextlib.contextmanager
    def _observed_storage_errors(self) -> Iterator[None]:
        """:func:`storage_errors`, telling the observers of each ``StorageUnavailable`` it
        raises: only those it made itself, so nested contexts count one failure once."""
        made = False
        try:
            with storage_errors(self.settings.description):
                try:
                    yield
                except STORE_ERRORS:
                    made = True
                    raise
        except StorageUnavailable as error:
            if made:
                notify(self.observers, methodcaller("storage_unavailable", error))
            raise

    def _wrote(self, seconds: float) -> None:
        notify(self.observers, methodcaller("write_seconds", seconds))


def _earliest(fills: Sequence[Fill]) -> datetime:
    return min(fill.exec_time for fill in fills)
