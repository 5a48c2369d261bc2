"""An open-positions read model: one SQL row per position key, kept exactly once from the log.

Dashboards, reports and programs in other languages read positions with plain SQL, without
replaying events::

    SELECT symbol, idx, side, size, avg_entry_price, realized_pnl
      FROM posledger_open_positions            -- a view: posledger_positions WHERE status='open'
     WHERE account = 'main';

The table ``posledger_positions`` lives in the same database (and PostgreSQL schema) as the event
store. It is derived data: the projection folds each position event into the key's stored row
(its ``state`` column holds the whole :class:`PositionState`, so no event is ever re-read) and
writes the row together with eventsourcing's tracking record (the position in the notification
log) in one transaction. A notification processed a second time, by a restart or by a second
runner, fails on the tracking record's uniqueness and rolls back whole: every event is applied
exactly once, and a crash never leaves a half-applied one behind. A restart continues from the
tracking position, so after downtime :meth:`ReadModel.catch_up` applies exactly what was missed.

Columns (PostgreSQL types; SQLite stores every quantity as TEXT holding the exact decimal, never
REAL, and times as ISO 8601 text): ``stream_id`` (uuid, primary key), ``venue``, ``account``,
``category``, ``symbol`` (text), ``idx`` (integer), ``status`` (``flat``/``pending``/``open``),
``side`` (``buy``/``sell`` or NULL), ``size``, ``avg_entry_price``, ``realized_pnl``, ``fees``,
``funding`` (numeric), ``lifecycle``, ``pending_orders`` (integer: how many orders are working),
``version`` (bigint: the stream version the row reflects), ``updated_at`` (timestamptz),
``state`` (jsonb: the full state as `posledger.store.snapshot.encode` writes it, decimals as
strings). The tracking table is
``posledger_positions_tracking``.

Backends: on PostgreSQL :meth:`ReadModel.run_forever` follows new events live through
LISTEN/NOTIFY on the event store's channel; SQLite has no live subscription, so it polls.
``memory://`` keeps events inside the :class:`~posledger.Ledger` object that wrote them, so an
in-memory read model must share that ledger (:meth:`ReadModel.attach`): it sees only that
ledger's events (of this process), keeps its table in process, and starts from scratch when
recreated.

The views are eventsourcing tracking recorders and :class:`OpenPositionsProjection` is an
eventsourcing ``Projection``, so eventsourcing's own ``ProjectionRunner`` can drive them on
PostgreSQL too; :class:`ReadModel` adds page-wise catch-up, a race-free live loop, tolerance of
a second runner on the same view, and :class:`~posledger.StorageUnavailable` errors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import attrs
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    OperationalError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory, POPOTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import (
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteTrackingRecorder,
)

from posledger.core.errors import InvalidInput
from posledger.core.events import POSITION_TOPICS, PositionEvent
from posledger.core.model import PositionKey, Status
from posledger.core.position import PositionState, evolve
from posledger.store.application import LedgerApplication, is_missing_table, storage_errors
from posledger.store.snapshot import decode, encode
from posledger.store.storage import StorageSettings, settings_for

if TYPE_CHECKING:
    from posledger.ledger import Ledger

__all__ = [
    "COLUMNS",
    "OPEN_VIEW",
    "TABLE",
    "TRACKING_TABLE",
    "OpenPositionsProjection",
    "POPOPositionsView",
    "PositionsView",
    "ReadModel",
    "SQLitePositionsView",
]

TABLE = "posledger_positions"
READ_MODEL_TABLES_HINT = (
    "create them once, as a role that may: the read model's with "
    "ReadModel.open(url, create_tables=True), the ledger's with `posledger init-db URL`"
)
OPEN_VIEW = "posledger_open_positions"
TRACKING_TABLE = "posledger_positions_tracking"
COLUMNS: tuple[str, ...] = (
    "stream_id",
    "venue",
    "account",
    "category",
    "symbol",
    "idx",
    "status",
    "side",
    "size",
    "avg_entry_price",
    "realized_pnl",
    "fees",
    "funding",
    "lifecycle",
    "pending_orders",
    "version",
    "updated_at",
    "state",
)
"""The table's columns, in order; the open-positions view has the same ones."""

