"""What the CLI shows of books (docs/books.md): the ``--book`` filter, a key's short name with its
book, and the account rows that sum an account's books."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from posledger.cli.base import Argument, argument
from posledger.core.errors import InvalidInput
from posledger.core.model import PositionKey
from posledger.core.position import PositionState

TOTAL = "= account"
"""The book column of an account's row: its books summed, what the exchange shows."""


def _book(text: str) -> str:
    try:
        return PositionKey.book_name(text)
    except InvalidInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def book_argument(what: str) -> Argument:
    """``--book NAME``: only ``what`` of that book ('' the default book)."""
    return argument(
        "--book",
        metavar="NAME",
        type=_book,
        help=f"only {what} of this book (a strategy inside the account; '' the default book)",
    )


def short_key(key: PositionKey) -> str:
    """``main/BTCUSDT#0``, with ``@book`` for a named book."""
    text = f"{key.account}/{key.symbol}#{key.idx}"
    return f"{text}@{key.book}" if key.book else text


def has_books(states: Sequence[PositionState]) -> bool:
    """Whether any of ``states`` is a named book's: then tables show a book column."""
    return any(s.key.book for s in states)


def with_totals(
    shown: Sequence[PositionState], totals: dict[PositionKey, PositionState]
) -> list[tuple[str, PositionState]]:
    """The shown states with their book's name (``(default)`` for the default book of an
    account with others), each account's total (``TOTAL``) after the last of its books shown."""
    rows: list[tuple[str, PositionState]] = []
    for n, state in enumerate(shown):
        account = state.key.account_key
        rows.append((state.key.book or ("(default)" if account in totals else ""), state))
        following = shown[n + 1].key.account_key if n + 1 < len(shown) else None
        if account in totals and following != account:
            rows.append((TOTAL, totals[account]))
    return rows
