"""PostgreSQL persistence whose waits respect the ledger's timeout, whatever the network does.

eventsourcing retries every PostgreSQL call ten times, each attempt waiting up to the connect
timeout, so a 2 s timeout could block a bot for 20 s or more. These recorders retry transient
errors (a dropped pooled connection) only while the deadline allows, then raise, which the
ledger reports as :class:`posledger.StorageUnavailable`. Each write is one transaction, so a
failed call never leaves half of it behind; a commit whose acknowledgement was lost is safe to
repeat because executions are deduplicated and decisions are recomputed.

A deadline between calls is not enough: psycopg waits in ``execute`` for as long as the socket
stays open, and a dropped route, a dead NAT entry or a frozen server keeps it open. So every use
of a pooled connection is guarded by :class:`ConnectionWatchdog`, which shuts the socket down
once the use outlives the timeout (the wait then fails at once and the pool discards the
connection), and libpq's ``tcp_user_timeout`` and keepalives make the kernel give up on a peer
that stopped acknowledging.

A store that is not set up as its URL says (no such database, role or schema, failed
authentication) is :class:`posledger.ConfigurationError`, raised as soon as the server says so
(the connection's side is :class:`~posledger.store.postgres_pool.ReportingPool`); a refused or
timed-out connection (a server still starting, a network cut) is waited for until the deadline,
then reported with its reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import (
    PostgresDatastore,
    PostgresFactory,
)
from psycopg import Connection
from psycopg.sql import SQL, Identifier

from posledger.core.errors import ConfigurationError
from posledger.store.postgres_log import BoundedAggregateRecorder, BoundedApplicationRecorder
from posledger.store.postgres_pool import ReportingPool, ServerRefusal, one_line

SERVER_SHARE = 0.75
"""Part of the timeout the server's lock timeout gets; the watchdog waits for the whole."""
WATCH_TICK_S = 0.02
"""How often the watchdog looks at the connections in use (its precision)."""


class ConnectionWatchdog:
    """Abandons a connection whose current use outlived its deadline by shutting its socket
    down, from a daemon thread of its own; the waiting caller then gets psycopg's
    ``OperationalError`` at once, which :meth:`guard` words as the timeout it is."""

    def __init__(self) -> None:
        self._armed: dict[int, tuple[float, Connection[Any]]] = {}
        self._fired: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, conn: Connection[Any], seconds: float) -> Iterator[None]:
        token = object()
        with self._lock:
            self._armed[id(token)] = (time.monotonic() + seconds, conn)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="posledger-watchdog", daemon=True
                )
                self._thread.start()
        self._wake.set()
        try:
            yield
        except psycopg.Error as error:
            if self._disarm(token) and error.sqlstate is None:  # the server did not answer
                raise psycopg.OperationalError(
                    f"no answer from the server within {seconds:g} s; the connection was abandoned"
                ) from error
            raise
        except BaseException:
            self._disarm(token)
            raise
        if self._disarm(token):
            conn.close()  # abandoned as it finished: the pool must not hand it out again

    def _disarm(self, token: object) -> bool:
        """Stop watching this use; True if the watchdog abandoned its connection."""
        with self._lock:
            self._armed.pop(id(token), None)
            if id(token) in self._fired:
                self._fired.discard(id(token))
                return True
            return False

    def _watch(self) -> None:
        while True:
            with self._lock:
                idle = not self._armed
                if idle:
                    self._wake.clear()
            if idle:
                self._wake.wait()
                continue
            time.sleep(WATCH_TICK_S)
            now = time.monotonic()
            with self._lock:
                for token, (end, conn) in list(self._armed.items()):
                    if end <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _abandon(conn)


