"""The projection that folds position events into rows, and :class:`ReadModel`, which runs it:
page-wise catch-up, a race-free live loop, and StorageUnavailable errors."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar
from uuid import UUID

import attrs
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    OperationalError,
    ProgrammingError,
    Tracking,
)
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.projection import Projection
from eventsourcing.sqlite import (
    SQLiteFactory,
)

from posledger.core.errors import InvalidInput
from posledger.core.events import POSITION_TOPICS, PositionEvent
from posledger.core.model import PositionKey
from posledger.core.position import PositionState, evolve
from posledger.store.application import LedgerApplication, is_missing_table, storage_errors
from posledger.store.readmodel.views import (
    TABLE,
    POPOPositionsView,
    PositionsView,
    SQLitePositionsView,
)
from posledger.store.storage import StorageSettings, settings_for


class OpenStore(Protocol):
    """What :meth:`ReadModel.attach` needs of a :class:`~posledger.Ledger` (the store layer
    does not import the ledger above it)."""

    @property
    def application(self) -> LedgerApplication: ...

    settings: StorageSettings


PAGE = 500
"""Notifications applied per transaction while catching up."""

R = TypeVar("R")

READ_MODEL_TABLES_HINT = (
    "create them once, as a role that may: the read model's with "
    "ReadModel.open(url, create_tables=True), the ledger's with `posledger init-db --db URL`"
)

# --- the projection ---------------------------------------------------------------------------


class OpenPositionsProjection(Projection[PositionsView]):
    """Folds position events into the view's rows. Each call reads the keys' stored states, applies
    the events and writes rows + tracking in one transaction (``IntegrityError`` if the
    notification was already tracked: nothing is written)."""

    name = TABLE
    topics = POSITION_TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.process_events([domain_event], tracking)

    def process_events(self, domain_events: Sequence[Any], tracking: Tracking) -> int:
        """Apply consecutive notifications of the log, ``tracking`` being the last one's
        position. Returns how many events changed a row.

        Non-position events are ignored (but tracked). An event the stored row already reflects
        (its version is not newer) is skipped, so a row is never folded twice even before the
        tracking record refuses the write."""
        events = [e for e in domain_events if isinstance(e, PositionEvent)]
        stored = self.view.states({e.originator_id for e in events})
        changed: dict[UUID, PositionState] = {}
        applied = 0
        for event in events:
            stream = event.originator_id
            state = changed.get(stream) or stored.get(stream)
            if state is not None and event.originator_version <= state.version:
                continue
            changed[stream] = evolve(state, event)
            applied += 1
        self.view.write(list(changed.values()), tracking)
        return applied


# --- the runner -------------------------------------------------------------------------------


class ReadModel:
    """Keeps ``posledger_positions`` up to date with a store's event log, and reads it back.

    Open with :meth:`open` (its own connection to the store) or :meth:`attach` (sharing a
    ledger's, the only way for ``memory://``); close it or use ``with``."""

    def __init__(
        self,
        app: LedgerApplication,
        view: PositionsView,
        settings: StorageSettings,
        *,
        owns_app: bool,
    ) -> None:
        self.settings = settings
        self._app = app
        self._view = view
        self._owns_app = owns_app
        self._projection = OpenPositionsProjection(view=view)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, timeout: float = 5.0, create_tables: bool = True) -> ReadModel:
        """The read model of the store at ``url`` (``sqlite:///…`` or ``postgresql://…``),
        creating its tables and view if missing (``create_tables=False``: they must exist)."""
        settings = settings_for(url, lock_timeout_s=timeout)
        if settings.scheme == "memory":
            raise InvalidInput(
                "a memory:// store lives inside the Ledger object that writes it: "
                "use ReadModel.attach(ledger)"
            )
        flag = "y" if create_tables else "n"
        settings = attrs.evolve(settings, env={**settings.env, "CREATE_TABLE": flag})
        app: LedgerApplication | None = None
        try:
            with _storage_errors(settings):
                app = _creating(lambda: LedgerApplication.for_settings(settings))
                view = _view_for(app, create=create_tables, settings=settings)
        except BaseException:
            if app is not None:
                app.close()
            raise
        return cls(app, view, settings, owns_app=True)

    @classmethod
    def attach(cls, ledger: OpenStore) -> ReadModel:
        """A read model sharing ``ledger``'s connection to its store (closing the read model
        leaves the ledger open). For ``memory://`` the table is in this object and sees only
        the events of that ledger."""
        app: LedgerApplication = ledger.application
        create = str(app.env.get("CREATE_TABLE") or "y").lower() not in ("n", "no", "f", "0")
        with _storage_errors(ledger.settings):
            view = _view_for(app, create=create, settings=ledger.settings)
        return cls(app, view, ledger.settings, owns_app=False)

    def close(self) -> None:
        if self._owns_app:
            self._app.close()

    def __enter__(self) -> ReadModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReadModel({self.settings.description!r})"

    @property
    def view(self) -> PositionsView:
        return self._view

    @property
    def projection(self) -> OpenPositionsProjection:
        return self._projection

    @property
    def application_name(self) -> str:
        """The name tracking records carry: the event store's application."""
        return self._app.name

    # --- following the log ------------------------------------------------------------------

    def tracking_position(self) -> int:
        """The notification id the table reflects (0 before the first event)."""
        with _storage_errors(self.settings):
            return self._call(lambda: self._view.max_tracking_id(self._app.name)) or 0

    def catch_up(self, *, page: int = PAGE) -> int:
        """Apply every position event after the tracking position, ``page`` notifications per
        transaction. Returns how many events this call folded into rows (0: already up to
        date); pages another runner applied first are skipped and not counted."""
        applied = 0
        with _storage_errors(self.settings):
            position = self._call(lambda: self._view.max_tracking_id(self._app.name)) or 0
            while True:
                batch = self._app.recorder.select_notifications(
                    start=position, limit=page, topics=POSITION_TOPICS, inclusive_of_start=False
                )
                if not batch:
                    return applied
                count, position = self._apply(batch)
                applied += count
                if len(batch) < page:
                    return applied

    def process(self, notifications: Sequence[Notification]) -> int:
        """Apply these consecutive notifications (as read from the log) in one transaction;
        notifications already tracked change nothing. Returns how many events were applied."""
        if not notifications:
            return 0
        with _storage_errors(self.settings):
            return self._apply(notifications)[0]

    def run_forever(self, stop: threading.Event, poll_interval: float = 1.0) -> None:
        """Catch up, then follow new events until ``stop`` is set.

        PostgreSQL is followed live through LISTEN/NOTIFY on the event store's channel (and
        ``memory://`` through its recorder's listeners): the listener is registered *before*
        each catch-up, so an event committed at any moment wakes the loop, and the loop also
        catches up every ``poll_interval`` seconds whatever it heard. SQLite has no live
        subscription: it polls every ``poll_interval`` seconds. A stop takes effect within
        ``poll_interval`` (or 0.1 s, if shorter). Storage errors raise
        :class:`StorageUnavailable`; running it again continues where it stopped."""
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be > 0, got {poll_interval!r}")
        recorder = self._app.recorder
        if self.settings.scheme == "postgresql":
            self._follow_postgres(recorder, stop, poll_interval)
        elif isinstance(recorder, POPOApplicationRecorder):
            self._follow_memory(recorder, stop, poll_interval)
        else:
            applied = self.catch_up()
            while not stop.wait(0 if applied else poll_interval):
                applied = self.catch_up()

    def _follow_postgres(self, recorder: Any, stop: threading.Event, poll_interval: float) -> None:
        """LISTEN first, then catch up, then wait for a NOTIFY (or the poll interval).

        eventsourcing's ``subscribe()`` pulls the log before its LISTEN is in place, so an event
        committed in between is not seen until the next one arrives; here nothing committed
        after LISTEN can be missed, and everything before it is read by the catch-up."""
        from psycopg.sql import SQL, Identifier

        from posledger.store.postgres import GuardedPostgresDatastore

        tick = min(poll_interval, 0.1)
        listen = SQL("LISTEN {0}").format(Identifier(recorder.channel_name))
        datastore = recorder.datastore
        assert isinstance(datastore, GuardedPostgresDatastore)
        with _storage_errors(self.settings), datastore.listening_connection() as conn:
            with datastore.guard(conn):
                conn.execute(listen)
            try:
                self.catch_up()
                due = time.monotonic() + poll_interval
                while not stop.is_set():
                    for _ in conn.notifies(timeout=tick, stop_after=1):
                        due = 0.0
                    if time.monotonic() >= due and not stop.is_set():
                        self.catch_up()
                        due = time.monotonic() + poll_interval
            finally:
                with contextlib.suppress(Exception), datastore.guard(conn):
                    conn.execute("UNLISTEN *")

    def _follow_memory(
        self, recorder: POPOApplicationRecorder, stop: threading.Event, poll_interval: float
    ) -> None:
        woken = threading.Event()
        recorder.listen(woken)
        try:
            tick = min(poll_interval, 0.1)
            self.catch_up()
            due = time.monotonic() + poll_interval
            while not stop.is_set():
                woken.wait(tick)
                if (woken.is_set() or time.monotonic() >= due) and not stop.is_set():
                    woken.clear()
                    self.catch_up()
                    due = time.monotonic() + poll_interval
        finally:
            recorder.unlisten(woken)

    def _apply(self, notifications: Sequence[Notification]) -> tuple[int, int]:
        """(events applied, tracking position afterwards). A notification some other runner
        already applied is refused by the tracking record: then nothing was written here, and
        the position moves to where that runner got."""
        last = notifications[-1].id
        tracking = Tracking(self._app.name, last)
        events = [self._app.mapper.to_domain_event(n) for n in notifications]
        with self._lock:
            try:
                applied = self._call(lambda: self._projection.process_events(events, tracking))
            except IntegrityError:
                position = self._call(lambda: self._view.max_tracking_id(self._app.name)) or 0
                if position < last:
                    raise
                return 0, position
        return applied, last

    def _call(self, call: Callable[[], R]) -> R:
        """Retry transient connection errors while the ledger's timeout allows."""
        deadline = time.monotonic() + self.settings.timeout_s
        while True:
            try:
                return call()
            except (InterfaceError, OperationalError) as error:
                if is_missing_table(error) or time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)

    # --- reading the table back ---------------------------------------------------------------

    def positions(self) -> list[PositionState]:
        """Every key in the table, in key order (as :meth:`Ledger.positions`)."""
        with _storage_errors(self.settings):
            states = self._call(lambda: self._view.select_states())
        return sorted(states, key=lambda s: str(s.key))

    def open_positions(self) -> list[PositionState]:
        """The rows of the ``posledger_open_positions`` view (status ``open``), in key order."""
        with _storage_errors(self.settings):
            states = self._call(lambda: self._view.select_states(open_only=True))
        return sorted(states, key=lambda s: str(s.key))

    def position(self, key: PositionKey) -> PositionState | None:
        """The key's row, or None if the table has none."""
        if not isinstance(key, PositionKey):
            raise InvalidInput(f"expected a PositionKey, got {type(key).__name__}")
        with _storage_errors(self.settings):
            found = self._call(lambda: self._view.states([key.stream_id]))
        return found.get(key.stream_id)


