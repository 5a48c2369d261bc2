"""posledger for asyncio bots: the Ledger's commands and queries as coroutines.

Database work runs on a dedicated worker thread, so the event loop never blocks on SQLite or
PostgreSQL. Every command is one atomic save: if the awaiting task is cancelled, the save
either completed or never happened, never half of it; closing waits for work in flight.
Commands from concurrent tasks (a bot's fills, a synchronizer's recoveries) queue on that one
thread, so none is lost and exec_id deduplication settles any overlap.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from posledger.core.errors import LedgerClosed
from posledger.core.model import Fill, PositionKey, Side, Snapshot
from posledger.core.position import PositionState
from posledger.core.reconcile import ReconcilePolicy, ReconcileReport
from posledger.ledger import FillBatchResult, FillResult, Ledger

P = ParamSpec("P")
R = TypeVar("R")


class AsyncLedger:
    """A :class:`~posledger.Ledger` whose methods are awaited. ``open()`` is a plain call and
    the result works as ``async with``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posledger")
        self._closed = False

    @classmethod
    def open(cls, url: str = "memory://", **options: Any) -> AsyncLedger:
        """Open the ledger at ``url`` (same options as :meth:`Ledger.open`)."""
        return cls(Ledger.open(url, **options))

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for work in flight, then close the store. A task still awaiting the ledger
        afterwards (a synchronizer left running) gets :class:`~posledger.LedgerClosed`."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            self._executor.shutdown(wait=True)
            self.ledger.close()

        await asyncio.get_running_loop().run_in_executor(None, close)

    async def _call(self, method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        if self._closed:
            raise LedgerClosed(f"{self.ledger.settings.description}: this ledger is closed")
        loop = asyncio.get_running_loop()
        call = functools.partial(method, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    async def request_open(
        self,
        key: PositionKey,
        *,
        order_id: str,
        side: Side | str,
        qty: object,
        at: datetime | None = None,
        price: object = None,
    ) -> PositionState:
        return await self._call(
            self.ledger.request_open, key, order_id=order_id, side=side, qty=qty, at=at, price=price
        )

    async def request_exit(
        self,
        key: PositionKey,
        *,
        order_id: str,
        qty: object,
        at: datetime | None = None,
        side: Side | str | None = None,
        price: object = None,
    ) -> PositionState:
        return await self._call(
            self.ledger.request_exit, key, order_id=order_id, qty=qty, at=at, side=side, price=price
        )

    async def record_fill(self, key: PositionKey, fill: Fill) -> FillResult:
        return await self._call(self.ledger.record_fill, key, fill)

    async def record_fills(self, key: PositionKey, fills: Sequence[Fill]) -> FillBatchResult:
        return await self._call(self.ledger.record_fills, key, fills)

    async def record_account_fills(
        self, key: PositionKey, fills: Sequence[Fill]
    ) -> FillBatchResult:
        return await self._call(self.ledger.record_account_fills, key, fills)

    async def backfill(
        self,
        fills_by_key: Mapping[PositionKey, Sequence[Fill]],
        *,
        events_per_transaction: int = 20_000,
    ) -> dict[PositionKey, FillBatchResult]:
        """:meth:`Ledger.backfill`: many keys per transaction, so a cancelled caller may leave
        some transactions saved and not others; each is whole, and running it again skips what
        was saved (deduplication)."""
        return await self._call(
            self.ledger.backfill, fills_by_key, events_per_transaction=events_per_transaction
        )

    async def record_order_end(
        self, key: PositionKey, *, order_id: str, status: str, at: datetime | None = None
    ) -> PositionState:
        return await self._call(
            self.ledger.record_order_end, key, order_id=order_id, status=status, at=at
        )

    async def reconcile(
        self,
        snapshot: Snapshot,
        *,
        now: datetime | None = None,
        policy: ReconcilePolicy | None = None,
        skip: Sequence[PositionKey] = (),
    ) -> ReconcileReport:
        return await self._call(self.ledger.reconcile, snapshot, now=now, policy=policy, skip=skip)

    async def position(
        self, key: PositionKey, *, version: int | None = None, at: datetime | None = None
    ) -> PositionState | None:
        return await self._call(self.ledger.position, key, version=version, at=at)

    async def positions(self, *, book: str | None = None) -> list[PositionState]:
        return await self._call(self.ledger.positions, book=book)

    async def account_position(self, key: PositionKey) -> PositionState | None:
        return await self._call(self.ledger.account_position, key)

    async def account_positions(self) -> list[PositionState]:
        return await self._call(self.ledger.account_positions)

    async def books(self, key: PositionKey) -> list[PositionState]:
        return await self._call(self.ledger.books, key)

    async def open_positions(self) -> list[PositionState]:
        return await self._call(self.ledger.open_positions)

    async def keys(self) -> list[PositionKey]:
        return await self._call(self.ledger.keys)

    async def history(self, key: PositionKey) -> list[Any]:
        return await self._call(self.ledger.history, key)