def _abandon(conn: Connection[Any]) -> None:
    """Shut the connection's socket down (a duplicate descriptor shares the socket), so a read
    or write blocked on it returns; libpq then reports the connection lost."""
    with (
        contextlib.suppress(OSError, psycopg.Error),
        socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = ConnectionWatchdog()


INIT_DB_HINT = "create it and the tables once with `posledger init-db --db URL`"


class GuardedPostgresDatastore(PostgresDatastore):
    """eventsourcing's datastore, every use of a pooled connection bounded by ``deadline_s``
    (set by :class:`BoundedPostgresFactory`), except :meth:`listening_connection`'s."""

    deadline_s = 5.0
    pool: ReportingPool

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[Connection[Any]]:
        with (
            self._pooled() as conn,
            WATCHDOG.guard(conn, self.deadline_s),
            self._schema_errors(conn),
        ):
            yield conn

    def listening_connection(self) -> contextlib.AbstractContextManager[Connection[Any]]:
        """A connection for a LISTEN loop, held as long as the loop runs: not guarded as a
        whole (the loop bounds its waits for notifications, and guards each statement with
        :meth:`guard`; its reads go through guarded connections)."""
        return self._pooled()

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Connection[Any]]:
        """A pooled connection; one that could not be had says the server's reason: a
        :class:`ConfigurationError` when it is final, else after the wait."""
        try:
            with super().get_connection() as conn:
                yield conn
        except OperationalError as error:
            if isinstance(error.__cause__, ServerRefusal):
                raise ConfigurationError(
                    f"cannot connect: {error.__cause__} (retrying will not help: fix the URL "
                    "or the server's setup)"
                ) from error
            reason = self.pool.connect_error
            if isinstance(error.__cause__, psycopg_pool.PoolTimeout) and reason is not None:
                raise OperationalError(f"{error}; the last attempt: {one_line(reason)}") from error
            raise

    @contextlib.contextmanager
    def _schema_errors(self, conn: Connection[Any]) -> Iterator[None]:
        """A statement that failed for want of the URL's schema: :class:`ConfigurationError`
        (a missing table in a schema that exists is not: ``init-db`` or a first open fixes
        it)."""
        try:
            yield
        except psycopg.errors.InvalidSchemaName as error:
            raise self._missing_schema() from error
        except psycopg.errors.UndefinedTable as error:
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if idle and self._schema_is_missing(conn):
                raise self._missing_schema() from error
            raise

    def _schema_is_missing(self, conn: Connection[Any]) -> bool:
        query = "SELECT to_regnamespace(%s) IS NULL AS missing"
        row = conn.execute(query, [f'"{self.schema}"']).fetchone()
        return bool(row and row["missing"])

    def _missing_schema(self) -> ConfigurationError:
        return ConfigurationError(f'schema "{self.schema}" does not exist; {INIT_DB_HINT}')

    def create_schema(self) -> None:
        """Create the URL's schema if it is missing (``posledger init-db``), and only then:
        ``CREATE SCHEMA IF NOT EXISTS`` needs the database's CREATE privilege even when the
        schema exists."""
        with self.get_connection() as conn:
            if self._schema_is_missing(conn):
                conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(self.schema)))

    def guard(self, conn: Connection[Any]) -> contextlib.AbstractContextManager[None]:
        return WATCHDOG.guard(conn, self.deadline_s)

    def close(self) -> None:
        """Close the pool without waiting for workers stuck connecting to an unreachable
        server (they are daemon threads and end with their connect timeout)."""
        with contextlib.suppress(AttributeError):
            self.pool.close(timeout=0.1)


class BoundedPostgresFactory(PostgresFactory):
    """Selected by ``PERSISTENCE_MODULE=posledger.store.postgres:BoundedPostgresFactory``; the
    deadline comes from ``POSLEDGER_STORAGE_TIMEOUT`` (seconds)."""

    DEADLINE = "POSLEDGER_STORAGE_TIMEOUT"
    CREATE_SCHEMA = "POSLEDGER_CREATE_SCHEMA"

    aggregate_recorder_class = BoundedAggregateRecorder
    application_recorder_class = BoundedApplicationRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        deadline = self._deadline()
        # eventsourcing's factory builds a plain PostgresDatastore itself; the guarded one only
        # adds behaviour and a deadline, so the instance is given that class.
        self.datastore.__class__ = GuardedPostgresDatastore
        self.datastore.deadline_s = deadline  # type: ignore[attr-defined]
        # The server's own lock timeout, which names its cause, answers before the watchdog
        # gives up on a connection that waits for a lock.
        self.datastore.lock_timeout = SERVER_SHARE * deadline  # type: ignore[assignment]
        pool = self.datastore.pool
        pool.__class__ = ReportingPool
        # psycopg_pool keeps retrying a lost connection with a growing backoff for five minutes
        # before it lets a request start a fresh attempt; bound that by the same deadline so the
        # ledger works again as soon as the server is back.
        pool.reconnect_timeout = deadline
        assert isinstance(pool.kwargs, dict)
        # eventsourcing gives its connect timeout to the pool (how long a caller waits for a
        # connection) but not to libpq, so a worker connecting to a host that accepts and never
        # answers would wait forever and the pool would never connect again.
        pool.kwargs.update(
            connect_timeout=max(2, math.ceil(deadline)),
            tcp_user_timeout=max(1, round(deadline * 1000)),
            keepalives=1,
            keepalives_idle=max(1, round(deadline)),
            keepalives_interval=1,
            keepalives_count=3,
        )
        if self.env.get(self.CREATE_SCHEMA) == "y":
            with self._closed_on_failure():
                self.datastore.create_schema()  # type: ignore[attr-defined]

    def aggregate_recorder(self, purpose: str = "events") -> Any:
        with self._closed_on_failure():
            recorder = super().aggregate_recorder(purpose)
        recorder.deadline_s = self._deadline()  # type: ignore[attr-defined]
        return recorder

    def application_recorder(self) -> Any:
        with self._closed_on_failure():
            recorder = super().application_recorder()
            if not self.env_create_table():
                assert isinstance(recorder, BoundedApplicationRecorder)
                recorder.require_upgraded()
        recorder.deadline_s = self._deadline()  # type: ignore[attr-defined]
        return recorder

    @contextlib.contextmanager
    def _closed_on_failure(self) -> Iterator[None]:
        """Close the pool now when the application being built cannot be (its recorders
        reach the store as they are made): left to the garbage collector, it would go on
        connecting in the background, and might be closed from one of its own threads."""
        try:
            yield
        except BaseException:
            self.datastore.close()
            raise

    def _deadline(self) -> float:
        return float(self.env.get(self.DEADLINE) or 5.0)
