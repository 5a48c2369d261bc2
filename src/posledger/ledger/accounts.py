"""The shell of books (docs/books.md): finding an account key's books, and deciding what spans
them (routed executions, reconciliation, a decision on a proposal) in one transaction.

An account key without named books never comes here: the Ledger decides it key by key, as
it did before books existed.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from posledger.core.allocation import AllocationPolicy
from posledger.core.books import (
    Books,
    account_view,
    decide_account_fills,
    pending_book,
    to_books,
)
from posledger.core.decide import FillBatchResult
from posledger.core.events import OrderBooked, PositionEvent, order_marker_id
from posledger.core.model import Fill, PositionKey
from posledger.core.position import PositionState
from posledger.ledger.commit import Writer
from posledger.ledger.seen import SeenExecutions
from posledger.ledger.states import StateCache
from posledger.store.application import LedgerApplication

T = TypeVar("T")
Lookup = Callable[[uuid.UUID], PositionState | None]
AccountDecision = Callable[[PositionState, Books], tuple[list[PositionEvent], T]]
"""A pure decision on an account's view, given its books: the view's events and a result."""


class Accounts:
    """The books of each account key a ledger knows, and their joint decisions."""

    def __init__(
        self,
        app: LedgerApplication,
        cache: StateCache,
        writer: Writer,
        seen: SeenExecutions,
        allocation: AllocationPolicy,
    ) -> None:
        self.app = app
        self.cache = cache
        self.writer = writer
        self.seen = seen
        self.allocation = allocation
        self._orders: dict[uuid.UUID, str] = {}
        """Order markers read so far (written once, never changed)."""

    def has_books(self, account: PositionKey) -> bool:
        """Whether the account key has named books (call caught up, every key known)."""
        return account in self.cache.keys.named_books

    def keys(self, account: PositionKey) -> dict[str, PositionKey]:
        """The account key's books and their keys; the default book's if it has a stream."""
        found = dict(self.cache.keys.named_books.get(account, {}))
        if account.stream_id in self.cache.keys:
            found[""] = account
        return found

    def states(self, account: PositionKey, lookup: Lookup) -> dict[str, PositionState]:
        states = {book: lookup(key.stream_id) for book, key in self.keys(account).items()}
        return {book: state for book, state in states.items() if state is not None}

    def view(self, account: PositionKey, lookup: Lookup) -> PositionState | None:
        """The account's position over its books (None when it has none)."""
        books = self.states(account, lookup)
        if not books:
            return None
        return account_view(account, books, self._home(books))

    def order_book(self, key: PositionKey, order_id: str) -> str | None:
        """The named book ``order_id`` was requested in, from its marker; None if none."""
        stream = order_marker_id(key.venue, key.account, order_id)
        book = self._orders.get(stream)
        if book is None:
            for event in self.app.events.get(stream, limit=1):
                assert isinstance(event, OrderBooked)
                book = self._orders[stream] = event.book
        return book

    def book_of_order(self, account: PositionKey, order_id: str, lookup: Lookup) -> str | None:
        """The book ``order_id`` belongs to: pending in one, else its marker's; None if neither."""
        found = pending_book(self.states(account, lookup), order_id)
        return found if found is not None else self.order_book(account, order_id)

    def record(self, account: PositionKey, fills: Sequence[Fill], at: datetime) -> FillBatchResult:
        """Executions of the account routed to its books (docs/books.md#routing), in one save."""

        def decide(lookup: Lookup) -> tuple[dict[PositionKey, list[Any]], Any]:
            books = self.states(account, lookup)
            book_of = functools.partial(self.order_book, account)
            recording = decide_account_fills(
                account, books, fills, self.allocation, book_of, self.seen.get
            )
            return recording.events, recording

        recording = self.writer.execute_many(
            at, decide, on_conflict=lambda: self.seen.learn(self.app, account, fills)
        )
        self.seen.remember(recording.markers)
        with self.writer.lock:
            view = self.view(account, self.cache.state)
        assert view is not None
        return FillBatchResult(position=view, fills=recording.results)

    def decide(self, account: PositionKey, at: datetime, decision: AccountDecision[T]) -> T:
        """A decision made on the account's view, written as each book's events."""

        def decide(lookup: Lookup) -> tuple[dict[PositionKey, list[PositionEvent]], T]:
            books = self.states(account, lookup)
            home = self._home(books)
            events, result = decision(account_view(account, books, home), books)
            return to_books(events, books, self.allocation, account, home), result

        return self.writer.execute_many(at, decide)

    def _home(self, books: Books) -> str:
        """The book holding the account's proposal, if one does; else the unassigned book."""
        for book, state in books.items():
            if state.proposal is not None:
                return book
        return self.allocation.unassigned
