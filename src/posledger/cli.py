"""The ``posledger`` command.

Each subcommand is one function decorated with :func:`subcommand`, which declares its name, help,
examples and arguments; ``main`` builds the parser from the registry and runs the chosen one with
a rich ``Console``. Adding ``positions``, ``history``, ``verify``, ``export`` or ``sync`` later is
one more decorated function.

rich is an optional dependency (``pip install 'posledger[cli]'``); it is imported only when a
subcommand runs, so a missing rich costs a one-line hint, not a traceback. Output degrades to
plain text when stdout is not a terminal (rich drops colours; tables keep their layout). User
mistakes (a bad path, an unwritable directory) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import attrs

from posledger.errors import InvalidInput, StorageUnavailable

if TYPE_CHECKING:
    from rich.console import Console

    from posledger.demo import Chapter
    from posledger.position import PositionState

PROG = "posledger"
INSTALL_HINT = "posledger: the command line needs rich: pip install 'posledger[cli]'"
PIPE_WIDTH = 120
"""Columns used when stdout is not a terminal (and $COLUMNS is unset), so tables stay readable."""

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake of the user's (bad path, unwritable directory): one line, exit 2."""


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


# --- posledger demo ---------------------------------------------------------------------

DEFAULT_DEMO_DB = "posledger-demo.db"
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


@subcommand(
    "demo",
    help="replay the two incidents posledger exists for, step by step",
    description="""\
Replay both incidents posledger exists for against a real SQLite ledger, printing
every command, the events it wrote, the reconciliation outcomes and the open
positions before and after:

  seed 000  phantom positions after TP/SL fills the bot never saw, a failed read
            (not a snapshot), two confirming snapshots, and an open that never filled
  seed 002  partial fills of reduce-only exits: one delivered, two missed and
            corrected as stale_quantity (4160 -> 3160, 60 -> 59.88)

Times are fixed, so every run prints the same.""",
    epilog="""\
examples:
  posledger demo                       replay into ./posledger-demo.db (replaced if it exists)
  posledger demo --db /tmp/demo.db     keep the demo ledger somewhere else
  posledger demo > demo.txt            plain text, no colours, when not on a terminal
""",
    arguments=(
        argument(
            "--db",
            metavar="PATH",
            default=DEFAULT_DEMO_DB,
            help=f"SQLite file for the demo ledger (default: ./{DEFAULT_DEMO_DB}); "
            "an existing demo ledger there is deleted first",
        ),
    ),
)
def demo(args: argparse.Namespace, console: Console) -> int:
    from posledger.demo import run_demo

    path = Path(args.db).expanduser()
    if _prepare_fresh_db(path):
        console.print(f"Deleted the previous demo ledger {path}; starting from a fresh one.")
    chapters = run_demo(f"sqlite:///{path}")
    for chapter in chapters:
        _print_chapter(console, chapter)
    console.rule(characters="=")
    console.print(_summary(chapters, path))
    console.file.flush()
    return 0


def _prepare_fresh_db(path: Path) -> bool:
    """Check that ``path`` can hold a new ledger; delete an old posledger ledger there.
    Returns whether one was deleted. Anything else already at ``path`` is left alone."""
    parent = path.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot create {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot create {path}: directory {parent} is not writable")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file path, e.g. {path / DEFAULT_DEMO_DB}")
    if not path.exists():
        return False
    if not _is_posledger_store(path):
        raise UsageError(f"{path} exists and is not a posledger ledger; refusing to delete it")
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDECARS)):
        try:
            file.unlink(missing_ok=True)
        except OSError as error:
            raise UsageError(f"cannot delete {file}: {error.strerror or error}") from None
    return True


