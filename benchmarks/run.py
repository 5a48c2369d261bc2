"""posledger performance figures, each against a raw baseline measured in the same run.

    python benchmarks/run.py [--quick] [--backend sqlite|postgres|both]
                             [--postgres URL] [--json PATH] [--workdir DIR]

Prints the machine, then one machine-readable line per figure as it completes::

    ratio <figure>.<backend> <value>

and finally a markdown table. Ratios are posledger/baseline for rates (higher is better), except
``reconcile_unchanged_*`` (posledger time / baseline time, lower is better) and
``replay_memory*`` (the value is the peak RSS in MB of a subprocess, lower is better).

Figures (the performance issue's six, with the variants it asks for):

1. ``ingest_durable``: one writer, ``record_fill`` per execution (durable before it returns)
   against a raw INSERT + COMMIT of an equivalent row per fill.
2. ``ingest_concurrent``: 8 threads sharing one Ledger, distinct keys, total fills/s, against
   the raw single-writer rate of (1). ``ingest_concurrent_ledgers``: 8 threads with one Ledger
   each; ``ingest_concurrent_procs``: 8 processes (no shared GIL), same baseline.
3. ``backfill``: N executions over 500 keys through ``Ledger.backfill``, one call per round of
   pages (a page of 100 executions, Bybit's execution-list page size, for every key), against
   psycopg COPY / sqlite3 ``executemany`` in one transaction.
   The full run stops after the round of batches that exceeds ``--backfill-budget`` seconds and
   prints the N actually used (nothing is extrapolated).
4. ``replay``: ``Ledger.open(url).positions()`` on a fresh object over the backfill store against
   reading every stored row and ``json.loads`` of its state; ``replay_audit`` the same for
   ``posledger.audit.replay_all`` when that module exists; ``replay_vs_repository`` (and
   ``replay_audit_vs_repository``) against eventsourcing's ``repository.get`` key by key.
5. ``reconcile_unchanged_warm`` / ``_cold``: a Snapshot agreeing with every open position
   (asserted to write zero events) against folding the same states in memory.
6. ``replay_memory`` (and ``replay_memory_audit``): peak RSS of a subprocess that replays the
   backfill store, read from /proc/self/status VmHWM: ``ru_maxrss`` of a subprocess starts at
   its parent's RSS (Linux keeps it across fork+exec), so it cannot isolate the replay.

Rates exclude generating the input ``Fill`` objects, for posledger and baselines alike; both
start from the same ``Fill`` objects (the baselines turn them into rows and JSON inside the
timing). Every PostgreSQL store is a fresh schema, dropped at the end; SQLite files live in a
temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata
import json
import math
import multiprocessing
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from posledger import ExchangePosition, Fill, Ledger, PositionKey, Side, Snapshot
from posledger.core.events import POSITION_TOPICS, KeyRegistered, PositionEvent
from posledger.core.model import cached_key
from posledger.core.position import project
from posledger.core.reconcile import Outcome
from posledger.store.application import LedgerApplication
from posledger.store.snapshot import project_from_store
from posledger.store.storage import settings_for

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
QTY = Decimal("0.010")
SIDES = (Side.BUY, Side.BUY, Side.SELL, Side.SELL)
"""Per key: open, add, reduce, close; so a quarter of the fills end a lifecycle."""
WRITERS = 8
FLEET_STORES = 4
"""The fleet figure: WRITERS processes spread over this many stores on one server."""
LOAD_TOLERANCE = 0.5
"""Largest difference of the 1-minute load average per core between two runs that --compare
accepts: runs taken under different load are not compared."""
BACKFILL_KEYS = 500
BACKFILL_BATCH = 100

TARGETS: dict[str, tuple[str, float]] = {
    "ingest_durable": (">=", 0.6),
    "ingest_concurrent": (">=", 1.0),
    "ingest_concurrent_ledgers": (">=", 1.0),
    "ingest_concurrent_procs": (">=", 1.0),
    "ingest_fleet": (">=", 1.0),
    "backfill": (">=", 0.25),
    "replay": (">=", 0.5),
    "replay_audit": (">=", 0.5),
    "replay_vs_repository": (">=", 5.0),
    "replay_audit_vs_repository": (">=", 5.0),
    "reconcile_unchanged_warm": ("<=", 3.0),
    "reconcile_unchanged_cold": ("<=", 3.0),
    "replay_memory": ("<=", 300.0),
    "replay_memory_audit": ("<=", 300.0),
}
REQUIRED_FIGURES = tuple(name for name in TARGETS if "audit" not in name)
"""Printed on every run; the ``*audit*`` figures appear once posledger.audit exists."""


@dataclass(frozen=True)
class Config:
    quick: bool
    min_seconds: float
    """Shortest timed loop of a rate figure (the full run: long enough to be meaningful)."""
    repeats: int
    repeat_budget_s: float
    """Stop repeating a measurement once it has used this long (so 'median of 3 where cheap')."""
    backfill_n: int
    backfill_budget_s: float | None
    reconcile_keys: int


def config_for(quick: bool, backfill_budget_s: float | None) -> Config:
    if quick:
        return Config(True, 0.25, 1, 1.0, 20_000, None, 1_000)
    return Config(False, 2.0, 3, 30.0, 1_000_000, backfill_budget_s, 10_000)


@dataclass
class Result:
    figure: str
    backend: str
    ours: float
    ours_unit: str
    baseline: float | None
    baseline_unit: str
    ratio: float
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> tuple[str, float]:
        return TARGETS[self.figure]

    @property
    def met(self) -> bool:
        op, value = self.target
        return self.ratio >= value if op == ">=" else self.ratio <= value


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# --- deterministic data ---------------------------------------------------------------------


def bench_key(account: str, number: int) -> PositionKey:
    return PositionKey(
        venue="bybit", account=account, category="linear", symbol=f"S{number:05d}USDT"
    )


def fill_for(key_no: int, i: int, tag: str = "x") -> Fill:
    """The ``i``-th execution of key ``key_no``: always the same Fill for the same arguments."""
    return Fill(
        exec_id=f"{tag}-{key_no}-{i}",
        order_id=f"{tag}-{key_no}-o{i // 2}",
        side=SIDES[i % 4],
        qty=QTY,
        price=Decimal(500_000 + (i * 7_919 + key_no * 104_729) % 20_000).scaleb(-1),
        exec_time=T0 + timedelta(seconds=i, microseconds=key_no),
        fee=Decimal(1 + i % 50).scaleb(-3),
        seq=i + 1,
    )


def fill_payload(key: PositionKey, fill: Fill) -> str:
    """The baseline's JSON: the fill plus what the ledger decides, about the size of an event."""
    return json.dumps(
        {
            "key": str(key),
            "stream_id": key.stream_id.hex,
            "exec_id": fill.exec_id,
            "order_id": fill.order_id,
            "side": fill.side.value,
            "qty": str(fill.qty),
            "price": str(fill.price),
            "fee": str(fill.fee),
            "exec_time": fill.exec_time.isoformat(),
            "seq": fill.seq,
            "kind": fill.kind.value,
            "leaves_qty": None if fill.leaves_qty is None else str(fill.leaves_qty),
            "reduce_only": False,
            "overfill": "0",
            "absorbed": False,
        },
        separators=(",", ":"),
    )


