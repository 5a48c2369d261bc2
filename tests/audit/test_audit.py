"""Audit: history rows, bulk replay, verification (and what it catches), DataFrames, plots."""

from __future__ import annotations

import itertools
import sqlite3
import sys
import tracemalloc
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from posledger import InvalidInput, Ledger, PositionKey, PositionState, Side, StorageUnavailable
from posledger.audit import (
    HISTORY_COLUMNS,
    READ_MODEL_TABLE,
    STATE_COLUMNS,
    Check,
    HistoryRow,
    history_html,
    history_rows,
    history_stream,
    plot_position,
    replay,
    replay_all,
    replay_events,
    state_at,
    state_html,
    to_dataframe,
    verify,
)
from posledger.core.events import (
    EXEC_NAMESPACE,
    Closed,
    ExecutionSeen,
    Filled,
    KeyRegistered,
    PositionEvent,
    Reconciled,
)
from posledger.core.position import project
from posledger.store.application import LedgerApplication
from posledger.store.snapshot import PositionSnapshot
from tests.conftest import T0, key
from tests.helpers import at, fill, row, snapshot

BTC = key("BTCUSDT")
ETH = key("ETHUSDT")
SOL = key("SOLUSDT")
XRP_LONG = key("XRPUSDT", idx=1)
XRP_SHORT = key("XRPUSDT", idx=2)
D = Decimal


# --- building stores ---------------------------------------------------------------------------


def varied_history(ledger: Ledger, k: PositionKey = BTC) -> None:
    """Requests, partial fills, a reduce-only exit, a flip, funding, a stale_quantity correction
    after two confirmations, a phantom close, and a cancelled order."""
    symbol = k.symbol
    ledger.request_open(k, order_id="o1", side="buy", qty=D(3), at=T0, price="100")
    ledger.record_fill(k, fill("e1", "buy", "1", "100", order_id="o1", fee="0.1", exec_time=at(1)))
    ledger.record_fill(k, fill("e2", "buy", "2", "101", order_id="o1", fee="0.2", exec_time=at(2)))
    ledger.request_exit(k, order_id="x1", qty=D(1), at=at(3))
    ledger.record_fill(k, fill("e3", "sell", "1", "105", order_id="x1", exec_time=at(4)))
    ledger.record_fill(k, fill("e4", "sell", "5", "104", exec_time=at(5)))  # flips to short 3
    ledger.record_fill(
        k, fill("f1", "buy", "3", "104", fee="0.03", kind="funding", exec_time=at(6))
    )
    for minute in (10, 11):  # the exchange shows short 2, twice: stale_quantity
        ledger.reconcile(
            snapshot(at(minute), [row(symbol, "sell", "2", seq=minute)]), now=at(minute)
        )
    for minute in (12, 13):  # then nothing, twice: a phantom
        ledger.reconcile(snapshot(at(minute), symbols=[symbol]), now=at(minute))
    ledger.request_open(k, order_id="o2", side="buy", qty=D(1), at=at(14))
    ledger.record_order_end(k, order_id="o2", status="Cancelled", at=at(15))


def more_keys(ledger: Ledger) -> None:
    """An absorbed late fill, a reduce-only overfill, hedge legs clipped at the position."""
    ledger.record_fill(ETH, fill("h1", "buy", "2", "2000", seq=5, exec_time=at(1)))
    for minute in (10, 11):
        ledger.reconcile(
            snapshot(at(minute), [row("ETHUSDT", "buy", "3", seq=20)], symbols=["ETHUSDT"]),
            now=at(minute),
        )
    late = ledger.record_fill(ETH, fill("h2", "buy", "1", "2001", seq=15, exec_time=at(2)))
    assert late.event == "Filled"
    ledger.record_fill(SOL, fill("s1", "buy", "1", "150", exec_time=at(1)))
    ledger.request_exit(SOL, order_id="sx", qty=D(1), at=at(2))
    ledger.record_fill(SOL, fill("s2", "sell", "2", "151", order_id="sx", exec_time=at(3)))
    ledger.record_fill(XRP_LONG, fill("r1", "buy", "2", "0.5", exec_time=at(1)))
    ledger.record_fill(XRP_LONG, fill("r2", "sell", "1", "0.6", exec_time=at(2)))
    ledger.record_fill(XRP_LONG, fill("r3", "sell", "3", "0.7", exec_time=at(3)))
    ledger.record_fill(XRP_SHORT, fill("r4", "sell", "4", "0.55", exec_time=at(4)))


