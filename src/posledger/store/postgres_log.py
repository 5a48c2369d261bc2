"""PostgreSQL writers that commit concurrently, and followers of the log that still read every
event exactly once, in order (docs/design.md#concurrent-writers).

eventsourcing makes every writer take the events table's EXCLUSIVE lock and hold it through the
commit, so that notification ids are given in commit order and a follower never passes an id
that a slower transaction fills in later. That serialises every process that writes to a store,
commit (and its disk flush) included. Here the lock covers only the handing out of ids:

1. **Reserve** (:data:`RESERVE_FUNCTION`): under a session advisory lock, released before the
   function returns, the writer's transaction is given its transaction id and then a block of
   consecutive notification ids. So between writers, transaction ids and notification ids are
   given in the same order: the earlier a writer's transaction id, the lower all its ids.
2. **Insert** the rows with those ids; every row records its transaction id (``xact_id``).
3. **Commit**, concurrently with other writers (PostgreSQL groups their flushes), then
   ``NOTIFY`` in a transaction of its own: a NOTIFY inside the write would serialise commits
   on PostgreSQL's notification queue lock.

A follower reads only rows whose transaction id is below the **high-water mark**
``pg_snapshot_xmin(pg_current_snapshot())``: every transaction below it has ended, committed or
rolled back. By (1) every transaction still running or yet to start holds ids above every row
the follower can read, so what it reads is a prefix of the log that nothing will be inserted
into: positions stay plain notification ids (eventsourcing's tracking records work unchanged),
the gap a rolled-back transaction leaves is final once below the mark, and a slow transaction
holds followers back, never makes them miss a row.

A writer of an older release takes the EXCLUSIVE lock; writers here take ROW EXCLUSIVE before
reserving, which conflicts with it, so old and new writers exclude each other and the order
still holds while a fleet is upgraded. Stores written before get the ``xact_id`` column with a
constant default of 0 (PostgreSQL adds it without rewriting the table): their rows are all
below any mark.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from psycopg import ClientCursor
from psycopg.sql import SQL, Composed, Identifier, Literal

from posledger.core.errors import ConfigurationError
from posledger.store.replay import KEY_INDEX, LOG_END, key_index_statement

R = TypeVar("R")
RETRY_PAUSE_S = 0.1
LOCK_NOT_AVAILABLE = "55P03"
ONE_QUERY_MAX = 64
"""Events up to which a transaction goes as one simple query; beyond, binding values on the
client costs more than the round trips it saves, and the rows go by COPY."""
STAGING_TABLE = "posledger_staged_events"
XACT_COLUMN = "xact_id"
HIGH_WATER_MARK = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"
"""Every transaction with a lower id has ended: a row below it is final (evaluated once per
statement, as an InitPlan)."""
FOLLOWABLE = f"{XACT_COLUMN} < {HIGH_WATER_MARK}"
"""The condition on the rows a follower of the log may read."""
RESERVE_LOCK_CLASS = 0x706C6467
"""The first key of the reserve function's advisory lock ('pldg'; the second is the events
table's oid), so it cannot meet an application's own advisory locks by chance."""

CREATE_LOCK_CLASS = 0x706C6463
"""The first key of the advisory lock that serialises table creation in one schema ('pldc';
the second is a hash of the schema's name)."""

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
"""The characters COPY's text format needs escaped in a value."""
_LITERAL_ESCAPES = str.maketrans({"\\": "\\\\", "'": "''"})


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES)


def _literal_text(value: str) -> str:
    """A SQL string literal of ``value`` (escape syntax: the same whatever
    standard_conforming_strings says)."""
    return f"E'{value.translate(_LITERAL_ESCAPES)}'"


def _literal_id(value: UUID | str) -> str:
    return f"'{value.hex}'::uuid" if isinstance(value, UUID) else f"{_literal_text(value)}::uuid"


def _copy_id(value: UUID | str) -> str:
    return value.hex if isinstance(value, UUID) else _copy_text(value)