FILL_COLUMNS = (
    "venue, account, category, symbol, idx, exec_id, order_id, side, qty, price, fee, "
    "exec_time, seq, kind, leaves_qty, payload"
)


def sqlite_row(key: PositionKey, fill: Fill) -> tuple[Any, ...]:
    return (
        key.venue,
        key.account,
        key.category,
        key.symbol,
        key.idx,
        fill.exec_id,
        fill.order_id,
        fill.side.value,
        str(fill.qty),
        str(fill.price),
        str(fill.fee),
        fill.exec_time.isoformat(),
        fill.seq,
        fill.kind.value,
        None if fill.leaves_qty is None else str(fill.leaves_qty),
        fill_payload(key, fill),
    )


def pg_row(key: PositionKey, fill: Fill) -> tuple[Any, ...]:
    return (
        key.venue,
        key.account,
        key.category,
        key.symbol,
        key.idx,
        fill.exec_id,
        fill.order_id,
        fill.side.value,
        fill.qty,
        fill.price,
        fill.fee,
        fill.exec_time,
        fill.seq,
        fill.kind.value,
        fill.leaves_qty,
        fill_payload(key, fill),
    )


# --- backends -------------------------------------------------------------------------------


class RawTable:
    """A plain fills table with the columns of a fill and a unique (venue, account, exec_id)."""

    def insert_commit(self, key: PositionKey, fill: Fill) -> None:
        raise NotImplementedError

    def bulk_load(self, rows: Iterable[tuple[PositionKey, Fill]]) -> None:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteRawTable(RawTable):
    def __init__(self, path: str) -> None:
        # eventsourcing.sqlite: autocommit connection with explicit BEGIN, WAL journal, and
        # PRAGMA synchronous left at SQLite's default (FULL); the same here.
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(
            "CREATE TABLE fills (id INTEGER PRIMARY KEY, venue TEXT NOT NULL, "
            "account TEXT NOT NULL, category TEXT NOT NULL, symbol TEXT NOT NULL, "
            "idx INTEGER NOT NULL, exec_id TEXT NOT NULL, order_id TEXT NOT NULL, "
            "side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL, fee TEXT NOT NULL, "
            "exec_time TEXT NOT NULL, seq INTEGER, kind TEXT NOT NULL, leaves_qty TEXT, "
            "payload TEXT NOT NULL, UNIQUE (venue, account, exec_id))"
        )
        self.insert = f"INSERT INTO fills ({FILL_COLUMNS}) VALUES ({', '.join('?' * 16)})"

    def insert_commit(self, key: PositionKey, fill: Fill) -> None:
        row = sqlite_row(key, fill)
        self.connection.execute("BEGIN")
        self.connection.execute(self.insert, row)
        self.connection.execute("COMMIT")

    def bulk_load(self, rows: Iterable[tuple[PositionKey, Fill]]) -> None:
        self.connection.execute("BEGIN")
        self.connection.executemany(self.insert, (sqlite_row(k, f) for k, f in rows))
        self.connection.execute("COMMIT")

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM fills").fetchone()[0])

    def close(self) -> None:
        self.connection.close()


class PostgresRawTable(RawTable):
    def __init__(self, server: str, schema: str) -> None:
        import psycopg

        self.connection = psycopg.connect(server)
        self.table = f'"{schema}".fills'
        self.connection.execute(
            f"CREATE TABLE {self.table} (id bigserial PRIMARY KEY, venue text NOT NULL, "
            "account text NOT NULL, category text NOT NULL, symbol text NOT NULL, "
            "idx smallint NOT NULL, exec_id text NOT NULL, order_id text NOT NULL, "
            "side text NOT NULL, qty numeric NOT NULL, price numeric NOT NULL, "
            "fee numeric NOT NULL, exec_time timestamptz NOT NULL, seq bigint, "
            "kind text NOT NULL, leaves_qty numeric, payload json NOT NULL, "
            "UNIQUE (venue, account, exec_id))"
        )
        self.connection.commit()
        self.insert = f"INSERT INTO {self.table} ({FILL_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})"
        self.cursor = self.connection.cursor()

    def insert_commit(self, key: PositionKey, fill: Fill) -> None:
        self.cursor.execute(self.insert, pg_row(key, fill), prepare=True)
        self.connection.commit()

    def bulk_load(self, rows: Iterable[tuple[PositionKey, Fill]]) -> None:
        with self.cursor.copy(f"COPY {self.table} ({FILL_COLUMNS}) FROM STDIN") as copy:
            for key, fill in rows:
                copy.write_row(pg_row(key, fill))
        self.connection.commit()

    def count(self) -> int:
        row = self.connection.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        self.connection.commit()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.connection.close()