def build(ledger: Ledger) -> None:
    varied_history(ledger)
    more_keys(ledger)


@pytest.fixture
def store(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


def source_of(ledger: Ledger, url: str) -> Ledger | str:
    """What a notebook would pass: the URL of a durable store, the Ledger of a memory one."""
    return ledger if url.startswith("memory") else url


# --- history -----------------------------------------------------------------------------------


def test_history_rows_explain_every_event_with_exact_sizes() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        varied_history(ledger)
        rows = history_rows(ledger, BTC)
    got = [
        (r.version, r.event, r.lifecycle, r.signed_size_before, r.signed_size_after, r.reason)
        for r in rows
    ]
    assert got == [
        (1, "KeyRegistered", 0, 0, 0, None),
        (2, "OpenRequested", 1, 0, 0, None),
        (3, "PartiallyFilled", 1, 0, 1, "trade"),
        (4, "Filled", 1, 1, 3, "trade"),
        (5, "ExitRequested", 1, 3, 3, None),
        (6, "Filled", 1, 3, 2, "trade"),
        (7, "Filled", 2, 2, -3, "trade"),  # the flip: lifecycle 1 ends, 2 starts
        (8, "Closed", 1, -3, -3, "filled"),
        (9, "FundingSettled", 2, -3, -3, "funding"),
        (10, "ExchangeSnapshot", 2, -3, -3, "suspect"),
        (11, "Reconciled", 2, -3, -2, "stale_quantity"),
        (12, "ExchangeSnapshot", 2, -2, -2, "suspect"),
        (13, "Reconciled", 2, -2, 0, "phantom"),
        (14, "Closed", 2, 0, 0, "phantom"),
        (15, "OpenRequested", 3, 0, 0, None),
        (16, "OrderEnded", 3, 0, 0, "Cancelled"),
        (17, "Closed", 3, 0, 0, "order_ended"),
    ]
    by_version = {r.version: r for r in rows}
    assert all(isinstance(r.size_after, Decimal) for r in rows)
    partial = by_version[3]
    assert (partial.side, partial.qty, partial.price, partial.fee) == ("buy", 1, 100, D("0.1"))
    assert (partial.exec_id, partial.order_id, partial.status) == ("e1", "o1", "open")
    assert by_version[6].reduce_only and by_version[6].side_before == "buy"
    flip = by_version[7]
    assert (flip.side_before, flip.size_before, flip.side_after, flip.size_after) == (
        "buy",
        2,
        "sell",
        3,
    )
    assert flip.size_change == -5
    stale = by_version[11]
    assert stale.evidence is not None
    assert (stale.evidence.taken_at, stale.evidence.side, stale.evidence.size) == (
        at(11),
        "sell",
        2,
    )
    assert (stale.evidence.seq, stale.evidence.confirmations) == (11, 2)
    suspect = by_version[12].evidence
    assert suspect is not None and (suspect.size, suspect.side, suspect.confirmations) == (
        0,
        None,
        1,
    )
    assert by_version[13].status == "flat" and by_version[14].lifecycle == 2
    assert [r.time for r in rows][-1] == at(15)
    assert by_version[9].realized_pnl == by_version[8].realized_pnl - D("0.03")


def test_history_rows_from_a_url_or_from_events_equal_the_ledgers(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        build(ledger)
        from_ledger = history_rows(ledger, BTC)
        events = ledger.history(BTC) + ledger.history(ETH)
    assert history_rows(durable_url, BTC) == from_ledger
    assert history_rows(events, BTC) == from_ledger
    assert history_rows(events[: len(from_ledger)]) == from_ledger


def test_state_at_a_version_or_a_time(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        varied_history(ledger)
        at_11 = state_at(ledger, BTC, version=11)
        assert at_11 is not None and (at_11.side, at_11.size) == (Side.SELL, 2)
        assert state_at(ledger, BTC, at=at(10)) == state_at(ledger, BTC, version=10)
        assert state_at(ledger, BTC, at=T0 - timedelta(seconds=1)) is None
        now = ledger.position(BTC)
    assert state_at(durable_url, BTC, version=11) == at_11
    assert state_at(durable_url, BTC, at=at(11)) == at_11
    assert state_at(durable_url, BTC) == now
    with pytest.raises(InvalidInput):
        state_at(durable_url, BTC, version=3, at=at(1))


# --- bulk replay -------------------------------------------------------------------------------


def test_bulk_replay_equals_the_ledger_on_every_backend(store: Ledger, ledger_url: str) -> None:
    source = source_of(store, ledger_url)
    expected = store.positions()
    assert list(replay_all(source).values()) == expected
    assert list(replay_all(source, page_size=3).values()) == expected
    assert set(replay_all(source)) == set(store.keys())

    seen: dict[PositionKey, list[int]] = {}
    for state in replay(source, page_size=7):
        seen.setdefault(state.key, []).append(state.version)
    assert seen == {s.key: list(range(1, s.version + 1)) for s in expected}

    for event, state in replay_events(source):
        assert state.version == event.originator_version
        assert state.key.stream_id == event.originator_id


def test_history_stream_equals_history_rows_per_key(store: Ledger, ledger_url: str) -> None:
    streamed = list(history_stream(source_of(store, ledger_url), page_size=4))
    assert len(streamed) == sum(s.version for s in store.positions())
    for state in store.positions():
        assert [r for r in streamed if r.key == state.key] == history_rows(store, state.key)


def test_replay_reports_progress_to_the_end(store: Ledger, ledger_url: str) -> None:
    calls: list[tuple[int, int]] = []
    replay_all(source_of(store, ledger_url), page_size=10, progress=lambda *c: calls.append(c))
    totals = {total for _, total in calls}
    assert len(totals) == 1 and totals.pop() > 0
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[0][0] == 0 and calls[-1][0] == calls[-1][1]
    assert len(calls) > 3


def test_replay_of_a_memory_url_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="pass that Ledger"):
        replay_all("memory://")
    with pytest.raises(InvalidInput, match="does not exist"):
        replay_all(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()


def test_auditing_a_store_without_ledger_tables_says_so_and_writes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    for url in (f"sqlite:///{empty}", postgres_url):
        for audit in (replay_all, verify):
            with pytest.raises(StorageUnavailable, match="tables are missing") as raised:
                audit(url)
            assert str(raised.value).startswith(f"{url}: ")
    with sqlite3.connect(empty) as connection:
        assert connection.execute("SELECT name FROM sqlite_master").fetchall() == []
    schema = postgres_url.split("schema=")[1]
    import psycopg

    with psycopg.connect(postgres_url.split("?")[0]) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert tables == (0,)


def test_replay_memory_is_bounded_by_keys_not_events() -> None:
    """20k events over 5 keys: the replay's peak is a small fraction of what holding every
    event would take (the size of a decoded event measured here, on a sample of these)."""
    keys = [key(f"K{n}USDT") for n in range(5)]
    sides = ("buy", "buy", "sell", "sell")  # a lifecycle every four fills: Closed events too
    with Ledger.open("memory://", snapshot_every=10**9) as ledger:
        for start in range(0, 3_200, 400):
            for k in keys:
                ledger.record_fills(
                    k,
                    [
                        fill(f"{k.symbol}-{i}", sides[i % 4], "0.01", str(100 + i % 7))
                        for i in range(start, start + 400)
                    ],
                )
        n_events = sum(s.version for s in ledger.positions())
        assert n_events >= 20_000
        sample = 2_000
        tracemalloc.start()
        try:
            events = replay_events(ledger, page_size=sample)
            held = [event for event, _ in itertools.islice(events, sample)]
            per_event = tracemalloc.get_traced_memory()[0] / len(held)
            events.close()
            del held, events
            tracemalloc.reset_peak()
            baseline = tracemalloc.get_traced_memory()[0]
            states = replay_all(ledger, page_size=500)
            peak = tracemalloc.get_traced_memory()[1] - baseline
        finally:
            tracemalloc.stop()
    assert len(states) == 5
    holding_everything = per_event * n_events
    assert per_event > 500  # a decoded event: a dict of Decimals, datetimes, strings
    assert peak < holding_everything / 20, (peak, holding_everything, per_event)


# --- verify: a clean store ---------------------------------------------------------------------


def test_verify_passes_on_a_clean_store(ledger_url: str) -> None:
    with Ledger.open(ledger_url, clock=lambda: T0, snapshot_every=3) as ledger:
        build(ledger)
        report = verify(source_of(ledger, ledger_url))
        assert report.ok, str(report)
        assert report.keys_checked == len(ledger.keys()) == 5
        assert report.events_checked == sum(s.version for s in ledger.positions())
        assert report.executions_checked == report.markers_checked == 13
        assert not report.read_model_checked
        with_snapshots = [s for s in ledger.positions() if s.version >= 3]  # snapshot_every=3
        assert report.snapshot_loads_checked == len(with_snapshots) == 4
        assert "OK" in report.summary()


# --- verify: what it catches -------------------------------------------------------------------


def append(app: LedgerApplication, *events: object) -> None:
    """Write events behind the ledger's back, as a buggy tool or a hand-edit would."""
    app.recorder.insert_events([app.mapper.to_stored_event(e) for e in events])  # type: ignore[arg-type]


def filled(k: PositionKey, version: int, exec_id: str, side: str, qty: str, **more: Any) -> Filled:
    fields: dict[str, Any] = {
        "originator_id": k.stream_id,
        "originator_version": version,
        "timestamp": at(30),
        "exec_id": exec_id,
        "order_id": "",
        "side": side,
        "qty": D(qty),
        "price": D(100),
        "fee": D(0),
        "exec_time": at(30),
        "seq": None,
        "kind": "trade",
        "leaves_qty": None,
        "reduce_only": False,
        "overfill": D(0),
        "absorbed": False,
    }
    fields.update(more)
    return Filled(**fields)


GOLD, TON = key("GOLDUSDT"), key("TONUSDT")


def corrupt(ledger: Ledger) -> dict[tuple[str, Check], str]:
    """Seven corruptions; returns the (key, check) each must be reported under, with a word of
    the detail."""
    for k, exec_id in ((GOLD, "g1"), (TON, "t1")):
        ledger.record_fill(k, fill(exec_id, "buy", "1", exec_time=at(1)))
    app = ledger.application
    v = {s.key: s.version for s in ledger.positions()}
    append(
        app,
        # BTC (flat): a fill appended without its ExecutionSeen marker.
        filled(BTC, v[BTC] + 1, "sneaky", "buy", "1"),
        # ETH (long 3): a correction whose `before` lies (says 5).
        Reconciled(
            originator_id=ETH.stream_id,
            originator_version=v[ETH] + 1,
            timestamp=at(30),
            kind="stale_quantity",
            before_side="buy",
            before_size=D(5),
            after_side="buy",
            after_size=D(4),
            after_avg_price=None,
            snapshot_taken_at=at(30),
            snapshot_seq=None,
            snapshot_avg_price=None,
            confirmations=2,
            cleared_orders=[],
        ),
        # SOL: BTC's exec_id e1 applied again, in another stream.
        filled(SOL, v[SOL] + 1, "e1", "buy", "1"),
        # XRP long leg: a marker whose execution was never applied.
        ExecutionSeen(
            originator_id=uuid.uuid5(EXEC_NAMESPACE, "bybit\x1fmain\x1fghost"),
            originator_version=1,
            timestamp=at(30),
            exec_id="ghost",
            stream_id=XRP_LONG.stream_id,
            payload=f"{XRP_LONG}|o|buy|1|1|0|trade",
        ),
        # XRP short leg: a version skipped.
        filled(XRP_SHORT, v[XRP_SHORT] + 2, "gap", "sell", "1"),
        # GOLD (long 1): a Closed though no lifecycle ended.
        Closed(
            originator_id=GOLD.stream_id,
            originator_version=v[GOLD] + 1,
            timestamp=at(30),
            reason="filled",
            lifecycle=1,
            opened_at=at(1),
            realized_pnl=D(0),
            fees=D(0),
            funding=D(0),
            cleared_orders=[],
        ),
        # A stream that never registered its key.
        filled(PositionKey("bybit", "main", "linear", "NOPEUSDT"), 1, "n1", "buy", "1"),
    )
    # TON: a snapshot that disagrees with its own events.
    state = ledger.position(TON)
    assert state is not None and app.snapshots is not None
    app.snapshots.put([PositionSnapshot.take(attrs.evolve(state, size=D(7)))])
    return {
        (str(BTC), Check.EXECUTIONS): "without its ExecutionSeen marker",
        (str(ETH), Check.SIZES): "imply +3",
        (str(SOL), Check.EXECUTIONS): "applied again",
        (str(XRP_LONG), Check.EXECUTIONS): "without an applied execution",
        (str(XRP_SHORT), Check.LIFECYCLES): "not contiguous",
        (str(GOLD), Check.LIFECYCLES): "does not follow the end of a lifecycle",
        ("None", Check.LIFECYCLES): "not KeyRegistered",
        (str(TON), Check.LEDGER): "size: 7 vs 1",
    }


def test_verify_catches_each_corruption_under_its_key_and_check(ledger_url: str) -> None:
    with Ledger.open(ledger_url, clock=lambda: T0) as ledger:
        build(ledger)
        assert verify(source_of(ledger, ledger_url)).ok
        expected = corrupt(ledger)
        report = verify(source_of(ledger, ledger_url))
    assert not report.ok
    found = {(str(p.key), p.check): p.detail for p in report.problems}
    assert set(found) == set(expected), str(report)
    assert len(report.problems) == len(expected), str(report)
    for where, word in expected.items():
        assert word in found[where], (where, found[where])
    assert [p.check for p in report.for_key(SOL)] == [Check.EXECUTIONS]
    assert "BTCUSDT#0" in found[(str(SOL), Check.EXECUTIONS)]  # names where it was first applied
    assert report.for_key(BTC)[0].version == 18
    assert len(report.by_check("lifecycles")) == 3
    assert "problem(s) in 8 key(s)" in report.summary()


def forge_fill_by_sql(url: str, k: PositionKey, exec_id: str = "forged-by-hand") -> int:
    """Append a copy of the key's first fill, under a new exec_id, straight into the stored
    events table with SQL (no Ledger, no eventsourcing), as a hand-edit would; returns the
    version it took."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite:///") :])
        table, mark = "stored_events", "?"
        stream: object = k.stream_id.hex
    else:
        import psycopg

        server, schema = url.split("?schema=")
        db = psycopg.connect(server, autocommit=True)  # type: ignore[assignment]
        db.execute(f"SET search_path TO {schema}")
        table, mark, stream = "posledger_events", "%s", k.stream_id
    with db:
        rows = db.execute(
            f"SELECT originator_version, topic, state FROM {table} WHERE originator_id = {mark} "
            "ORDER BY originator_version",
            (stream,),
        ).fetchall()
        state = next(bytes(r[2]) for r in rows if r[1] == "posledger:Filled")
        forged = state.replace(b'"exec_id":"', f'"exec_id":"{exec_id}-'.encode(), 1)
        version = rows[-1][0] + 1
        db.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"VALUES ({mark}, {mark}, {mark}, {mark})",
            (stream, version, "posledger:Filled", forged),
        )
    db.close()
    return int(version)


def test_an_event_inserted_with_raw_sql_is_caught(durable_url: str) -> None:
    """The issue's bar: an event written into the events table behind the ledger's back."""
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        build(ledger)
    assert verify(durable_url).ok
    version = forge_fill_by_sql(durable_url, ETH)
    report = verify(durable_url)
    assert not report.ok
    assert report.keys_with_problems == [ETH], str(report)
    (problem,) = report.problems
    assert (problem.check, problem.version) == (Check.EXECUTIONS, version)
    assert "forged-by-hand-h1" in problem.detail and "without its ExecutionSeen" in problem.detail


def test_a_marker_that_disagrees_with_its_execution_is_caught(ledger: Ledger) -> None:
    """A marker whose payload is not the applied execution's (qty changed by hand)."""
    ledger.record_fill(BTC, fill("e1", "buy", "1", exec_time=at(1)))
    app = ledger.application
    state = ledger.position(BTC)
    assert state is not None
    events = list(app.events.get(BTC.stream_id))
    original = events[1]
    assert isinstance(original, Filled)
    forged = replace(original, originator_version=3, exec_id="e9", qty=D(2))
    marker = ExecutionSeen(
        originator_id=uuid.uuid5(EXEC_NAMESPACE, "bybit\x1fmain\x1fe9"),
        originator_version=1,
        timestamp=at(2),
        exec_id="e9",
        stream_id=BTC.stream_id,
        payload=f"{BTC}||buy|1|100|0|trade",
    )
    append(app, forged, marker)
    report = verify(ledger)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.EXECUTIONS)]
    assert "its marker records" in report.problems[0].detail


def test_a_silently_clipped_reduce_only_fill_is_a_size_problem(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("e1", "buy", "1", exec_time=at(1)))
    clipped = filled(BTC, 3, "e2", "sell", "3", reduce_only=True)  # overfill 0: clipped silently
    closed = Closed(
        originator_id=BTC.stream_id,
        originator_version=4,
        timestamp=at(30),
        reason="filled",
        lifecycle=1,
        opened_at=at(1),
        realized_pnl=D(0),
        fees=D(0),
        funding=D(0),
        cleared_orders=[],
    )
    marker = ExecutionSeen(
        originator_id=uuid.uuid5(EXEC_NAMESPACE, "bybit\x1fmain\x1fe2"),
        originator_version=1,
        timestamp=at(30),
        exec_id="e2",
        stream_id=BTC.stream_id,
        payload=f"{BTC}||sell|3|100|0|trade",
    )
    append(ledger.application, clipped, closed, marker)
    report = verify(ledger)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.SIZES)]
    assert "clipped silently" in report.problems[0].detail