def _view_for(app: LedgerApplication, *, create: bool, settings: StorageSettings) -> PositionsView:
    """The view for the application's store, sharing its connections."""
    factory = app.factory
    view: PositionsView
    if isinstance(factory, POPOFactory):
        return POPOPositionsView()
    if isinstance(factory, SQLiteFactory):
        view = SQLitePositionsView(factory.datastore)
    elif settings.scheme == "postgresql":
        from posledger.store.readmodel.postgres_view import PostgresPositionsView

        view = PostgresPositionsView(factory.datastore)  # type: ignore[attr-defined]
    else:  # pragma: no cover
        raise InvalidInput(f"no read model for {type(factory).__name__}")
    if create:
        _creating(view.create_view)
    return view


def _creating(call: Callable[[], R]) -> R:
    """Run DDL that other processes may be running at the same moment. PostgreSQL refuses the
    loser of such a race ("tuple concurrently updated" on ``CREATE OR REPLACE FUNCTION``, a
    unique violation in its catalog, the tracking table's first row, or "relation already
    exists" for the view both created): it tries again, and the second time finds everything in
    place."""
    attempts = 5
    for attempt in range(attempts):
        try:
            return call()
        except (IntegrityError, InternalError, ProgrammingError) as error:
            lost_race = not isinstance(error, ProgrammingError) or "already exists" in str(error)
            if attempt == attempts - 1 or not lost_race:
                raise
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _storage_errors(settings: StorageSettings) -> contextlib.AbstractContextManager[None]:
    return storage_errors(settings.description, READ_MODEL_TABLES_HINT)
