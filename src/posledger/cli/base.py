"""What every subcommand shares: the registry, the console, tables, progress bars, JSON output,
and opening a ledger that must already exist.

rich is imported only inside functions, so ``import posledger.cli`` works without it and a
missing rich costs a one-line hint, not a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import attrs

from posledger.core.model import PositionKey
from posledger.store.storage import settings_for

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from posledger.ledger import Ledger
    from posledger.ledger.observers import StoreObserver

PROG = "posledger"
PIPE_WIDTH = 120
"""Columns used when stdout is not a terminal (and $COLUMNS is unset), so tables stay readable."""
USAGE_ERROR = 2
EXCHANGE_UNAVAILABLE = 3
"""Exit status when the exchange could not be read (nothing was written)."""
DB_HELP = "the ledger: sqlite:///path.db, postgresql://user@host:5432/db[?schema=s], or a path"
STORE_TIMEOUT_S = 5.0
"""How long a command waits for the database before giving up with a one-line error."""


class UsageError(Exception):
    """A mistake of the user's (bad path, unknown symbol, missing key): one line, exit 2."""


def one_line(message: str) -> str:
    """``message`` on one line, however many lines the underlying error had."""
    return " ".join(message.split())


# --- the registry ------------------------------------------------------------------------


@attrs.frozen
class Argument:
    flags: tuple[str, ...]
    options: dict[str, Any]


def argument(*flags: str, **options: Any) -> Argument:
    """One ``add_argument`` call, declared next to the subcommand that takes it."""
    return Argument(flags, options)


Run = Callable[[argparse.Namespace, "Console"], int]


@attrs.frozen
class Subcommand:
    name: str
    help: str
    description: str
    epilog: str
    arguments: tuple[Argument, ...]
    run: Run


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(
    name: str, *, help: str, description: str, epilog: str, arguments: Sequence[Argument] = ()
) -> Callable[[Run], Run]:
    """Register ``run(args, console) -> exit status`` as ``posledger NAME``."""

    def register(run: Run) -> Run:
        SUBCOMMANDS[name] = Subcommand(name, help, description, epilog, tuple(arguments), run)
        return run

    return register


DB_ARGUMENT = argument("--db", metavar="URL", required=True, help=DB_HELP)
JSON_ARGUMENT = argument(
    "--json", action="store_true", help="print JSON for scripts instead of tables"
)


# --- opening a ledger that exists ----------------------------------------------------------


def ledger_url(text: str) -> str:
    """The ledger URL for ``--db``: a URL as given, or the path of an existing SQLite ledger.
    Refuses, in one line, anything that would open (and so create) an empty ledger."""
    if "://" not in text:
        if Path(text).expanduser().is_file():
            text = f"sqlite:///{text}"
        else:
            raise UsageError(
                f"not a ledger URL and no such file: {text!r}; use sqlite:///path.db or "
                "postgresql://user@host:5432/db"
            )
    if text.lower().startswith("sqlite:///"):
        path = text[len("sqlite:///") :]
        if path == ":memory:":
            raise UsageError(f"{text} lives inside one process: there is nothing to read there")
        _check_sqlite_ledger(Path(path).expanduser())
    if settings_for(text, create_tables=False).scheme == "memory":
        raise UsageError(f"{text} lives inside one process: there is nothing to read there")
    return text


def _check_sqlite_ledger(path: Path) -> None:
    if not path.exists():
        raise UsageError(
            f"no ledger at {path}: the file does not exist (create one with `posledger "
            f"init-db --db sqlite:///{path}`, or `posledger demo` for the demo ledger)"
        )
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not a ledger file")
    try:
        with open(path, "rb") as file:
            header = file.read(16)
        if header != b"SQLite format 3\x00":
            raise UsageError(f"{path} is not a SQLite database, so not a posledger ledger")
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    if "stored_events" not in tables:
        raise UsageError(f"{path} is a SQLite database without a posledger ledger in it")


def open_ledger(text: str, observers: Iterable[StoreObserver] = ()) -> Ledger:
    """Open the existing ledger named by ``--db`` without creating tables or files."""
    from posledger.ledger import Ledger

    return Ledger.open(
        ledger_url(text), create_tables=False, timeout=STORE_TIMEOUT_S, observers=observers
    )


def symbol_suggestion(symbol: str, keys: Sequence[PositionKey]) -> str:
    """' Did you mean ETHUSDT?' from the ledger's own symbols, or the symbols it holds."""
    import difflib

    symbols = sorted({k.symbol for k in keys})
    if not symbols:
        return " The ledger holds no keys."
    close = difflib.get_close_matches(symbol.upper(), symbols, n=3, cutoff=0.5)
    if close:
        return f" Did you mean {' or '.join(close)}?"
    shown = ", ".join(symbols[:8]) + (", …" if len(symbols) > 8 else "")
    return f" The ledger holds {shown}."


# --- output ----------------------------------------------------------------------------------


def make_console() -> Console:
    """A terminal gets colours and its own width; a pipe or file gets plain text, PIPE_WIDTH
    columns (unless $COLUMNS says otherwise) and no trailing spaces."""
    from rich.console import Console

    options: dict[str, Any] = {"highlight": False, "markup": False, "emoji": False}
    console = Console(**options)
    if console.is_terminal:
        return console
    width = None if "COLUMNS" in os.environ else PIPE_WIDTH
    plain = cast(TextIO, _TrimmedLines(sys.stdout))  # a TextIOBase: rich only writes and flushes
    return Console(file=plain, width=width, **options)


class _TrimmedLines(io.TextIOBase):
    """A text stream that drops the trailing spaces rich pads table lines with."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if lines:
            self.stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.stream.write(self.partial.rstrip(" "))
            self.partial = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def table(*columns: str, wrap: Sequence[str] | None = None) -> Table:
    """A plain table; only the columns in ``wrap`` (default: all) may fold onto more lines."""
    from rich import box
    from rich.table import Table

    made = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        folds = wrap is None or column in wrap
        made.add_column(column, overflow="fold", no_wrap=not folds)
    return made


def section(console: Console, title: str, content: Any | None) -> None:
    """A bold title line, then the table (if any), then a blank line."""
    from rich.text import Text

    console.print(Text(title, style="bold"))
    if content is not None:
        console.print(content)
    console.print()


def plain(value: object) -> object:
    """A value as JSON can hold it exactly: Decimals and times as text, enums by value."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PositionKey):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(plain(document), indent=2) + "\n")
    sys.stdout.flush()


Progress = Callable[[int, int], None]


@contextmanager
def progress_bar(description: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr while it is an interactive terminal (``TTY_INTERACTIVE=1``
    forces it); otherwise None, so pipes and CI logs stay clean."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_interactive:
        yield None
        return
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
