"""PostgreSQL persistence whose retries respect the ledger's timeout.

eventsourcing retries every PostgreSQL call ten times, each attempt waiting up to the connect
timeout, so a 2 s timeout could block a bot for 20 s or more. These recorders retry transient
errors (a dropped pooled connection) only while the deadline allows, then raise, which the
ledger reports as :class:`posledger.StorageUnavailable`. Each write is one transaction, so a
failed call never leaves half of it behind; a commit whose acknowledgement was lost is safe to
repeat because executions are deduplicated and decisions are recomputed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)

R = TypeVar("R")
RETRY_PAUSE_S = 0.1


def _within(deadline_s: float, call: Callable[[], R]) -> R:
    started = time.monotonic()
    while True:
        try:
            return call()
        except (InterfaceError, OperationalError):
            pause = RETRY_PAUSE_S * random.uniform(0.5, 1.5)
            if time.monotonic() - started + pause >= deadline_s:
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


class BoundedAggregateRecorder(PostgresAggregateRecorder):
    """Snapshots: the aggregate recorder with deadline-bounded retries."""

    deadline_s = 5.0
    insert_events = _bounded(PostgresAggregateRecorder.insert_events)
    select_events = _bounded(PostgresAggregateRecorder.select_events)


class BoundedApplicationRecorder(PostgresApplicationRecorder):
    """Events and the notification log, with deadline-bounded retries."""

    deadline_s = 5.0
    insert_events = _bounded(PostgresApplicationRecorder.insert_events)
    select_events = _bounded(PostgresAggregateRecorder.select_events)
    select_notifications = _bounded(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _bounded(PostgresApplicationRecorder.max_notification_id)


class BoundedPostgresFactory(PostgresFactory):
    """Selected by ``PERSISTENCE_MODULE=posledger.postgres:BoundedPostgresFactory``; the deadline
    comes from ``POSLEDGER_STORAGE_TIMEOUT`` (seconds)."""

    DEADLINE = "POSLEDGER_STORAGE_TIMEOUT"

    aggregate_recorder_class = BoundedAggregateRecorder
    application_recorder_class = BoundedApplicationRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        # psycopg_pool keeps retrying a lost connection with a growing backoff for five minutes
        # before it lets a request start a fresh attempt; bound that by the same deadline so the
        # ledger works again as soon as the server is back.
        self.datastore.pool.reconnect_timeout = self._deadline()

    def aggregate_recorder(self, purpose: str = "events") -> Any:
        recorder = super().aggregate_recorder(purpose)
        recorder.deadline_s = self._deadline()  # type: ignore[attr-defined]
        return recorder

    def application_recorder(self) -> Any:
        recorder = super().application_recorder()
        recorder.deadline_s = self._deadline()  # type: ignore[attr-defined]
        return recorder

    def _deadline(self) -> float:
        return float(self.env.get(self.DEADLINE) or 5.0)