class Backend:
    name: str

    def ledger_url(self, label: str) -> str:
        """A fresh, empty store."""
        raise NotImplementedError

    def raw_table(self, label: str) -> RawTable:
        raise NotImplementedError

    def count_events(self, url: str) -> int:
        raise NotImplementedError

    def event_rows(self, url: str) -> Iterator[tuple[str, bytes]]:
        """Every stored event row (topic, state), in log order."""
        raise NotImplementedError

    def stream_ids(self, url: str) -> list[uuid.UUID]:
        """The position streams (their KeyRegistered rows)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, workdir: str | None) -> None:
        self.directory = tempfile.mkdtemp(prefix="posledger-bench-", dir=workdir)

    def _path(self, label: str) -> str:
        return os.path.join(self.directory, f"{label}.db")

    def ledger_url(self, label: str) -> str:
        return f"sqlite:///{self._path(label)}"

    def raw_table(self, label: str) -> RawTable:
        return SqliteRawTable(self._path(f"raw-{label}"))

    @staticmethod
    def _connect(url: str) -> sqlite3.Connection:
        return sqlite3.connect(url[len("sqlite:///") :])

    def count_events(self, url: str) -> int:
        with contextlib.closing(self._connect(url)) as connection:
            return int(connection.execute("SELECT count(*) FROM stored_events").fetchone()[0])

    def event_rows(self, url: str) -> Iterator[tuple[str, bytes]]:
        with contextlib.closing(self._connect(url)) as connection:
            yield from connection.execute("SELECT topic, state FROM stored_events ORDER BY rowid")

    def stream_ids(self, url: str) -> list[uuid.UUID]:
        with contextlib.closing(self._connect(url)) as connection:
            rows = connection.execute(
                "SELECT originator_id FROM stored_events WHERE topic = ? ORDER BY rowid",
                (KeyRegistered.TOPIC,),
            )
            return [uuid.UUID(row[0]) for row in rows]

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version} (files in {self.directory})"

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, server: str) -> None:
        import psycopg

        self.server = server
        self.run_id = f"plbench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.schemas: list[str] = []
        self.admin = psycopg.connect(server, autocommit=True)

    def _schema(self, label: str) -> str:
        schema = f"{self.run_id}_{label}".lower()
        self.admin.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return schema

    def _schema_of(self, url: str) -> str:
        return url.rsplit("schema=", 1)[1]

    def ledger_url(self, label: str) -> str:
        separator = "&" if "?" in self.server else "?"
        return f"{self.server}{separator}schema={self._schema(label)}"

    def raw_table(self, label: str) -> RawTable:
        return PostgresRawTable(self.server, self._schema(f"raw_{label}"))

    def count_events(self, url: str) -> int:
        table = f'"{self._schema_of(url)}".posledger_events'
        row = self.admin.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def event_rows(self, url: str) -> Iterator[tuple[str, bytes]]:
        import psycopg

        # Pages of 10,000 by notification_id over binary cursors: faster here than a named
        # (server-side) cursor or COPY-less streaming.
        table = f'"{self._schema_of(url)}".posledger_events'
        query = (
            f"SELECT notification_id, topic, state FROM {table} "
            "WHERE notification_id > %s ORDER BY notification_id LIMIT 10000"
        )
        with psycopg.connect(self.server) as connection:
            last = 0
            while True:
                rows = connection.cursor(binary=True).execute(query, (last,)).fetchall()
                for _, topic, state in rows:
                    yield topic, state
                if len(rows) < 10_000:
                    return
                last = rows[-1][0]

    def stream_ids(self, url: str) -> list[uuid.UUID]:
        table = f'"{self._schema_of(url)}".posledger_events'
        rows = self.admin.execute(
            f"SELECT originator_id FROM {table} WHERE topic = %s ORDER BY notification_id",
            (KeyRegistered.TOPIC,),
        ).fetchall()
        return [row[0] for row in rows]

    def describe(self) -> str:
        settings = {
            name: self.admin.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        }
        return (
            f"PostgreSQL {settings['server_version']} (fsync={settings['fsync']}, "
            f"synchronous_commit={settings['synchronous_commit']}, "
            f"shared_buffers={settings['shared_buffers']}), schemas {self.run_id}_*"
        )

    def close(self) -> None:
        for schema in self.schemas:
            with contextlib.suppress(Exception):
                self.admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        self.admin.close()


# --- measuring helpers ----------------------------------------------------------------------


def settled() -> None:
    """Collect garbage before a timed section, so that no measurement pays the collector's debt
    left by the one before it: posledger pauses the collector during bulk calls, and a baseline
    timed right after one would pay for the collection it deferred."""
    gc.collect()


def repeated(measure: Callable[[], float], cfg: Config) -> list[float]:
    """Up to ``cfg.repeats`` runs of ``measure``, fewer once they have used the repeat budget."""
    values: list[float] = []
    started = time.perf_counter()
    for _ in range(cfg.repeats):
        settled()
        values.append(measure())
        if time.perf_counter() - started > cfg.repeat_budget_s:
            break
    return values


def per_call(call: Callable[[], Any], min_seconds: float) -> float:
    """Seconds per call of a short in-memory operation, repeated for at least ``min_seconds``."""
    calls = 0
    settled()
    started = time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return elapsed / calls


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}"


def fmt_seconds(value: float) -> str:
    return f"{value * 1000:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def emit(result: Result, results: list[Result]) -> None:
    results.append(result)
    print(f"ratio {result.figure}.{result.backend} {result.ratio:.3f}", flush=True)
    for note in result.notes:
        log(f"{result.figure}.{result.backend}: {note}")


# --- figure 1: durable ingest ---------------------------------------------------------------


def ingest_rate(
    write: Callable[[PositionKey, Fill], object],
    keys: Sequence[PositionKey],
    next_i: list[int],
    cfg: Config,
    latencies: list[float],
) -> float:
    """Single writer, round-robin over ``keys``: fills/s of ``write``, timing only the write
    (each call's seconds appended to ``latencies``). ``Ledger.record_fill`` (durable on return)
    for posledger; for the baseline of (1), one INSERT + COMMIT of an equivalent row per fill."""
    busy = 0.0
    done = 0
    settled()
    while busy < cfg.min_seconds:
        k = done % len(keys)
        fill = fill_for(k, next_i[k], "ingest")
        next_i[k] += 1
        started = time.perf_counter()
        write(keys[k], fill)
        took = time.perf_counter() - started
        latencies.append(took)
        busy += took
        done += 1
    return done / busy


def percentiles(latencies: list[float]) -> str:
    """p50 and p99 of per-call seconds, in milliseconds."""
    cuts = statistics.quantiles(latencies, n=100)
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


def figure_ingest_durable(
    backend: Backend, cfg: Config, results: list[Result]
) -> tuple[str, float, float]:
    url = backend.ledger_url("ingest")
    keys = [bench_key("ingest", k) for k in range(WRITERS)]
    ours_i = [0] * len(keys)
    raw_i = [0] * len(keys)
    table = backend.raw_table("ingest")
    ours: list[float] = []
    raw: list[float] = []
    ours_latency: list[float] = []
    raw_latency: list[float] = []
    with Ledger.open(url) as ledger:
        for k, key in enumerate(keys):  # register the keys outside the timing
            ledger.record_fill(key, fill_for(k, 0, "ingest"))
            table.insert_commit(key, fill_for(k, 0, "ingest"))
            ours_i[k] = raw_i[k] = 1
        started = time.perf_counter()
        for _ in range(cfg.repeats):  # interleaved, so drift hits both alike
            ours.append(ingest_rate(ledger.record_fill, keys, ours_i, cfg, ours_latency))
            raw.append(ingest_rate(table.insert_commit, keys, raw_i, cfg, raw_latency))
            if time.perf_counter() - started > cfg.repeat_budget_s:
                break
    stored = backend.count_events(url)
    fills = sum(ours_i)
    table.close()
    ours_rate, raw_rate = statistics.median(ours), statistics.median(raw)
    sample = fill_for(0, 1, "ingest")
    emit(
        Result(
            "ingest_durable",
            backend.name,
            ours_rate,
            "fills/s",
            raw_rate,
            "fills/s",
            ours_rate / raw_rate,
            [
                f"runs posledger {[round(v) for v in ours]}, raw {[round(v) for v in raw]}",
                f"latency of one durable write: record_fill {percentiles(ours_latency)}; "
                f"raw INSERT + COMMIT {percentiles(raw_latency)}",
                f"posledger stored {stored / fills:.2f} event rows per fill; baseline payload "
                f"{len(fill_payload(keys[0], sample))} B of JSON + 15 columns per fill",
            ],
        ),
        results,
    )
    return url, ours_rate, raw_rate


# --- figure 2: concurrent ingest ------------------------------------------------------------


Timed = tuple[float, int, float]
"""(seconds, fills, CPU seconds the whole machine was busy meanwhile: writers and server)."""


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _thread_writers(ledgers: Sequence[Ledger], account: str, per_writer: int) -> Timed:
    """WRITERS threads, thread t on its own key with ``ledgers[t % len(ledgers)]``."""
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []
    work = [
        (bench_key(account, t), [fill_for(t, i, account) for i in range(per_writer)])
        for t in range(WRITERS)
    ]

    def writer(t: int) -> None:
        key, fills = work[t]
        ledger = ledgers[t % len(ledgers)]
        barrier.wait()
        try:
            for fill in fills:
                ledger.record_fill(key, fill)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(WRITERS)]
    for thread in threads:
        thread.start()
    settled()
    barrier.wait()
    started, busy = time.perf_counter(), machine_busy_s()
    for thread in threads:
        thread.join()
    elapsed, busy = time.perf_counter() - started, machine_busy_s() - busy
    if errors:
        raise errors[0]
    return elapsed, WRITERS * per_writer, busy


def _process_writer(
    url: str, account: str, t: int, per_writer: int, opening: Any, barrier: Any, results: Any
) -> None:
    """One of the WRITERS processes: its own Ledger, its own key."""
    try:
        key = bench_key(account, t)
        fills = [fill_for(t, i, account) for i in range(per_writer)]
        # One Ledger.open at a time: the figure is about writes, and concurrent opens on
        # PostgreSQL race on eventsourcing's DDL ("tuple concurrently updated"; Ledger retries
        # that since 1fbfca6, within its timeout, which a loaded machine can exceed).
        with opening:
            ledger = Ledger.open(url)
        with ledger:
            barrier.wait()
            for fill in fills:
                ledger.record_fill(key, fill)
        results.put((t, None))
    except BaseException as error:
        barrier.abort()
        results.put((t, f"{type(error).__name__}: {error}"))
        raise


def _process_context() -> Any:
    """forkserver with posledger preloaded: a clean process (no inherited connections or pool
    threads, unlike fork) that starts without re-importing everything (unlike spawn)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "posledger", "posledger.ledger", "psycopg"])
    return context


