"""``posledger export``: every key's history (or every position) to CSV, JSON Lines or Parquet.

Rows stream from one bulk replay of the event log, so CSV and JSON Lines are written in
constant memory (one state per key is held, never the events) and Parquet one row group at a
time. Quantities, prices and PnL are written as exact decimal text (never floats); times are
ISO 8601 UTC (Parquet: ``timestamp[us, UTC]``). The file appears only when complete: rows go
to a temporary file next to ``--out``, renamed over it at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from posledger.audit import (
    HISTORY_COLUMNS,
    STATE_COLUMNS,
    history_record,
    history_stream,
    replay_all,
    state_record,
)
from posledger.audit.frames import BOOL_COLUMNS, INT_COLUMNS, NULLABLE_INT_COLUMNS, TIME_COLUMNS
from posledger.cli.base import (
    DB_ARGUMENT,
    PROG,
    Progress,
    UsageError,
    argument,
    open_ledger,
    plain,
    progress_bar,
    subcommand,
)
from posledger.cli.books import book_argument
from posledger.cli.corruption import reporting_corruption

if TYPE_CHECKING:
    from rich.console import Console

    from posledger.ledger import Ledger

FORMATS = ("csv", "jsonl", "parquet")
PARQUET_BATCH = 10_000
"""Rows per Parquet row group: what is held in memory at once."""
EXPORT_HINT = "pip install -e '.[export]'"

Record = Mapping[str, Any]
Writer = Callable[[IO[bytes], tuple[str, ...], Iterable[Record]], int]


@subcommand(
    "export",
    help="write every key's history (or every position) to CSV, JSON Lines or Parquet",
    description="""\
Write the whole ledger to a file for analysis elsewhere: with --what history (the
default) one row per event of every key, in log order, with the sizes before and after,
the execution, the reason and the evidence (the columns of posledger.audit's
HISTORY_COLUMNS); with --what positions one row per key (STATE_COLUMNS). --book
writes one book's keys only (docs/books.md).

Decimals are exact text, times ISO 8601 UTC (Parquet: timestamp[us, UTC]). CSV and
JSON Lines stream in constant memory; Parquet needs pyarrow (pip install
'posledger[export]') and holds one row group at a time. The file appears only complete.

Exit status: 0, 1 when a stored stream is damaged (posledger verify lists every
problem), 2 when the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} export --db posledger-demo.db --format csv --out history.csv
  {PROG} export --db sqlite:///positions.db --format parquet --out history.parquet
  {PROG} export --db sqlite:///positions.db --format jsonl --out positions.jsonl --what positions
""",
    arguments=(
        DB_ARGUMENT,
        argument("--format", required=True, choices=FORMATS, help="the file format"),
        argument("--out", required=True, metavar="PATH", help="the file to write (replaced)"),
        argument(
            "--what",
            choices=("history", "positions"),
            default="history",
            help="history: one row per event (default); positions: one row per key",
        ),
        book_argument("keys"),
    ),
)
@reporting_corruption
def export(args: argparse.Namespace, console: Console) -> int:
    out = Path(args.out).expanduser()
    writer = _writer(args.format)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"cannot write {out}: directory {out.resolve().parent} does not exist")
    with open_ledger(args.db) as ledger:
        where = ledger.settings.description
        with progress_bar(f"exporting {args.what}") as progress:
            columns, records = _records(ledger, args.what, args.book, progress)
            with _replacing(out) as file:
                count = writer(file, columns, records)
    noun = "history rows" if args.what == "history" else "positions"
    console.print(
        f"Wrote {count} {noun} from {where} to {out} ({args.format}, {_size(out)}).",
        soft_wrap=True,
    )
    return 0


def _records(
    ledger: Ledger, what: str, book: str | None, progress: Progress | None
) -> tuple[tuple[str, ...], Iterator[Record]]:
    if what == "positions":
        states = replay_all(ledger, progress=progress).values()
        chosen = (s for s in states if book is None or s.key.book == book)
        return STATE_COLUMNS, (state_record(s) for s in chosen)
    rows = history_stream(ledger, progress=progress)
    return HISTORY_COLUMNS, (history_record(r) for r in rows if book is None or r.key.book == book)


def _writer(format: str) -> Writer:
    if format == "parquet":
        try:
            import pyarrow  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise UsageError(f"--format parquet needs pyarrow: {EXPORT_HINT}") from None
        return _write_parquet
    return _write_csv if format == "csv" else _write_jsonl


@contextmanager
def _replacing(out: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``out``, renamed to it on success and removed on failure."""
    descriptor, name = tempfile.mkstemp(dir=out.resolve().parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        os.replace(name, out)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _text(value: object) -> str:
    """A CSV cell: exact decimal text, ISO times, '' for nothing."""
    shown = plain(value)
    if shown is None:
        return ""
    if isinstance(shown, bool):
        return "true" if shown else "false"
    return str(shown)


def _write_csv(file: IO[bytes], columns: tuple[str, ...], records: Iterable[Record]) -> int:
    with _text_stream(file) as text:
        out = csv.writer(text)
        out.writerow(columns)
        count = 0
        for record in records:
            out.writerow([_text(record[c]) for c in columns])
            count += 1
    return count


def _write_jsonl(file: IO[bytes], columns: tuple[str, ...], records: Iterable[Record]) -> int:
    with _text_stream(file) as text:
        count = 0
        for record in records:
            text.write(json.dumps({c: plain(record[c]) for c in columns}) + "\n")
            count += 1
    return count


@contextmanager
def _text_stream(file: IO[bytes]) -> Iterator[IO[str]]:
    import io

    text = io.TextIOWrapper(file, encoding="utf-8", newline="")
    try:
        yield text
    finally:
        text.flush()
        text.detach()


def _arrow_schema(columns: tuple[str, ...]) -> Any:
    import pyarrow

    def arrow_type(name: str) -> Any:
        if name in TIME_COLUMNS:
            return pyarrow.timestamp("us", tz="UTC")
        if name in INT_COLUMNS or name in NULLABLE_INT_COLUMNS:
            return pyarrow.int64()
        if name in BOOL_COLUMNS:
            return pyarrow.bool_()
        return pyarrow.string()

    return pyarrow.schema([(name, arrow_type(name)) for name in columns])


def _arrow_value(name: str, value: object) -> object:
    if value is None or name in TIME_COLUMNS or isinstance(value, bool | int):
        return value
    return plain(value)


def _write_parquet(file: IO[bytes], columns: tuple[str, ...], records: Iterable[Record]) -> int:
    import pyarrow
    import pyarrow.parquet  # type: ignore[import-untyped]

    schema = _arrow_schema(columns)
    count = 0
    with pyarrow.parquet.ParquetWriter(file, schema) as out:
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) == PARQUET_BATCH:
                out.write_table(_arrow_table(schema, columns, batch))
                count += len(batch)
                batch = []
        if batch or not count:
            out.write_table(_arrow_table(schema, columns, batch))
            count += len(batch)
    return count


def _arrow_table(schema: Any, columns: tuple[str, ...], batch: list[Record]) -> Any:
    import pyarrow

    data = {c: [_arrow_value(c, r[c]) for r in batch] for c in columns}
    return pyarrow.table(data, schema=schema)


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
