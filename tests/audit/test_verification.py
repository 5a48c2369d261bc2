"""verify: a clean store passes, and each corruption is reported under its key and check."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from posledger import Ledger
from posledger.audit import Check, verify
from posledger.core.events import Filled
from tests.audit.stores import (
    BTC,
    ETH,
    SOL,
    D,
    append,
    build,
    closed,
    corrupt,
    filled,
    forge_fill_by_sql,
    seen,
    source_of,
)
from tests.conftest import T0
from tests.helpers import at, fill

# --- a clean store --------------------------------------------------------------------------------


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


# --- what it catches ------------------------------------------------------------------------------


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
    marker = seen(BTC, "e9", f"{BTC}||buy|1|100|0|trade", at(2))
    append(app, forged, marker)
    report = verify(ledger)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.EXECUTIONS)]
    assert "its marker records" in report.problems[0].detail


def test_a_silently_clipped_reduce_only_fill_is_a_size_problem(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("e1", "buy", "1", exec_time=at(1)))
    clipped = filled(BTC, 3, "e2", "sell", "3", reduce_only=True)  # overfill 0: clipped silently
    marker = seen(BTC, "e2", f"{BTC}||sell|3|100|0|trade", at(30))
    append(ledger.application, clipped, closed(BTC, 4), marker)
    report = verify(ledger)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.SIZES)]
    assert "clipped silently" in report.problems[0].detail


def test_an_unknown_execution_type_is_flagged_not_a_problem(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("e1", "buy", "2", exec_time=at(1), venue_type="Trade"))
    odd = fill("e2", "sell", "1", exec_time=at(2), kind="unknown", venue_type="Novel")
    ledger.record_fill(BTC, odd)
    report = verify(ledger)
    assert report.ok, str(report)
    (flag,) = report.flags
    assert (flag.key, flag.version, flag.exec_id, flag.venue_type) == (BTC, 3, "e2", "Novel")
    assert "1 execution(s) of an unknown type" in report.summary()
    assert "'Novel'" in str(report) and "e2" in report._repr_html_()


def test_a_sqlite_state_stored_as_text_is_read_not_a_crash(tmp_path: Path) -> None:
    """SQLite keeps the type a value was written with: a state rewritten as TEXT (same JSON)
    made verify raise TypeError from bytes(str); the ledger itself reads such a row."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.open(url, clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("e1", "buy", "1", exec_time=at(1)))
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        db.execute("UPDATE stored_events SET state = CAST(state AS TEXT)")
        assert db.execute("SELECT DISTINCT typeof(state) FROM stored_events").fetchall() == [
            ("text",)
        ]
    report = verify(url)
    assert report.ok, report.problems
    assert report.events_checked == 2
