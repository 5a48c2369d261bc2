"""What the CLI shows of books (docs/books.md): the ``--book`` filter and a key's short name with
its book (the account rows come from :func:`posledger.audit.books.with_account_rows`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from posledger.cli.base import Argument, argument
from posledger.core.errors import InvalidInput
from posledger.core.model import PositionKey
from posledger.core.position import PositionState


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
