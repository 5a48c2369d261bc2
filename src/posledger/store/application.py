"""The eventsourcing Application behind every ledger, read model and audit, and the one
translation of driver errors into posledger's.

Its name fixes the table names, so every reader of a store constructs
:class:`LedgerApplication` with the environment of :func:`posledger.store.storage.settings_for`.
"""

from __future__ import annotations

import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from eventsourcing.application import Application
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)

from posledger.core.errors import ConfigurationError, StorageUnavailable
from posledger.store.replay import ensure_key_index
from posledger.store.storage import StorageSettings

STORE_ERRORS = (OperationalError, InterfaceError, InternalError, ProgrammingError)
"""What a recorder raises when the store cannot answer (as opposed to refusing a write)."""

CREATE_TABLES_HINT = "create them once with `posledger init-db --db URL`"


class LedgerApplication(Application[uuid.UUID]):
    """eventsourcing Application holding every position stream and execution marker."""

    name = "posledger"
    description = "posledger"
    """Where the store is, without a password (the URL of :func:`for_settings`), for errors."""

    @classmethod
    def for_settings(cls, settings: StorageSettings) -> LedgerApplication:
        app = cls(env={**settings.env, "IS_SNAPSHOTTING_ENABLED": "y"})
        app.description = settings.description
        return app


STARTUP_RACES = ("concurrently", "already exists", "database is locked")
"""What opening a store says when other processes open it at the same moment: PostgreSQL
refuses concurrent catalog changes ("tuple concurrently updated", a type or an index that
"already exists"); SQLite refuses to switch a new file to WAL while another connection holds
it."""


def open_application(settings: StorageSettings) -> LedgerApplication:
    """The application for ``settings``, creating its tables unless told not to.

    Creating tables is idempotent, but several processes opening a store at once race
    (:data:`STARTUP_RACES`): try again until ``settings.timeout_s`` has passed."""
    started = time.monotonic()
    while True:
        try:
            app = LedgerApplication.for_settings(settings)
            if settings.env.get("CREATE_TABLE") != "n":
                ensure_key_index(app)
            return app
        except (
            InternalError,
            IntegrityError,
            OperationalError,
            ProgrammingError,
            sqlite3.OperationalError,
        ) as error:
            if not any(race in str(error) for race in STARTUP_RACES):
                raise
            if time.monotonic() - started > settings.timeout_s:
                raise
            time.sleep(random.uniform(0.01, 0.1))


def is_missing_table(error: Exception) -> bool:
    return "no such table" in str(error) or (
        isinstance(error, ProgrammingError) and "does not exist" in str(error)
    )


@contextmanager
def storage_errors(description: str, missing_tables: str = CREATE_TABLES_HINT) -> Iterator[None]:
    """Raise :class:`StorageUnavailable` (naming the store) for a store that cannot answer or
    has no tables, saying ``missing_tables`` in the latter case, and name the store in a
    :class:`ConfigurationError`; a programming error is a bug and propagates as it is."""
    try:
        yield
    except ConfigurationError as error:
        raise ConfigurationError(f"{description}: {error}") from error
    except STORE_ERRORS as error:
        if is_missing_table(error):
            raise StorageUnavailable(
                f"{description}: the ledger's tables are missing; {missing_tables} ({error})"
            ) from error
        if isinstance(error, ProgrammingError):
            raise
        raise StorageUnavailable(f"{description}: {type(error).__name__}: {error}") from error