def _process_writers(urls: Sequence[str], account: str, per_writer: int) -> Timed:
    """WRITERS processes, the t-th writing to ``urls[t % len(urls)]``, started together."""
    context = _process_context()
    opening = context.Lock()
    barrier = context.Barrier(WRITERS + 1)
    queue = context.Queue()
    processes = [
        context.Process(
            target=_process_writer,
            args=(urls[t % len(urls)], account, t, per_writer, opening, barrier, queue),
        )
        for t in range(WRITERS)
    ]
    for process in processes:
        process.start()
    outcomes: list[tuple[int, str | None]] = []
    try:
        barrier.wait(timeout=120)
        started, busy = time.perf_counter(), machine_busy_s()
        outcomes = [queue.get(timeout=600) for _ in processes]
        elapsed, busy = time.perf_counter() - started, machine_busy_s() - busy
    except threading.BrokenBarrierError:
        with contextlib.suppress(Exception):
            outcomes.append(queue.get(timeout=10))
        elapsed = math.nan
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    failures = [error for _, error in outcomes if error]
    if failures or math.isnan(elapsed):
        raise RuntimeError(f"writer process failed: {failures[0] if failures else 'unknown'}")
    return elapsed, WRITERS * per_writer, busy


def _rate_of(
    run: Callable[[str], Timed], figure: str, cpu_per_fill: list[float]
) -> Callable[[], float]:
    """fills/s of successive runs, each on its own keys (a fresh account per attempt); each
    run's machine CPU seconds per fill go to ``cpu_per_fill``."""
    attempts = iter(range(1_000))

    def measure() -> float:
        elapsed, fills, busy = run(f"{figure}-{next(attempts)}")
        cpu_per_fill.append(busy / fills)
        return fills / elapsed

    return measure