PAGE = 500
"""Notifications applied per transaction while catching up."""
SQLITE_MAX_PARAMS = 500

R = TypeVar("R")


def _plain(value: Decimal | None) -> str | None:
    """A decimal as fixed-point text for SQLite (exact, and never scientific notation)."""
    return None if value is None else format(value, "f")


# --- the views (materialised view + tracking, one per backend) -------------------------------


class PositionsView(TrackingRecorder):
    """The table of positions plus the tracking of what it has applied, in one store.

    ``write`` upserts rows and records the tracking object in ONE transaction, and fails with
    eventsourcing's ``IntegrityError`` (writing nothing) when that notification, or a later one,
    is already tracked: that is what makes the projection exactly-once."""

    def create_view(self) -> None:
        """Create the tables and the view if they are missing (idempotent)."""

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        raise NotImplementedError

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        raise NotImplementedError

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        raise NotImplementedError


class POPOPositionsView(POPOTrackingRecorder, PositionsView):
    """In-process view for ``memory://``: rows live in this object."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[UUID, PositionState] = {}

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        with self._database_lock:
            return {i: self._rows[i] for i in stream_ids if i in self._rows}

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        with self._database_lock:
            self._assert_tracking_uniqueness(tracking)
            for state in states:
                self._rows[state.key.stream_id] = state
            self._insert_tracking(tracking)

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        with self._database_lock:
            rows = list(self._rows.values())
        return [s for s in rows if not open_only or s.status is Status.OPEN]


class SQLitePositionsView(SQLiteTrackingRecorder, PositionsView):
    """The table in the event store's SQLite file. Quantities are TEXT holding the exact decimal
    (a NUMERIC or REAL column would round them through a binary float)."""

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        if not datastore.single_row_tracking:
            raise InvalidInput("the positions read model needs single-row tracking")
        self.insert_tracking_statement = (
            f"INSERT INTO {TRACKING_TABLE} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            f"WHERE {TRACKING_TABLE}.notification_id < :notification_id "
            "RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {TRACKING_TABLE} WHERE application_name=?"
        )
        names = ", ".join(COLUMNS)
        self.upsert_statement = (
            f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            "ON CONFLICT (stream_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        )

    def construct_create_table_statements(self) -> list[str]:
        quantity = "TEXT NOT NULL"
        return [
            f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
            "application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "stream_id TEXT PRIMARY KEY, venue TEXT NOT NULL, account TEXT NOT NULL, "
            "category TEXT NOT NULL, symbol TEXT NOT NULL, idx INTEGER NOT NULL, "
            "status TEXT NOT NULL, side TEXT, "
            f"size {quantity}, avg_entry_price TEXT, realized_pnl {quantity}, "
            f"fees {quantity}, funding {quantity}, "
            "lifecycle INTEGER NOT NULL, pending_orders INTEGER NOT NULL, "
            "version INTEGER NOT NULL, updated_at TEXT NOT NULL, state TEXT NOT NULL)",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_key "
            f"ON {TABLE} (venue, account, category, symbol, idx)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_status ON {TABLE} (status)",
            f"CREATE VIEW IF NOT EXISTS {OPEN_VIEW} AS SELECT {', '.join(COLUMNS)} "
            f"FROM {TABLE} WHERE status = 'open'",
        ]

    def create_view(self) -> None:
        self.create_table()

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        ids = [str(i) for i in stream_ids]
        found: dict[UUID, PositionState] = {}
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), SQLITE_MAX_PARAMS):
                chunk = ids[start : start + SQLITE_MAX_PARAMS]
                c.execute(
                    f"SELECT stream_id, state FROM {TABLE} "
                    f"WHERE stream_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for row in c.fetchall():
                    found[UUID(row["stream_id"])] = decode(json.loads(row["state"]))
        return found

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        # The transaction starts with a write, so it takes SQLite's write lock (waiting up to
        # the lock timeout) instead of failing on a snapshot another writer made stale.
        with self.datastore.transaction(commit=True) as c:
            if states:
                c.executemany(self.upsert_statement, [self._row(s) for s in states])
            self._insert_tracking(c, tracking)

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT state FROM {OPEN_VIEW if open_only else TABLE}")
            return [decode(json.loads(row["state"])) for row in c.fetchall()]

    @staticmethod
    def _row(state: PositionState) -> tuple[Any, ...]:
        key = state.key
        return (
            str(key.stream_id),
            key.venue,
            key.account,
            key.category,
            key.symbol,
            key.idx,
            state.status.value,
            state.side.value if state.side is not None else None,
            _plain(state.size),
            _plain(state.avg_entry_price),
            _plain(state.realized_pnl),
            _plain(state.fees),
            _plain(state.funding),
            state.lifecycle,
            len(state.pending_orders),
            state.version,
            state.updated_at.isoformat(),
            json.dumps(encode(state), separators=(",", ":")),
        )


_HAVE_PSYCOPG = importlib.util.find_spec("psycopg") is not None
if _HAVE_PSYCOPG:
    from eventsourcing.postgres import (
        PostgresApplicationRecorder,
        PostgresDatastore,
        PostgresFactory,
        PostgresTrackingRecorder,
    )
    from psycopg.rows import DictRow
    from psycopg.sql import SQL, Composed, Identifier, Literal
    from psycopg.types.json import Jsonb

    class PostgresPositionsView(PostgresTrackingRecorder, PositionsView):
        """The table in the event store's PostgreSQL schema, quantities as NUMERIC."""

        def __init__(
            self, datastore: PostgresDatastore, *, tracking_table_name: str = TRACKING_TABLE
        ) -> None:
            super().__init__(datastore, tracking_table_name=tracking_table_name)
            if not datastore.single_row_tracking:
                raise InvalidInput("the positions read model needs single-row tracking")
            schema, table = Identifier(datastore.schema), Identifier(TABLE)
            view = Identifier(OPEN_VIEW)
            columns = SQL(", ").join(Identifier(c) for c in COLUMNS)
            self.sql_create_statements += [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                    "stream_id uuid PRIMARY KEY, venue text NOT NULL, account text NOT NULL, "
                    "category text NOT NULL, symbol text NOT NULL, idx integer NOT NULL, "
                    "status text NOT NULL, side text, size numeric NOT NULL, "
                    "avg_entry_price numeric, realized_pnl numeric NOT NULL, "
                    "fees numeric NOT NULL, funding numeric NOT NULL, "
                    "lifecycle integer NOT NULL, pending_orders integer NOT NULL, "
                    "version bigint NOT NULL, updated_at timestamptz NOT NULL, "
                    "state jsonb NOT NULL)"
                ).format(schema=schema, table=table),
                SQL(
                    "CREATE UNIQUE INDEX IF NOT EXISTS {index} "
                    "ON {schema}.{table} (venue, account, category, symbol, idx)"
                ).format(index=Identifier(f"{TABLE}_key"), schema=schema, table=table),
                SQL("CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (status)").format(
                    index=Identifier(f"{TABLE}_status"), schema=schema, table=table
                ),
                # Only if missing: replacing it on every open would need its owner's rights
                # and an exclusive lock that blocks the dashboards reading it.
                SQL(
                    "DO $$ BEGIN IF to_regclass({name}) IS NULL THEN "
                    "CREATE VIEW {schema}.{view} AS "
                    "SELECT {columns} FROM {schema}.{table} WHERE status = 'open'; "
                    "END IF; END $$"
                ).format(
                    name=Literal(f'"{datastore.schema}"."{OPEN_VIEW}"'),
                    schema=schema,
                    view=view,
                    columns=columns,
                    table=table,
                ),
            ]
            self.upsert_statement: Composed = SQL(
                "INSERT INTO {schema}.{table} ({columns}) VALUES ({values}) "
                "ON CONFLICT (stream_id) DO UPDATE SET {updates}"
            ).format(
                schema=schema,
                table=table,
                columns=columns,
                values=SQL(", ").join(SQL("%s") for _ in COLUMNS),
                updates=SQL(", ").join(
                    SQL("{c} = EXCLUDED.{c}").format(c=Identifier(c)) for c in COLUMNS[1:]
                ),
            )
            self.select_states_statement = SQL(
                "SELECT state FROM {schema}.{table} WHERE stream_id = ANY(%s)"
            ).format(schema=schema, table=table)
            self.select_all_statement = SQL("SELECT state FROM {schema}.{table}").format(
                schema=schema, table=table
            )
            self.select_open_statement = SQL("SELECT state FROM {schema}.{view}").format(
                schema=schema, view=view
            )
            self.lock_timeout_statement = SQL("SET LOCAL lock_timeout = '{0}s'").format(
                datastore.lock_timeout
            )

        def create_view(self) -> None:
            self.create_table()

        # eventsourcing retries these ten times whatever the deadline; the read model bounds
        # its retries by the ledger's timeout instead (see ReadModel._call).
        def max_tracking_id(self, application_name: str) -> int | None:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                return self._max_tracking_id(application_name, curs)

        def has_tracking_id(self, application_name: str, notification_id: int | None) -> bool:
            return TrackingRecorder.has_tracking_id(self, application_name, notification_id)

        def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
            ids = list(stream_ids)
            if not ids:
                return {}
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.select_states_statement, (ids,))
                states = (decode(row["state"]) for row in curs.fetchall())
                return {s.key.stream_id: s for s in states}

        def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(self.lock_timeout_statement)
                if states:
                    curs.executemany(self.upsert_statement, [self._row(s) for s in states])
                self._insert_tracking(curs, tracking)

        def select_states(self, *, open_only: bool = False) -> list[PositionState]:
            statement = self.select_open_statement if open_only else self.select_all_statement
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(statement)
                rows: list[DictRow] = curs.fetchall()
                return [decode(row["state"]) for row in rows]

        @staticmethod
        def _row(state: PositionState) -> tuple[Any, ...]:
            key = state.key
            return (
                key.stream_id,
                key.venue,
                key.account,
                key.category,
                key.symbol,
                key.idx,
                state.status.value,
                state.side.value if state.side is not None else None,
                state.size,
                state.avg_entry_price,
                state.realized_pnl,
                state.fees,
                state.funding,
                state.lifecycle,
                len(state.pending_orders),
                state.version,
                state.updated_at,
                Jsonb(encode(state)),
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
    def attach(cls, ledger: Ledger) -> ReadModel:
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
        if _HAVE_PSYCOPG and isinstance(recorder, PostgresApplicationRecorder):
            self._follow_postgres(recorder, stop, poll_interval)
        elif isinstance(recorder, POPOApplicationRecorder):
            self._follow_memory(recorder, stop, poll_interval)
        else:
            applied = self.catch_up()
            while not stop.wait(0 if applied else poll_interval):
                applied = self.catch_up()

    def _follow_postgres(
        self, recorder: PostgresApplicationRecorder, stop: threading.Event, poll_interval: float
    ) -> None:
        """LISTEN first, then catch up, then wait for a NOTIFY (or the poll interval).

        eventsourcing's ``subscribe()`` pulls the log before its LISTEN is in place, so an event
        committed in between is not seen until the next one arrives; here nothing committed
        after LISTEN can be missed, and everything before it is read by the catch-up."""
        tick = min(poll_interval, 0.1)
        listen = SQL("LISTEN {0}").format(Identifier(recorder.channel_name))
        with _storage_errors(self.settings), recorder.datastore.get_connection() as conn:
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
                with contextlib.suppress(Exception):
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
    elif settings.scheme == "postgresql" and isinstance(factory, PostgresFactory):
        view = PostgresPositionsView(factory.datastore)
    else:  # pragma: no cover
        raise InvalidInput(f"no read model for {type(factory).__name__}")
    if create:
        _creating(view.create_view)
    return view


def _creating(call: Callable[[], R]) -> R:
    """Run DDL that other processes may be running at the same moment. PostgreSQL refuses the
    loser of such a race ("tuple concurrently updated" on ``CREATE OR REPLACE FUNCTION``, a
    unique violation in its catalog, the tracking table's first row): it tries again, and the
    second time finds everything in place."""
    attempts = 5
    for attempt in range(attempts):
        try:
            return call()
        except (IntegrityError, InternalError):
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _storage_errors(settings: StorageSettings) -> contextlib.AbstractContextManager[None]:
    return storage_errors(settings.description, READ_MODEL_TABLES_HINT)
