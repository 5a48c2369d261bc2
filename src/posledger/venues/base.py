"""The venue interface the Synchronizer drives: one protocol, one implementation per exchange API.

A venue's reads either return complete data or raise :class:`posledger.ExchangeUnavailable`;
there is no third outcome, so an API failure can never be mistaken for "no position".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, runtime_checkable

from posledger.core.errors import ExchangeMalformed, InvalidInput
from posledger.core.model import ExchangePosition, Fill, Snapshot


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


class AccountScope(Protocol):
    """Whose positions a read is of: what every venue and read plan knows about itself."""

    venue: str
    account: str
    category: str


def complete_snapshot(
    exchange: str,
    scope: AccountScope,
    *,
    taken_at: datetime,
    positions: Iterable[ExchangePosition],
    symbols: Iterable[str] | None,
    open_order_ids: Iterable[str] | None,
    caveats: Iterable[str] = (),
) -> Snapshot:
    """The Snapshot of a venue's complete read. Rows that cannot form one (two rows for one
    leg, say) are the exchange's inconsistency, so they raise ExchangeMalformed (an
    ExchangeUnavailable), never InvalidInput, which would blame the caller."""
    try:
        return Snapshot(
            venue=scope.venue,
            account=scope.account,
            category=scope.category,
            taken_at=taken_at,
            positions=positions,
            symbols=symbols,
            open_order_ids=open_order_ids,
            caveats=caveats,
        )
    except InvalidInput as error:
        message = f"{exchange} positions do not form a snapshot: {error}"
        raise ExchangeMalformed(message) from error