def cpu_bound(cpu_per_fill: float, rate: float) -> str:
    """How far the machine's CPU lets writers go: fills/s if every core worked on nothing
    else, given the CPU one fill cost (client, server and all)."""
    cores = os.cpu_count() or 1
    return (
        f"machine CPU {cpu_per_fill * 1000:.2f} ms per fill, {cpu_per_fill * rate / cores:.0%} "
        f"of {cores} cores busy: at most {cores / cpu_per_fill:,.0f} fills/s on this machine"
    )


def figure_ingest_concurrent(
    backend: Backend,
    cfg: Config,
    results: list[Result],
    url: str,
    single_ours: float,
    single_raw: float,
) -> None:
    # Fixed work sized so that matching the single-writer rate takes cfg.min_seconds.
    per_writer = max(20, math.ceil(single_ours * cfg.min_seconds / WRITERS))

    def shared(account: str) -> Timed:
        with Ledger.open(url) as ledger:
            return _thread_writers([ledger], account, per_writer)

    def own(account: str) -> Timed:
        ledgers = [Ledger.open(url) for _ in range(WRITERS)]
        try:
            return _thread_writers(ledgers, account, per_writer)
        finally:
            for ledger in ledgers:
                ledger.close()

    def processes(account: str) -> Timed:
        return _process_writers([url], account, per_writer)

    def fleet(account: str) -> Timed:
        label = account.replace("-", "_")  # a schema name: eventsourcing takes no "-" there
        stores = [backend.ledger_url(f"{label}_store{s}") for s in range(FLEET_STORES)]
        return _process_writers(stores, account, per_writer)

    variants: list[tuple[str, str, Callable[[str], Timed]]] = [
        ("ingest_concurrent", "8 threads sharing one Ledger", shared),
        ("ingest_concurrent_ledgers", "8 threads, one Ledger each", own),
        ("ingest_concurrent_procs", "8 processes, one Ledger each", processes),
        (
            "ingest_fleet",
            f"{FLEET_STORES} stores x {WRITERS // FLEET_STORES} processes on one server "
            "(aggregate)",
            fleet,
        ),
    ]
    for figure, how, run in variants:
        cpu_per_fill: list[float] = []
        runs = repeated(_rate_of(run, figure, cpu_per_fill), cfg)
        rate = statistics.median(runs)
        emit(
            Result(
                figure,
                backend.name,
                rate,
                "fills/s",
                single_raw,
                "fills/s (raw, 1 writer)",
                rate / single_raw,
                [
                    f"{how}, {per_writer} fills each, distinct keys; runs "
                    f"{[round(v) for v in runs]}; posledger single writer {single_ours:,.0f}/s",
                    cpu_bound(statistics.median(cpu_per_fill), rate),
                ],
            ),
            results,
        )


# --- figure 3: backfill ---------------------------------------------------------------------


def backfill_plan(cfg: Config) -> tuple[list[PositionKey], int, int]:
    keys = [bench_key("hist", k) for k in range(BACKFILL_KEYS)]
    per_key = cfg.backfill_n // BACKFILL_KEYS
    return keys, per_key, min(BACKFILL_BATCH, per_key)


def backfill_batches(
    keys: Sequence[PositionKey], per_key: int, batch: int, rounds: int
) -> Iterator[tuple[int, list[Fill]]]:
    """Round by round, one batch per key: how a paginated history import arrives."""
    for r in range(rounds):
        for k in range(len(keys)):
            stop = min((r + 1) * batch, per_key)
            yield k, [fill_for(k, i, "hist") for i in range(r * batch, stop)]


def backfill_posledger(url: str, cfg: Config) -> tuple[float, int, int]:
    """(seconds inside Ledger.backfill, fills imported, rounds); stops after the round that
    exceeds the budget (full run), never mid-round."""
    keys, per_key, batch = backfill_plan(cfg)
    rounds = math.ceil(per_key / batch)
    busy = 0.0
    fills = 0
    started = time.perf_counter()
    done_rounds = 0
    with Ledger.open(url) as ledger:
        generator = backfill_batches(keys, per_key, batch, rounds)
        for r in range(rounds):
            page = dict(next(generator) for _ in keys)
            settled()
            before = time.perf_counter()
            ledger.backfill({keys[k]: batch_fills for k, batch_fills in page.items()})
            busy += time.perf_counter() - before
            fills += sum(len(batch_fills) for batch_fills in page.values())
            done_rounds = r + 1
            wall = time.perf_counter() - started
            log(f"backfill: round {done_rounds}/{rounds}, {fills:,} fills, {wall:.0f} s")
            if cfg.backfill_budget_s is not None and wall > cfg.backfill_budget_s:
                break
    return busy, fills, done_rounds


def backfill_raw(table: RawTable, cfg: Config, rounds: int) -> tuple[float, int]:
    """The baseline of (3): the same rows in one COPY / one executemany transaction. Generating
    the Fill objects is timed separately and subtracted."""
    keys, per_key, batch = backfill_plan(cfg)
    generating = 0.0
    count = 0

    def rows() -> Iterator[tuple[PositionKey, Fill]]:
        nonlocal generating, count
        batches = backfill_batches(keys, per_key, batch, rounds)
        while True:
            before = time.perf_counter()
            item = next(batches, None)
            generating += time.perf_counter() - before
            if item is None:
                return
            k, fills = item
            count += len(fills)
            for fill in fills:
                yield keys[k], fill

    settled()
    started = time.perf_counter()
    table.bulk_load(rows())
    return time.perf_counter() - started - generating, count


