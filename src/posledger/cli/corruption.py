"""A damaged store, told in one line: the stream, what is wrong with it, and the command that
lists every problem (``verify``), exit 1. A query never prints a traceback for it."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from posledger.cli.base import PROG, Run, ledger_url, one_line
from posledger.core.errors import StoreCorrupted
from posledger.store.storage import settings_for

if TYPE_CHECKING:
    from rich.console import Console

STORE_CORRUPTED = 1
"""Exit status when a stored stream cannot be read (as ``verify``'s when it finds a problem)."""


def reporting_corruption(run: Run) -> Run:
    """``run`` (a subcommand reading ``--db``), with :class:`StoreCorrupted` reported in one line
    pointing at ``posledger verify`` on the same store (its password left out)."""

    @functools.wraps(run)
    def guarded(args: argparse.Namespace, console: Console) -> int:
        try:
            return run(args, console)
        except StoreCorrupted as error:
            where = settings_for(ledger_url(args.db), create_tables=False).description
            message = (
                f"{PROG} {args.command}: error: {error}; `{PROG} verify --db '{where}'` "
                "reports every problem"
            )
            print(one_line(message), file=sys.stderr)
            return STORE_CORRUPTED

    return guarded