# --- verify: the read model --------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_a_read_model_table_is_compared_with_the_replay(sqlite_url: str) -> None:
    """A hand-made posledger_positions (the documented columns): equal, then one row off."""
    with Ledger.open(sqlite_url, clock=lambda: T0) as ledger:
        build(ledger)
        states = ledger.positions()
    path = sqlite_url[len("sqlite:///") :]
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TABLE {READ_MODEL_TABLE} (stream_id TEXT PRIMARY KEY, venue TEXT, "
            "account TEXT, category TEXT, symbol TEXT, idx INTEGER, status TEXT, side TEXT, "
            "size TEXT, avg_entry_price TEXT, realized_pnl TEXT, version INTEGER, "
            "updated_at TEXT)"
        )
        db.executemany(
            f"INSERT INTO {READ_MODEL_TABLE} VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    str(s.key.stream_id),
                    s.key.venue,
                    s.key.account,
                    s.key.category,
                    s.key.symbol,
                    s.key.idx,
                    s.status.value,
                    s.side.value if s.side else None,
                    str(s.size),
                    None if s.avg_entry_price is None else str(s.avg_entry_price),
                    str(s.realized_pnl),
                    s.version,
                    s.updated_at.isoformat(),
                )
                for s in states
            ],
        )
    report = verify(sqlite_url)
    assert report.ok and report.read_model_checked, str(report)

    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {READ_MODEL_TABLE} SET size = '9' WHERE symbol = 'ETHUSDT'")
        db.execute(f"DELETE FROM {READ_MODEL_TABLE} WHERE symbol = 'SOLUSDT'")
    report = verify(sqlite_url)
    assert {(p.key, p.check) for p in report.problems} == {
        (ETH, Check.READ_MODEL),
        (SOL, Check.READ_MODEL),
    }
    assert "size: table '9', replay 3" in report.for_key(ETH)[0].detail
    assert not verify(sqlite_url, check_read_model=False).problems