def figure_backfill(backend: Backend, cfg: Config, results: list[Result]) -> str:
    url = backend.ledger_url("backfill")
    busy, fills, rounds = backfill_posledger(url, cfg)
    table = backend.raw_table("backfill")
    raw_seconds, raw_fills = backfill_raw(table, cfg, rounds)
    assert raw_fills == fills == table.count(), (raw_fills, fills)
    table.close()
    ours, raw = fills / busy, raw_fills / raw_seconds
    keys, _, batch = backfill_plan(cfg)
    notes = [
        f"N = {fills:,} fills over {len(keys)} keys (batches of {batch}); posledger "
        f"{fmt_seconds(busy)}, baseline {fmt_seconds(raw_seconds)}",
    ]
    if fills < cfg.backfill_n:
        notes.append(
            f"stopped after {rounds} rounds by the {cfg.backfill_budget_s:.0f} s budget: "
            f"N = {fills:,}, not {cfg.backfill_n:,} (nothing extrapolated)"
        )
    print(f"# backfill.{backend.name} N={fills}", flush=True)
    emit(
        Result("backfill", backend.name, ours, "fills/s", raw, "fills/s", ours / raw, notes),
        results,
    )
    return url


# --- figure 4: replay -----------------------------------------------------------------------


def replay_posledger(url: str, opens: list[float] | None = None) -> float:
    """Seconds for a fresh Ledger to open and return every position; ``opens`` collects the
    share spent in Ledger.open (discovering the keys)."""
    cached_key.cache_clear()  # a fresh process would hash every key again
    settled()
    started = time.perf_counter()
    with Ledger.open(url) as ledger:
        if opens is not None:
            opens.append(time.perf_counter() - started)
        states = ledger.positions()
    elapsed = time.perf_counter() - started
    assert states, "nothing replayed"
    return elapsed


def replay_raw(backend: Backend, url: str) -> float:
    """The baseline of (4): every stored row read and its JSON decoded, no domain logic."""
    settled()
    started = time.perf_counter()
    count = 0
    for _topic, state in backend.event_rows(url):
        json.loads(state)
        count += 1
    elapsed = time.perf_counter() - started
    assert count, "no rows"
    return elapsed


def replay_repository(url: str, stream_ids: Sequence[uuid.UUID]) -> float:
    """eventsourcing's one-aggregate-at-a-time path: repository.get for every key (with the
    snapshots the ledger's application is configured with)."""
    cached_key.cache_clear()
    settled()
    started = time.perf_counter()
    app = LedgerApplication.for_settings(settings_for(url))
    try:
        for stream_id in stream_ids:
            app.repository.get(stream_id, projector_func=project_from_store)  # type: ignore[type-var]
    finally:
        app.close()
    return time.perf_counter() - started


def load_replay_all() -> Callable[[str], Any] | None:
    """``posledger.audit.replay_all`` when it exists and imports; it is being written alongside
    this script, so any failure to import it skips its figures instead of the whole run."""
    try:
        module = importlib.import_module("posledger.audit")
    except Exception as error:
        if not isinstance(error, ModuleNotFoundError) or error.name != "posledger.audit":
            log(f"posledger.audit does not import: {type(error).__name__}: {error}")
        return None
    replay_all = getattr(module, "replay_all", None)
    return replay_all if callable(replay_all) else None


def replay_audit(replay_all: Callable[[str], Any], url: str) -> float:
    cached_key.cache_clear()
    settled()
    started = time.perf_counter()
    replay_all(url)
    return time.perf_counter() - started


def figure_replay(backend: Backend, cfg: Config, results: list[Result], url: str) -> None:
    rows = backend.count_events(url)
    stream_ids = backend.stream_ids(url)
    opens: list[float] = []
    ours = repeated(lambda: replay_posledger(url, opens), cfg)
    raw = repeated(lambda: replay_raw(backend, url), cfg)
    repo = repeated(lambda: replay_repository(url, stream_ids), cfg)
    t_ours, t_raw, t_repo = (statistics.median(v) for v in (ours, raw, repo))
    shape = f"{rows:,} stored rows, {len(stream_ids)} keys"
    emit(
        Result(
            "replay",
            backend.name,
            rows / t_ours,
            "rows/s",
            rows / t_raw,
            "rows/s",
            t_raw / t_ours,
            [
                f"{shape}; Ledger.open(url).positions() {fmt_seconds(t_ours)} "
                f"(runs {[round(v, 3) for v in ours]}; of which Ledger.open "
                f"{fmt_seconds(statistics.median(opens))}), raw read+json.loads "
                f"{fmt_seconds(t_raw)}"
            ],
        ),
        results,
    )
    emit(
        Result(
            "replay_vs_repository",
            backend.name,
            rows / t_ours,
            "rows/s",
            rows / t_repo,
            "rows/s (repository.get)",
            t_repo / t_ours,
            [
                f"{shape}; repository.get per key {fmt_seconds(t_repo)} "
                f"(runs {[round(v, 3) for v in repo]})"
            ],
        ),
        results,
    )
    replay_all = load_replay_all()
    if replay_all is None:
        log("replay_audit: posledger.audit.replay_all not importable; skipped")
        return
    try:
        audit = repeated(lambda: replay_audit(replay_all, url), cfg)
    except Exception as error:
        log(f"replay_audit: replay_all(url) failed, skipped: {type(error).__name__}: {error}")
        return
    t_audit = statistics.median(audit)
    for figure, base, unit in (
        ("replay_audit", t_raw, "rows/s"),
        ("replay_audit_vs_repository", t_repo, "rows/s (repository.get)"),
    ):
        emit(
            Result(
                figure,
                backend.name,
                rows / t_audit,
                "rows/s",
                rows / base,
                unit,
                base / t_audit,
                [f"{shape}; posledger.audit.replay_all(url) {fmt_seconds(t_audit)}"],
            ),
            results,
        )


# --- figure 5: reconcile with nothing to correct --------------------------------------------


RECONCILE_FILLS = 3
"""Per key: buy, buy, sell, so every key holds an open long of one QTY."""


def reconcile_store(backend: Backend, cfg: Config) -> tuple[str, Ledger, Snapshot]:
    url = backend.ledger_url("reconcile")
    ledger = Ledger.open(url)
    for k in range(cfg.reconcile_keys):
        key = bench_key("recon", k)
        ledger.record_fills(key, [fill_for(k, i, "recon") for i in range(RECONCILE_FILLS)])
    snapshot = Snapshot(
        venue="bybit",
        account="recon",
        category="linear",
        taken_at=T0 + timedelta(days=1),
        positions=[
            ExchangePosition(symbol=bench_key("recon", k).symbol, idx=0, side=Side.BUY, size=QTY)
            for k in range(cfg.reconcile_keys)
        ],
        open_order_ids=(),
    )
    return url, ledger, snapshot


