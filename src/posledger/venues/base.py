"""The venue interface the Synchronizer drives: one protocol, one implementation per exchange API.

A venue's reads either return complete data or raise :class:`posledger.ExchangeUnavailable`;
there is no third outcome, so an API failure can never be mistaken for "no position".
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from posledger.model import Fill, Snapshot


@runtime_checkable
class Venue(Protocol):
    """What a Synchronizer needs from an exchange account, for one category."""

    venue: str
    account: str
    category: str

    def fetch_snapshot(self) -> Snapshot:
        """Every position (every page) and, where the API allows, every open order id."""
        ...

    def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        """Every execution in ``[since, until]``, oldest first, with ``symbol`` and ``idx`` set."""
        ...


@runtime_checkable
class AsyncVenue(Protocol):
    """The same reads as :class:`Venue`, as coroutines (ccxt's ``async_support``)."""

    venue: str
    account: str
    category: str

    async def fetch_snapshot(self) -> Snapshot: ...

    async def fetch_executions(
        self, since: datetime, until: datetime | None = None
    ) -> list[Fill]: ...
