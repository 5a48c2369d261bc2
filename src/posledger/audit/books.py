"""Per-book PnL of an account (docs/books.md): each book's position and money, and the
account's over its books, from one bulk replay. The account row is what the exchange's figures
are compared with; the book rows say which strategy made or lost it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from posledger.audit.history import book_label
from posledger.audit.html import html_table
from posledger.audit.replays import replay_all
from posledger.audit.source import Source
from posledger.core.books import account_view
from posledger.core.errors import InvalidInput
from posledger.core.model import PositionKey
from posledger.core.position import PositionState

PNL_COLUMNS = ("realized_pnl", "fees", "funding", "adopted_pnl", "unexplained_pnl", "booked_pnl")
"""A state's money, as the state names it (in state records and book rows alike)."""
BOOK_PNL_COLUMNS = (
    "account",
    "book",
    "status",
    "signed_size",
    "avg_entry_price",
    "settle_coin",
    *PNL_COLUMNS,
    "lifecycle",
    "version",
)
"""``account`` is the account key's text form; ``book`` is None on the account's own row;
``lifecycle`` and ``version`` are the book's (the account row's version sums its books')."""


@attrs.frozen
class BookPnl:
    """One book's state in its account (``book`` None: the account's, summed over its books)."""

    account: PositionKey
    book: str | None
    state: PositionState

    def record(self) -> dict[str, Any]:
        """A flat record with :data:`BOOK_PNL_COLUMNS` (exact values)."""
        state = self.state
        return {
            "account": str(self.account),
            "book": self.book,
            "status": state.status.value,
            "signed_size": state.signed_size,
            "avg_entry_price": state.avg_entry_price,
            "settle_coin": self.account.settle_coin,
            **pnl_fields(state),
            "lifecycle": state.lifecycle,
            "version": state.version,
        }


def pnl_fields(state: PositionState) -> dict[str, Any]:
    """The state's :data:`PNL_COLUMNS` (exact values)."""
    return {name: getattr(state, name) for name in PNL_COLUMNS}


class BookPnlRows(list[BookPnl]):
    """The rows of :func:`book_pnl`, which a notebook shows as a table."""

    def _repr_html_(self) -> str:
        names = BOOK_PNL_COLUMNS[1:]
        return html_table(
            names,
            (
                ("font-weight:bold" if row.book is None else None, _cells(row, names))
                for row in self
            ),
        )


def _cells(row: BookPnl, names: tuple[str, ...]) -> list[object]:
    record = row.record()
    record["book"] = "(account)" if row.book is None else book_label(row.book)
    return [record[name] for name in names]


def book_pnl(source: Source, key: PositionKey) -> BookPnlRows:
    """One row per book of ``key``'s account (any book's key names it), in book order, then
    the account's row: sizes and money summed over the books (funding and fees to the last
    unit, as the allocation shares them). InvalidInput if the account has no events."""
    if not isinstance(key, PositionKey):
        raise InvalidInput(f"expected a PositionKey, got {type(key).__name__}")
    account = key.account_key
    books = {k.book: s for k, s in replay_all(source).items() if k.account_key == account}
    if not books:
        raise InvalidInput(f"{account}: no events in any book")
    rows = BookPnlRows(BookPnl(account, book, books[book]) for book in sorted(books))
    rows.append(BookPnl(account, None, account_view(account, books, "")))
    return rows


def account_totals(states: Iterable[PositionState]) -> dict[PositionKey, PositionState]:
    """The position of every account key with a named book among ``states`` (every book of
    it must be there), summed over its books as the Ledger's ``account_positions`` sums them,
    keyed and ordered by account key. Accounts with only the default book are left out: their
    one book is the account."""
    by_account: dict[PositionKey, dict[str, PositionState]] = {}
    for state in states:
        by_account.setdefault(state.key.account_key, {})[state.key.book] = state
    return {
        account: account_view(account, books, "")
        for account, books in sorted(by_account.items(), key=lambda item: str(item[0]))
        if any(books)
    }


ACCOUNT_ROW = "= account"
"""The book column of an account's row in a listing: its books summed, what the exchange
shows."""


def with_account_rows(
    shown: Sequence[PositionState], totals: dict[PositionKey, PositionState]
) -> list[tuple[str, PositionState]]:
    """The shown states with their book's name (``(default)`` for the default book of an
    account with others), each account's total (``ACCOUNT_ROW``) after the last of its books
    shown."""
    rows: list[tuple[str, PositionState]] = []
    for n, state in enumerate(shown):
        account = state.key.account_key
        rows.append((state.key.book or ("(default)" if account in totals else ""), state))
        following = shown[n + 1].key.account_key if n + 1 < len(shown) else None
        if account in totals and following != account:
            rows.append((ACCOUNT_ROW, totals[account]))
    return rows
