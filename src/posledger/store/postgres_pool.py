"""The connection pool that knows why it cannot connect.

psycopg_pool connects in background threads and logs a failure, while the caller waits for a
connection until its timeout and then learns only "couldn't get a connection". This pool keeps
the last failure's error, so the caller can say it; and when the server's answer is final (no
such database or role, failed authentication), it fails the waiting callers at once instead of
leaving them to wait out the timeout for a connection that will not come.
"""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.postgres import ConnectionPool

FINAL_CONNECT_SQLSTATES = frozenset({"3D000", "28000", "28P01"})
"""invalid_catalog_name (no such database), invalid_authorization_specification (no such role,
no pg_hba.conf entry), invalid_password."""
FINAL_CONNECT_MESSAGES = (
    "does not exist",
    "authentication failed",
    "no pg_hba.conf entry",
    "no password supplied",
)
"""The same answers in libpq's words: a failed connection carries no SQLSTATE."""


class ServerRefusal(psycopg.OperationalError):
    """The server refused a connection for good (see :func:`is_final`)."""


def is_final(error: psycopg.OperationalError) -> bool:
    """Whether retrying a connection that failed so cannot help until someone changes the
    setup; a refused or timed-out connection may be a server still starting."""
    if error.sqlstate:
        return error.sqlstate in FINAL_CONNECT_SQLSTATES
    return any(message in str(error) for message in FINAL_CONNECT_MESSAGES)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class ReportingPool(ConnectionPool[Any]):
    """eventsourcing's pool, keeping the last failed connection's error (None once one
    succeeds), and failing the callers waiting for a connection with :class:`ServerRefusal`
    when it is final. ``BoundedPostgresFactory`` gives its pool this class."""

    connect_error: psycopg.OperationalError | None = None

    def _connect(self, timeout: float | None = None) -> Any:
        try:
            conn = super()._connect(timeout)
        except psycopg.OperationalError as error:
            self.connect_error = error
            if is_final(error):
                self._fail_waiting(ServerRefusal(one_line(error)))
            raise
        self.connect_error = None
        return conn

    def _fail_waiting(self, error: ServerRefusal) -> None:
        """What psycopg_pool does to its waiting callers when it is closed."""
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
        for client in waiting:
            client.fail(error)