def _within(deadline_s: float, call: Callable[[], R]) -> R:
    """``call``, retried after transient errors while ``deadline_s`` allows; a lock timeout
    is not retried (it used most of the deadline already, and says why)."""
    started = time.monotonic()
    while True:
        try:
            return call()
        except (InterfaceError, OperationalError) as error:
            pause = RETRY_PAUSE_S * random.uniform(0.5, 1.5)
            locked = getattr(error.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE
            if locked or time.monotonic() - started + pause >= deadline_s:
                raise
            time.sleep(pause)


def _bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """The method without eventsourcing's fixed retries, retried within ``self.deadline_s``."""
    unwrapped: Callable[..., Any] = getattr(method, "__wrapped__")  # noqa: B009

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _within(self.deadline_s, lambda: unwrapped(self, *args, **kwargs))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


def _create_what_is_missing(
    recorder: Any, create: Callable[[], None], names: list[str], also: Sequence[str] = ()
) -> None:
    """Run the recorder's CREATE statements only if one of the relations ``names`` (or its
    row type) is missing, or one of the SQL conditions ``also`` is true. ``CREATE INDEX IF NOT
    EXISTS`` takes a SHARE lock on the table even when the index exists, so running them at
    every open would wait for any writer holding a lock on the table, and queue every later
    writer behind the open."""
    datastore = recorder.datastore
    if getattr(datastore, "enable_db_functions", False):
        create()  # the insert function is (re)created with the statements
        return
    qualified = [f'"{datastore.schema}"."{name}"' for name in names]
    type_name = f'"{datastore.schema}"."{recorder.stored_event_type_name}"'
    checks = " OR ".join(["to_regclass(%s) IS NULL"] * len(qualified) + [f"({c})" for c in also])
    with datastore.get_connection() as conn:
        query = f"SELECT {checks} OR to_regtype(%s) IS NULL AS missing"
        missing = conn.execute(query, [*qualified, type_name]).fetchone()["missing"]
    if missing:
        create()
    else:
        datastore.register_type_adapters()


def _serialise_creation(datastore: Any, curs: Any) -> None:
    """First in a transaction of CREATE statements: wait for any other posledger process
    creating or upgrading this schema's tables. Concurrent creators otherwise deadlock: one
    holds a SHARE lock on the events table (its ``CREATE INDEX IF NOT EXISTS``) and waits for
    the insert function the other is replacing, while the other, holding that function, waits
    to ``ALTER`` the table (seen in CI with four bots opening a new store at once)."""
    schema_key = zlib.crc32(datastore.schema.encode()) & 0x7FFFFFFF
    curs.execute(
        SQL("SELECT pg_advisory_xact_lock({0}, {1})").format(
            Literal(CREATE_LOCK_CLASS), Literal(schema_key)
        ),
        prepare=False,
    )


class BoundedAggregateRecorder(PostgresAggregateRecorder):
    """Snapshots: the aggregate recorder with deadline-bounded retries."""

    deadline_s = 5.0
    insert_events = _bounded(PostgresAggregateRecorder.insert_events)
    select_events = _bounded(PostgresAggregateRecorder.select_events)

    def create_table(self) -> None:
        _create_what_is_missing(self, super().create_table, [self.events_table_name])

    def _create_table(self, curs: Any) -> None:
        _serialise_creation(self.datastore, curs)
        super()._create_table(curs)


class BoundedApplicationRecorder(PostgresApplicationRecorder):
    """Events and the notification log: concurrent writers, followers below the high-water
    mark (this module's docstring), deadline-bounded retries, every ordinary write in one round
    trip to the server and large imports by COPY. The tables also get the partial index bulk
    loading finds keys by."""

    deadline_s = 5.0
    select_events = _bounded(PostgresAggregateRecorder.select_events)
    followable = FOLLOWABLE
    """What :mod:`posledger.store.replay` adds to its reads of the log."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self._one_query_text: tuple[str, str, str] | None = None
        self.table = SQL("{0}.{1}").format(
            Identifier(datastore.schema), Identifier(events_table_name)
        )
        self.reserve_function = SQL("{0}.{1}").format(
            Identifier(datastore.schema), Identifier(f"{events_table_name}_reserve_ids")
        )
        self.qualified_table = f'"{datastore.schema}"."{events_table_name}"'
        """The table's name as SQL text (in literals: ``'<name>'::regclass``)."""
        self.sql_create_statements += [
            SQL(key_index_statement(events_table_name, self.qualified_table)),  # type: ignore[list-item]
            *self._concurrent_writer_statements(),
        ]

    def _concurrent_writer_statements(self) -> list[Composed]:
        """The ``xact_id`` column (0 for rows already stored, without a rewrite; each new row's
        own transaction id) and the reserve function."""
        column = Identifier(XACT_COLUMN)
        sequence = f'"{self.datastore.schema}"."{self.events_table_name}_notification_id_seq"'
        return [
            SQL("ALTER TABLE {0} ADD COLUMN IF NOT EXISTS {1} xid8 NOT NULL DEFAULT '0'").format(
                self.table, column
            ),
            SQL("ALTER TABLE {0} ALTER COLUMN {1} SET DEFAULT pg_current_xact_id()").format(
                self.table, column
            ),
            SQL(
                "CREATE OR REPLACE FUNCTION {0}(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$ "
                "DECLARE seq CONSTANT regclass := {1}::regclass; "
                "lock_key CONSTANT int := {2}::regclass::oid::int; last bigint; "
                "BEGIN "
                "PERFORM pg_advisory_lock({3}, lock_key); "
                "PERFORM pg_current_xact_id(); "
                "IF n = 1 THEN last := nextval(seq); "
                "ELSE last := setval(seq, nextval(seq) + n - 1); END IF; "
                "PERFORM pg_advisory_unlock({3}, lock_key); "
                "RETURN last - n + 1; "
                "END $$"
            ).format(
                self.reserve_function,
                Literal(sequence),
                Literal(self.qualified_table),
                RESERVE_LOCK_CLASS,
            ),
        ]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        if len(stored_events) > ONE_QUERY_MAX:
            return _within(self.deadline_s, lambda: self._insert_copied(stored_events))
        return _within(self.deadline_s, lambda: self._insert_one_query(stored_events))

    def _insert_one_query(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """The whole transaction and the NOTIFY after it as one simple query, its values
        written as SQL literals here (psycopg's client-side binding adapts every value in
        Python, which costs more than the rest of a write's Python)."""
        rows = ",".join(
            [
                f"({n},{_literal_id(e.originator_id)},{int(e.originator_version)},"
                f"{_literal_text(e.topic)},E'\\\\x{e.state.hex()}'::bytea)"
                for n, e in enumerate(stored_events)
            ]
        )
        with self.datastore.get_connection() as conn, _released_on_error(conn):
            assert conn.autocommit
            prefix, middle, suffix = self._one_query(conn)
            curs = ClientCursor(conn)
            curs.execute(f"{prefix}{len(stored_events)}{middle}{rows}{suffix}")
            return _returned_ids(curs)

    def _insert_copied(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Large imports: ids reserved first, the rows to a temporary table by COPY (no
        per-value adaptation), then into the events table with one INSERT ... SELECT in their
        given order; a duplicate fails the INSERT and so the whole transaction."""
        data = "".join(
            [
                f"{n}\t{_copy_id(e.originator_id)}\t{e.originator_version}\t"
                f"{_copy_text(e.topic)}\t\\\\x{e.state.hex()}\n"
                for n, e in enumerate(stored_events)
            ]
        )
        with self.datastore.get_connection() as conn, _released_on_error(conn):
            curs = conn.cursor()
            with conn.transaction():
                # The reservation comes first: creating the staging table would give the
                # transaction its id outside the reserve function.
                curs.execute(SQL("; ").join(self._lock_statements))
                curs.execute(self._reserve, [len(stored_events)])
                reserved = curs.fetchone()
                assert reserved is not None
                first = reserved["first"]
                curs.execute(self._stage)
                with curs.copy(self._copy_staged) as copy:
                    copy.write(data)
                curs.execute(self._insert_staged, [first])
                ids = [row["notification_id"] for row in curs.fetchall()]
            conn.execute(self._notify)
            return ids

    def _one_query(self, conn: Any) -> tuple[str, str, str]:
        """The text around a write's count of events and its rows: begin, the locks, the
        reservation, the INSERT; then commit, and NOTIFY in a transaction of its own."""
        if self._one_query_text is None:
            prefix = SQL("; ").join(
                [
                    SQL("BEGIN"),
                    *self._lock_statements,
                    SQL("WITH reserved AS MATERIALIZED (SELECT {0}(").format(self.reserve_function),
                ]
            )
            middle = SQL(
                ") AS first) INSERT INTO {0} (notification_id, originator_id, "
                "originator_version, topic, state) SELECT first + n, id, version, topic, state "
                "FROM reserved, (VALUES "
            ).format(self.table)
            suffix = SQL(
                ") AS v(n, id, version, topic, state) RETURNING notification_id; COMMIT; {0}"
            ).format(self._notify)
            self._one_query_text = (
                prefix.as_string(conn),
                middle.as_string(conn),
                suffix.as_string(conn),
            )
        return self._one_query_text

    @functools.cached_property
    def _lock_statements(self) -> list[Composed]:
        """The server's lock timeout, and the lock that excludes writers of older releases
        (their EXCLUSIVE lock conflicts with it) without excluding each other."""
        return [
            SQL("SET LOCAL lock_timeout = '{0}s'").format(self.datastore.lock_timeout),
            SQL("LOCK TABLE {0} IN ROW EXCLUSIVE MODE").format(self.table),
        ]

    @functools.cached_property
    def _reserve(self) -> Composed:
        return SQL("SELECT {0}(%s) AS first").format(self.reserve_function)

    @functools.cached_property
    def _stage(self) -> Composed:
        """The staging table, dropped at commit."""
        return SQL(
            "CREATE TEMPORARY TABLE {0} (n bigint, originator_id uuid, "
            "originator_version bigint, topic text, state bytea) ON COMMIT DROP"
        ).format(Identifier(STAGING_TABLE))

    @functools.cached_property
    def _copy_staged(self) -> Composed:
        return SQL("COPY {0} FROM STDIN").format(Identifier(STAGING_TABLE))

    @functools.cached_property
    def _insert_staged(self) -> Composed:
        """The staged rows with their reserved ids, in their given order."""
        return SQL(
            "INSERT INTO {0} (notification_id, originator_id, originator_version, topic, state) "
            "SELECT %s + n, originator_id, originator_version, topic, state FROM {1} "
            "ORDER BY n RETURNING notification_id"
        ).format(self.table, Identifier(STAGING_TABLE))

    @functools.cached_property
    def _notify(self) -> Composed:
        return SQL("NOTIFY {0}").format(Identifier(self.channel_name))

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """eventsourcing's page of the log, below the high-water mark."""
        query = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {0} "
            "WHERE notification_id {1} %s AND notification_id <= %s AND {2} "
            "AND (%s::text[] IS NULL OR topic = ANY(%s)) ORDER BY notification_id LIMIT %s"
        ).format(
            self.table,
            SQL(">=" if inclusive_of_start else ">"),
            SQL(FOLLOWABLE),
        )
        chosen = list(topics) if topics else None
        params = [start or 0, LOG_END if stop is None else stop, chosen, chosen, limit]

        def select() -> list[Notification]:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(query, params, prepare=True)
                return [
                    Notification(
                        id=row["notification_id"],
                        originator_id=row["originator_id"],
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                    for row in curs.fetchall()
                ]

        return _within(self.deadline_s, select)

    def max_notification_id(self) -> int | None:
        """The last id below the high-water mark: a follower that starts there misses
        nothing committed later."""
        query = SQL(
            "SELECT notification_id FROM {0} WHERE {1} ORDER BY notification_id DESC LIMIT 1"
        ).format(self.table, SQL(FOLLOWABLE))

        def select() -> int | None:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                row = curs.execute(query, prepare=True).fetchone()
                return None if row is None else int(row["notification_id"])

        return _within(self.deadline_s, select)

    def create_table(self) -> None:
        names = [
            self.events_table_name,
            self.notification_id_index_name,
            f"{self.events_table_name}_{KEY_INDEX}",
        ]
        _create_what_is_missing(self, super().create_table, names, self._upgrade_missing)

    def _create_table(self, curs: Any) -> None:
        _serialise_creation(self.datastore, curs)
        super()._create_table(curs)

    @functools.cached_property
    def _upgrade_missing(self) -> list[str]:
        """SQL conditions true when a store of an earlier release lacks what this one adds."""
        schema, table = self.datastore.schema, self.events_table_name
        return [
            f'to_regprocedure(\'"{schema}"."{table}_reserve_ids"(bigint)\') IS NULL',
            "NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "
            f"to_regclass('{self.qualified_table}') AND attname = '{XACT_COLUMN}')",
        ]

    def require_upgraded(self) -> None:
        """For a ledger told not to create tables: a store an earlier release wrote, which this
        one cannot write to until it is upgraded, is a :class:`ConfigurationError` now rather
        than a failed write later (a store without tables is reported at its first use)."""
        needs = " OR ".join(f"({c})" for c in self._upgrade_missing)
        with self.datastore.get_connection() as conn:
            query = f"SELECT to_regclass(%s) IS NOT NULL AND ({needs}) AS old"
            row = conn.execute(query, [self.qualified_table]).fetchone()
        if row is not None and row["old"]:
            raise ConfigurationError(
                "the store was written by an earlier release and needs an upgrade first: run "
                "`posledger init-db --db URL` once (it adds a column and a function; no stored "
                "event changes; docs/design.md#concurrent-writers)"
            )


def _returned_ids(curs: Any) -> list[int]:
    """The ids of the INSERT's RETURNING, among the results of a multi-statement query."""
    ids: list[int] = []
    while True:
        if (curs.statusmessage or "").startswith("INSERT"):
            ids = [row["notification_id"] for row in curs.fetchall()]
        if not curs.nextset():
            return ids


@contextlib.contextmanager
def _released_on_error(conn: Any) -> Iterator[None]:
    """A write that failed leaves no transaction open and no advisory lock held (a query
    cancelled inside the reserve function could leave its lock with the session); a connection
    that cannot be cleaned is closed, and the server releases what its session held."""
    try:
        yield
    except BaseException:
        if not conn.closed:
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                conn.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:
                conn.close()
        raise
