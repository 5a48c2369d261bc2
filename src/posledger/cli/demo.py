"""``posledger demo`` (both seed incidents replayed into a SQLite ledger) and ``posledger
init-db`` (create the schema and tables once, with a role that may)."""

from __future__ import annotations

import argparse
import os
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posledger.cli.base import UsageError, argument, section, subcommand, table

if TYPE_CHECKING:
    from rich.console import Console

    from posledger.core.position import PositionState
    from posledger.demo import Chapter


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
    section(console, "Commands", _commands_table(chapter))
    if chapter.events:
        section(console, "Events written", _events_table(chapter))
    else:
        section(console, "Events written: none (the ledger is unchanged)", None)
    if chapter.reports:
        section(console, "Reconcile outcomes", _outcomes_table(chapter))
    before, after = chapter.open_before, chapter.open_after
    title = f"open_positions(): {len(before)} before, {len(after)} after"
    section(console, title, _positions_table(before, after) if before or after else None)


def _commands_table(chapter: Chapter) -> Any:
    from rich.text import Text

    made = table("time", "command -> result")
    for command in chapter.commands:
        cell = Text(command.call)
        cell.append(f"\n-> {command.result}", style="cyan")
        made.add_row(f"{command.at:%m-%d %H:%M:%S}", cell)
    return made


def _events_table(chapter: Chapter) -> Any:
    from rich.text import Text

    made = table("event", "symbol", "kind/reason", "before -> after", "why")
    for written in chapter.events:
        style = "bold yellow" if written.name in ("Reconciled", "Closed") else ""
        made.add_row(
            Text(written.name, style=style),
            written.symbol,
            written.label,
            written.change,
            written.why,
        )
    return made


def _outcomes_table(chapter: Chapter) -> Any:
    made = table("snapshot", "symbol", "outcome", "correction", "events", "detail")
    for report in chapter.reports:
        for outcome in report.outcomes:
            made.add_row(
                f"{report.taken_at:%H:%M:%S}",
                outcome.key.symbol,
                outcome.outcome.value,
                outcome.correction.value if outcome.correction else "",
                ", ".join(outcome.events) or "none",
                outcome.detail,
            )
    return made


def _positions_table(before: Sequence[PositionState], after: Sequence[PositionState]) -> Any:
    from posledger.audit.format import holding

    was = {state.key: state for state in before}
    now = {state.key: state for state in after}
    made = table("symbol", "before", "after")
    for key in sorted(was.keys() | now.keys(), key=str):
        made.add_row(
            key.symbol,
            holding(was[key]) if key in was else "-",
            holding(now[key]) if key in now else "-",
        )
    return made


def _summary(chapters: Sequence[Chapter], path: Path) -> str:
    events = sum(len(chapter.events) for chapter in chapters)
    keys = len({written.key for chapter in chapters for written in chapter.events})
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
        f"Demo complete: {len(chapters)} chapters, {events} events written to {path}, plus "
        f"{keys} KeyRegistered (one per key): {events + keys} in all.\n"
        f"Corrections: {fixed}. Open positions at the end: {remaining}.\n"
        f"Explore it: posledger history --db {path} AGIUSDT, posledger verify --db {path}"
    )


# --- posledger init-db ------------------------------------------------------------------


@subcommand(
    "init-db",
    help="create the ledger's schema and tables (once, with a role that may create them)",
    description="""\
Create the schema (PostgreSQL's ?schema=, if missing), the event store's tables and
the posledger_positions read model (with its posledger_open_positions view) in the
database of URL, so that bots can run with a least-privilege role and
Ledger.open(url, create_tables=False). Running it again is harmless: existing
tables are kept as they are. Every other command and Ledger.open find a missing
schema a configuration error: only this setup step creates one.""",
    epilog="""\
examples:
  posledger init-db --db 'postgresql://owner@db:5432/trading?schema=bot1'
  posledger init-db --db sqlite:///positions.db
  posledger init-db sqlite:///positions.db     the URL may also come without --db
""",
    arguments=(
        argument("--db", metavar="URL", help="ledger URL (sqlite:/// or postgresql://)"),
        argument("url", metavar="URL", nargs="?", help=argparse.SUPPRESS),
    ),
)
def init_db(args: argparse.Namespace, console: Console) -> int:
    from posledger.ledger import Ledger
    from posledger.store.readmodel import ReadModel
    from posledger.store.storage import settings_for

    url = _init_db_url(args)
    with Ledger(settings_for(url, create_schema=True)) as ledger:
        keys = len(ledger.keys())
    ReadModel.open(url).close()
    console.print(
        f"Ledger tables ready in {ledger.settings.description} ({keys} keys stored), "
        "with the posledger_positions read model."
    )
    return 0


def _init_db_url(args: argparse.Namespace) -> str:
    """``--db URL``, or the URL given alone (the older form), but not two different ones."""
    if args.db and args.url and args.db != args.url:
        raise UsageError(f"two URLs given ({args.url!r} and --db {args.db!r}); give one")
    url: str | None = args.db or args.url
    if not url:
        raise UsageError("init-db needs the ledger's URL: posledger init-db --db URL")
    return url