def test_the_real_read_model_agrees_and_a_tampered_row_is_caught(durable_url: str) -> None:
    readmodel = pytest.importorskip("posledger.store.readmodel")
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        build(ledger)
    with readmodel.ReadModel.open(durable_url) as model:
        model.catch_up()
    report = verify(durable_url)
    assert report.ok and report.read_model_checked, str(report)
    statement = f"UPDATE {READ_MODEL_TABLE} SET status = 'open' WHERE symbol = 'BTCUSDT'"
    if durable_url.startswith("sqlite"):
        with sqlite3.connect(durable_url[len("sqlite:///") :]) as db:
            db.execute(statement)
    else:
        import psycopg

        server, schema = durable_url.split("?schema=")
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"SET search_path TO {schema}")
            connection.execute(statement)
    report = verify(durable_url)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.READ_MODEL)]
    assert "status" in report.problems[0].detail


# --- DataFrames, plots, HTML -------------------------------------------------------------------


def test_history_and_states_as_dataframes_keep_decimals(store: Ledger, ledger_url: str) -> None:
    pd = pytest.importorskip("pandas")
    frame = to_dataframe(history_rows(store, BTC))
    assert list(frame.columns) == list(HISTORY_COLUMNS)
    assert len(frame) == 17
    for column in ("size_before", "size_after", "signed_size_after", "qty", "price", "fee"):
        assert frame[column].dtype == object, column
    assert all(isinstance(v, Decimal) for v in frame["signed_size_after"])
    assert frame["signed_size_after"].tolist()[:5] == [0, 0, 1, 3, 3]
    assert frame.loc[frame["version"] == 3, "price"].item() == Decimal("100")
    assert isinstance(frame["time"].dtype, pd.DatetimeTZDtype) and str(frame["time"].dt.tz) == "UTC"
    assert frame["time"].iloc[-1] == pd.Timestamp(at(15))
    assert str(frame["version"].dtype) == "int64"
    assert str(frame["evidence_seq"].dtype) == "Int64"
    assert frame["reduce_only"].dtype == bool
    assert frame.loc[frame["version"] == 11, "evidence_size"].item() == Decimal(2)

    states = to_dataframe(replay_all(source_of(store, ledger_url)))
    assert list(states.columns) == list(STATE_COLUMNS)
    assert states["size"].dtype == object and all(isinstance(v, Decimal) for v in states["size"])
    assert states.set_index("symbol").loc["ETHUSDT", "signed_size"] == Decimal(3)
    assert list(to_dataframe([]).columns) == list(HISTORY_COLUMNS)
    with pytest.raises(InvalidInput):
        to_dataframe([1, 2])  # type: ignore[arg-type]


