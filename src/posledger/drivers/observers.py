"""What a synchronizer tells the operations watching it (metrics, alerts) after each round.

Observers are passed in (``Synchronizer(ledger, venue, observers=[...])``) and called in the
round's own thread (for :class:`~posledger.drivers.aio.AsyncSynchronizer`, the event loop's),
after the fact, through :func:`~posledger.ledger.observers.notify`: one that raises is logged
and never breaks the round. Keep them quick; one that sends anything over a network hands it
to a thread of its own (:class:`~posledger.ops.webhook.WebhookNotifier`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from posledger.drivers.report import SyncReport
from posledger.venues.base import AccountScope


class RoundSource(Protocol):
    """The synchronizer an observer hears from: its ``venue`` names the account, and
    ``staleness()`` says how old its last complete snapshot is."""

    @property
    def venue(self) -> AccountScope: ...

    def staleness(self, now: datetime | None = None) -> timedelta | None: ...


class SyncObserver:
    """What a synchronizer tells its observers after each round. Override what you watch; the
    others do nothing. ``source`` is the synchronizer (:class:`RoundSource`)."""

    def round_done(self, source: RoundSource, report: SyncReport) -> None:
        """A round completed: its snapshot, recoveries, outcomes and open disagreements."""

    def round_failed(self, source: RoundSource, error: Exception) -> None:
        """A round raised ``error`` (an unreadable exchange, an unreachable store, ...) and
        wrote nothing of its reconciliation."""