def _is_posledger_store(path: Path) -> bool:
    """An empty file, an empty SQLite database, or one holding only posledger events."""
    if path.stat().st_size == 0:
        return True
    try:
        with open(path, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                return False
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
            if not tables:
                return True
            if "stored_events" not in tables:
                return False
            (foreign,) = connection.execute(
                "SELECT count(*) FROM stored_events WHERE topic NOT LIKE 'posledger:%'"
            ).fetchone()
            return bool(foreign == 0)
        finally:
            connection.close()
    except (OSError, sqlite3.Error):
        return False


def _print_chapter(console: Console, chapter: Chapter) -> None:
    from rich.text import Text

    console.rule(
        Text(f" {chapter.number}. {chapter.title} ", style="bold"), align="left", characters="="
    )
    console.print(Text(f"seed {chapter.seed} · {chapter.started_at:%Y-%m-%d} UTC", style="dim"))
    console.print(Text(chapter.narrative, style="italic"))
    console.print()
    _section(console, "Commands", _commands_table(chapter))
    if chapter.events:
        _section(console, "Events written", _events_table(chapter))
    else:
        _section(console, "Events written: none (the ledger is unchanged)", None)
    if chapter.reports:
        _section(console, "Reconcile outcomes", _outcomes_table(chapter))
    before, after = chapter.open_before, chapter.open_after
    title = f"open_positions(): {len(before)} before, {len(after)} after"
    _section(console, title, _positions_table(before, after) if before or after else None)


def _table(*columns: str) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _section(console: Console, title: str, table: Any | None) -> None:
    """A bold title line, then the table (if any), then a blank line."""
    from rich.text import Text

    console.print(Text(title, style="bold"))
    if table is not None:
        console.print(table)
    console.print()


def _commands_table(chapter: Chapter) -> Any:
    from rich.text import Text

    table = _table("time", "command -> result")
    for command in chapter.commands:
        cell = Text(command.call)
        cell.append(f"\n-> {command.result}", style="cyan")
        table.add_row(f"{command.at:%m-%d %H:%M:%S}", cell)
    return table


def _events_table(chapter: Chapter) -> Any:
    from rich.text import Text

    table = _table("event", "symbol", "kind/reason", "before -> after", "why")
    for written in chapter.events:
        style = "bold yellow" if written.name in ("Reconciled", "Closed") else ""
        table.add_row(
            Text(written.name, style=style),
            written.symbol,
            written.label,
            written.change,
            written.why,
        )
    return table


def _outcomes_table(chapter: Chapter) -> Any:
    table = _table("snapshot", "symbol", "outcome", "correction", "events", "detail")
    for report in chapter.reports:
        for outcome in report.outcomes:
            table.add_row(
                f"{report.taken_at:%H:%M:%S}",
                outcome.key.symbol,
                outcome.outcome.value,
                outcome.correction.value if outcome.correction else "",
                ", ".join(outcome.events) or "none",
                outcome.detail,
            )
    return table


def _positions_table(before: Sequence[PositionState], after: Sequence[PositionState]) -> Any:
    from posledger.demo import holding

    was = {state.key: state for state in before}
    now = {state.key: state for state in after}
    table = _table("symbol", "before", "after")
    for key in sorted(was.keys() | now.keys(), key=str):
        table.add_row(
            key.symbol,
            holding(was[key]) if key in was else "-",
            holding(now[key]) if key in now else "-",
        )
    return table


def _summary(chapters: Sequence[Chapter], path: Path) -> str:
    events = sum(len(chapter.events) for chapter in chapters)
    corrections = Counter(
        outcome.correction.value
        for chapter in chapters
        for report in chapter.reports
        for outcome in report.corrections
        if outcome.correction is not None
    )
    fixed = ", ".join(f"{kind} {count}" for kind, count in sorted(corrections.items())) or "none"
    remaining = len(chapters[-1].open_after) if chapters else 0
    return (
        f"Demo complete: {len(chapters)} chapters, {events} events written to {path}.\n"
        f"Corrections: {fixed}. Open positions at the end: {remaining}."
    )


# --- main --------------------------------------------------------------------------------


MAIN_EPILOG = f"""\
examples:
  {PROG} demo                    replay both incidents into ./{DEFAULT_DEMO_DB}
  {PROG} demo --db /tmp/demo.db  the same, into another file
  {PROG} COMMAND --help          what one command does, with examples
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="posledger: an event-sourced position ledger for trading bots.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in SUBCOMMANDS.values():
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for item in command.arguments:
            sub.add_argument(*item.flags, **item.options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        console = _console()
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return USAGE_ERROR
    try:
        return SUBCOMMANDS[args.command].run(args, console)
    except (UsageError, InvalidInput, StorageUnavailable) as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


# --- posledger init-db ------------------------------------------------------------------


@subcommand(
    "init-db",
    help="create the ledger's tables (once, with a role that may create them)",
    description="""\
Create the event store's tables and the posledger_positions read model (with its
posledger_open_positions view) in the database (and schema) of URL, so that bots can
run with a least-privilege role and Ledger.open(url, create_tables=False). Running it
again is harmless: existing tables are kept as they are.""",
    epilog="""\
examples:
  posledger init-db 'postgresql://owner@db:5432/trading?schema=bot1'
  posledger init-db sqlite:///positions.db
""",
    arguments=(argument("url", metavar="URL", help="ledger URL (sqlite:/// or postgresql://)"),),
)
def init_db(args: argparse.Namespace, console: Console) -> int:
    from posledger.ledger import Ledger
    from posledger.readmodel import ReadModel

    with Ledger.open(args.url) as ledger:
        keys = len(ledger.keys())
    ReadModel.open(args.url).close()
    console.print(
        f"Ledger tables ready in {ledger.settings.description} ({keys} keys stored), "
        "with the posledger_positions read model."
    )
    return 0


def _console() -> Console:
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


def _version() -> str:
    try:
        return metadata.version("posledger")
    except metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