def reconcile_once(ledger: Ledger, snapshot: Snapshot, keys: int) -> float:
    started = time.perf_counter()
    report = ledger.reconcile(snapshot, now=snapshot.taken_at)
    elapsed = time.perf_counter() - started
    assert report.events_written == 0, f"an agreeing snapshot wrote {report.events_written} events"
    assert len(report.outcomes) == keys, (len(report.outcomes), keys)
    assert all(o.outcome is Outcome.AGREES for o in report.outcomes)
    return elapsed


def events_in_memory(url: str) -> list[list[PositionEvent]]:
    """Every position stream's events, decoded, grouped by stream (outside any timing)."""
    app = LedgerApplication.for_settings(settings_for(url))
    streams: dict[uuid.UUID, list[PositionEvent]] = {}
    position = 0
    try:
        while True:
            page = app.recorder.select_notifications(
                start=position, limit=1_000, topics=POSITION_TOPICS, inclusive_of_start=False
            )
            for notification in page:
                event = app.mapper.to_domain_event(notification)
                streams.setdefault(event.originator_id, []).append(event)  # type: ignore[arg-type]
            if len(page) < 1_000:
                break
            position = page[-1].id
    finally:
        app.close()
    return list(streams.values())


def fold_all(streams: Sequence[list[PositionEvent]]) -> None:
    """The baseline of (5): the same states folded from events already in memory."""
    for events in streams:
        project(None, events)


def figure_reconcile(backend: Backend, cfg: Config, results: list[Result]) -> None:
    keys = cfg.reconcile_keys
    url, warm_ledger, snapshot = reconcile_store(backend, cfg)
    rows_before = backend.count_events(url)
    try:
        reconcile_once(warm_ledger, snapshot, keys)  # first pass outside the timing
        warm = repeated(lambda: reconcile_once(warm_ledger, snapshot, keys), cfg)
    finally:
        warm_ledger.close()
    opens: list[float] = []

    def cold_once() -> float:
        cached_key.cache_clear()  # cold: as in a fresh process, no key known yet
        started = time.perf_counter()
        with Ledger.open(url) as ledger:
            opened = time.perf_counter() - started
            opens.append(opened)
            return opened + reconcile_once(ledger, snapshot, keys)

    cold = repeated(cold_once, cfg)
    rows_after = backend.count_events(url)
    assert rows_after == rows_before, f"reconcile wrote {rows_after - rows_before} event rows"
    streams = events_in_memory(url)
    assert len(streams) == keys
    events = sum(len(s) for s in streams)
    base = statistics.median(
        per_call(lambda: fold_all(streams), cfg.min_seconds / 4) for _ in range(3)
    )
    t_warm, t_cold = statistics.median(warm), statistics.median(cold)
    common = (
        f"{keys:,} open positions, {events:,} events folded by the baseline; "
        f"event rows {rows_before:,} before and after (0 written)"
    )
    emit(
        Result(
            "reconcile_unchanged_warm",
            backend.name,
            t_warm,
            "s",
            base,
            "s (fold in memory)",
            t_warm / base,
            [f"{common}; runs {[round(v, 4) for v in warm]}"],
        ),
        results,
    )
    emit(
        Result(
            "reconcile_unchanged_cold",
            backend.name,
            t_cold,
            "s",
            base,
            "s (fold in memory)",
            t_cold / base,
            [
                f"fresh Ledger: Ledger.open {fmt_seconds(statistics.median(opens))} + reconcile; "
                f"runs {[round(v, 3) for v in cold]}"
            ],
        ),
        results,
    )


# --- figure 6: replay memory ----------------------------------------------------------------


MEMORY_CHILD = r"""
import json, resource, sys, time
from posledger import Ledger

def peak_mb():
    # VmHWM, the peak RSS of this process's own address space. ru_maxrss is NOT used as the
    # figure: Linux carries it across fork+exec, so a subprocess of a big parent reports the
    # parent's RSS until it grows past it.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

url, mode = sys.argv[1], sys.argv[2]
if mode == "audit":
    from posledger.audit import replay_all
before = peak_mb()
started = time.perf_counter()
if mode == "audit":
    result = replay_all(url)
    count = len(result) if hasattr(result, "__len__") else None
else:
    with Ledger.open(url) as ledger:
        count = len(ledger.positions())
seconds = time.perf_counter() - started
print(json.dumps({"peak_mb": peak_mb(), "import_mb": before, "seconds": seconds,
                  "positions": count,
                  "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def replay_memory(url: str, mode: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, url, mode],
        capture_output=True,
        text=True,
        timeout=1_800,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"replay subprocess failed:\n{completed.stderr}")
    measured: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return measured


def figure_replay_memory(backend: Backend, results: list[Result], url: str) -> None:
    rows = backend.count_events(url)
    streams = len(backend.stream_ids(url))
    modes = [("replay_memory", "ledger")]
    if load_replay_all() is not None:
        modes.append(("replay_memory_audit", "audit"))
    for figure, mode in modes:
        try:
            measured = replay_memory(url, mode)
        except RuntimeError as error:
            if mode == "ledger":
                raise
            log(f"{figure}: skipped, {error}")
            continue
        what = "Ledger.open(url).positions()" if mode == "ledger" else "replay_all(url)"
        emit(
            Result(
                figure,
                backend.name,
                measured["peak_mb"],
                "MB peak RSS",
                measured["import_mb"],
                "MB after imports",
                measured["peak_mb"],
                [
                    f"{what} over {rows:,} stored rows ({streams} keys) in a subprocess, "
                    f"{measured['seconds']:.2f} s; peak = VmHWM (ru_maxrss, inherited from this "
                    f"process across exec, says {measured['ru_maxrss_mb']:.0f} MB)"
                ],
            ),
            results,
        )


# --- the run --------------------------------------------------------------------------------


def machine(backends: Sequence[Backend]) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    described = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "load average at start": load_average(),
        "sqlite": sqlite3.sqlite_version,
        "eventsourcing": importlib.metadata.version("eventsourcing"),
    }
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        described["psycopg"] = importlib.metadata.version("psycopg")
    for backend in backends:
        described[backend.name] = backend.describe()
    return described


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def load_per_core(described: dict[str, str], moment: str) -> float:
    """The 1-minute load average per core a run recorded at ``moment`` ('start' or 'end')."""
    return float(described[f"load average at {moment}"].split()[0]) / int(described["cores"])


def comparable(earlier: dict[str, str], now: dict[str, str]) -> str | None:
    """Why two runs' figures must not be compared (None if they may): a different mode, or a
    load per core that differs by more than LOAD_TOLERANCE at the start or the end."""
    if earlier.get("mode") != now.get("mode"):
        return f"one run is {earlier.get('mode')}, the other {now.get('mode')}"
    for moment in ("start", "end"):
        if f"load average at {moment}" not in earlier:
            return f"the earlier run did not record its load at {moment}"
        before, after = load_per_core(earlier, moment), load_per_core(now, moment)
        if abs(before - after) > LOAD_TOLERANCE:
            return (
                f"load per core at {moment} was {before:.2f} then and is {after:.2f} now "
                f"(tolerance {LOAD_TOLERANCE}): run both on an equally quiet machine"
            )
    return None


def comparison(earlier: dict[str, Any], results: Sequence[Result]) -> str:
    """Each figure's ratio in the earlier run and now, as a table."""
    before = {f["name"]: f["ratio"] for f in earlier["figures"]}
    lines = ["| figure | earlier ratio | ratio now |", "|---|---|---|"]
    for r in results:
        name = f"{r.figure}.{r.backend}"
        then = f"{before[name]:.3f}" if name in before else "-"
        lines.append(f"| {name} | {then} | {r.ratio:.3f} |")
    return "\n".join(lines)