def test_problems_as_a_dataframe_and_as_html() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        expected = corrupt(ledger)
        report = verify(ledger)
    page = report._repr_html_()
    assert page.count("<tr>") == len(expected) + 1 and "problem(s)" in page
    pd = pytest.importorskip("pandas")
    frame = to_dataframe(report)
    assert list(frame.columns) == ["key", "check", "version", "detail"]
    assert len(frame) == len(expected)
    assert str(frame["version"].dtype) == "Int64" and frame["version"].isna().sum() == 1
    assert set(frame["check"]) == {c.value for _, c in expected}
    assert isinstance(frame, pd.DataFrame)


def test_missing_notebook_packages_say_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'posledger\[notebook\]'"):
        to_dataframe([])
    with pytest.raises(ImportError, match=r"plot_position needs matplotlib"):
        plot_position([], BTC)


def test_plot_position_renders_a_png(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        ax = plot_position(ledger, BTC)
        out = tmp_path / "btc.png"
        ax.figure.savefig(out, dpi=80)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "BTCUSDT" in ax.get_title(loc="left")
        assert ax.get_ylabel() and ax.get_xlabel()
        labels = " ".join(t.get_text() for t in ax.texts)
        assert "stale_quantity" in labels and "phantom" in labels
        plt.close(ax.figure)

        fig, axes = plt.subplots(1, 2)
        assert plot_position(history_rows(ledger, ETH), ax=axes[0]) is axes[0]
        assert plot_position(ledger, SOL, ax=axes[1]) is axes[1]
        fig.savefig(tmp_path / "two.png", dpi=60)
        plt.close(fig)


def test_plot_position_zooms_on_a_window() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        ax = plot_position(ledger, BTC, since=at(9), until=at(12))
        left, right = (mdates.num2date(x) for x in ax.get_xlim())
        assert (left, right) == (at(9), at(12))
        labels = " ".join(t.get_text() for t in ax.texts)
        assert "stale_quantity" in labels and "phantom" not in labels  # the phantom is at 13
        assert "17 events" in ax.get_title(loc="left")  # the title counts the whole history
        plt.close(ax.figure)
        with pytest.raises(InvalidInput, match="nothing to show"):
            plot_position(ledger, BTC, since=at(12), until=at(9))
        plt.close("all")


def test_html_tables_escape_everything() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        ledger.request_open(BTC, order_id="<script>x</script>", side="buy", qty=D(1), at=T0)
        ledger.record_fill(BTC, fill("<b>e</b>", "buy", "0.5", order_id="<script>x</script>"))
        state = ledger.position(BTC)
        rows = history_rows(ledger, BTC)
    assert state is not None
    for text in (state_html(state), history_html(rows), rows._repr_html_()):
        assert "<script>" not in text and "<b>e" not in text
        assert "&lt;script&gt;" in text or "&lt;b&gt;" in text
        assert text.startswith("<table") and text.endswith("</table>")
    assert "BTCUSDT" in state_html(state) and "0.5" in state_html(state)
    assert history_html(rows).count("<tr") == len(rows) + 1
    assert rows[-1]._repr_html_().count("<tr") == 2 and isinstance(rows, list)


def test_the_history_helpers_agree_with_project() -> None:
    """Rows are folded with evolve: the last row's sizes are the projected state's."""
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        for current in ledger.positions():
            events: list[PositionEvent] = ledger.history(current.key)
            state = project(None, events)
            rows: list[HistoryRow] = history_rows(events)
            assert state is not None and isinstance(state, PositionState)
            assert (rows[-1].side_after, rows[-1].size_after) == (
                state.side.value if state.side else None,
                state.size,
            )
            assert isinstance(events[0], KeyRegistered)