def table(results: Sequence[Result]) -> str:
    lines = [
        "| figure | backend | posledger | baseline | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        op, value = r.target
        if r.ours_unit == "s":
            ours, base = fmt_seconds(r.ours), fmt_seconds(r.baseline or 0)
        elif r.ours_unit.startswith("MB"):
            ours, base = f"{r.ours:,.0f} {r.ours_unit}", f"{r.baseline or 0:,.0f} {r.baseline_unit}"
        else:
            ours = fmt_rate(r.ours, r.ours_unit)
            base = fmt_rate(r.baseline or 0, r.baseline_unit)
        unit = " MB" if r.ours_unit.startswith("MB") else ""
        lines.append(
            f"| {r.figure} | {r.backend} | {ours} | {base} | {r.ratio:.3f}{unit} | "
            f"{op} {value:g}{unit} | {'yes' if r.met else 'NO'} |"
        )
    return "\n".join(lines)


def run_backend(backend: Backend, cfg: Config, results: list[Result]) -> None:
    def section(name: str, run: Callable[[], Any]) -> Any:
        log(f"{backend.name}: {name} ...")
        started = time.perf_counter()
        outcome = run()
        log(f"{backend.name}: {name} took {time.perf_counter() - started:.1f} s")
        return outcome

    url, single_ours, single_raw = section(
        "ingest_durable", lambda: figure_ingest_durable(backend, cfg, results)
    )
    section(
        "ingest_concurrent",
        lambda: figure_ingest_concurrent(backend, cfg, results, url, single_ours, single_raw),
    )
    backfill_url = section("backfill", lambda: figure_backfill(backend, cfg, results))
    section("replay", lambda: figure_replay(backend, cfg, results, backfill_url))
    section("reconcile_unchanged", lambda: figure_reconcile(backend, cfg, results))
    section("replay_memory", lambda: figure_replay_memory(backend, results, backfill_url))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI), every figure")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server URL (no schema)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--workdir", help="directory for the SQLite files (default: temp dir)")
    parser.add_argument(
        "--compare",
        metavar="PATH",
        help="also print each ratio beside the one in an earlier --json run; refused (exit 3) "
        "when the two runs were taken under different load",
    )
    parser.add_argument(
        "--backfill-budget",
        type=float,
        default=180.0,
        metavar="S",
        help="full run: stop the posledger backfill after the round that passes S seconds "
        "(default 180, so both backends fit in ~20 minutes; 0 = import all N)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_for(args.quick, args.backfill_budget or None)
    names = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    backends: list[Backend] = []
    results: list[Result] = []
    started = time.perf_counter()
    try:
        for name in names:
            backends.append(
                SqliteBackend(args.workdir) if name == "sqlite" else PostgresBackend(args.postgres)
            )
        described = machine(backends)
        described["mode"] = "quick" if cfg.quick else "full"
        print("## Machine\n")
        for item, value in described.items():
            print(f"- {item}: {value}")
        print(flush=True)
        for backend in backends:
            run_backend(backend, cfg, results)
    finally:
        for backend in backends:
            backend.close()
    elapsed = time.perf_counter() - started
    print(f"\n## Results ({'quick' if cfg.quick else 'full'} run, {elapsed:.0f} s)\n")
    print(table(results))
    print()
    for r in results:
        for note in r.notes:
            print(f"- {r.figure}.{r.backend}: {note}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"- benchmark process peak RSS {peak:,.0f} MB", flush=True)
    described["load average at end"] = load_average()
    print(
        f"- load average at the end: {described['load average at end']} (other work on the "
        "machine skews figures)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "machine": described,
                    "config": asdict(cfg),
                    "seconds": elapsed,
                    "figures": [
                        {
                            **asdict(r),
                            "name": f"{r.figure}.{r.backend}",
                            "target": list(r.target),
                            "met": r.met,
                        }
                        for r in results
                    ],
                },
                out,
                indent=2,
            )
    if args.compare:
        with open(args.compare) as earlier_file:
            earlier = json.load(earlier_file)
        refusal = comparable(earlier["machine"], described)
        if refusal:
            print(f"\nnot compared with {args.compare}: {refusal}", file=sys.stderr)
            return 3
        print(f"\n## Compared with {args.compare}\n")
        print(comparison(earlier, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
