"""A store written by release be93bd9 (tests/data/release-be93bd9.sqlite, made by
tests/data/make_release_store.py at that commit) reads the same, and every stored event encodes
to the very bytes it was stored as: moving modules never changed the stored format."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from posledger import Ledger, PositionKey
from posledger.audit import verify
from posledger.core.events import (
    EVENT_TYPES,
    Allocated,
    CorrectionProposed,
    ExecutionEvent,
    ExecutionSeen,
    MoneyReconciled,
    ProposalDecided,
)
from posledger.core.position import PositionState
from posledger.store.application import LedgerApplication
from posledger.store.decoding import StoredEventDecoder
from posledger.store.encoding import StoredEventEncoder
from posledger.store.snapshot import encode
from posledger.store.storage import settings_for

KEY = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
LATER_TOPICS = {
    CorrectionProposed.TOPIC,
    ProposalDecided.TOPIC,
    MoneyReconciled.TOPIC,
    Allocated.TOPIC,
}
"""Event types added after the release (docs/design.md#approval, #money; docs/books.md): it
cannot hold them."""
LATER_STATE_FIELDS = {"proposal", "adopted_pnl", "unexplained_pnl", "money_checked_until"}
"""PositionState fields added after the release."""

DATA = Path(__file__).parent.parent / "data"
STORE = DATA / "release-be93bd9.sqlite"
STATES = DATA / "release-be93bd9.states.json"


@pytest.fixture
def release_url(tmp_path: Path) -> str:
    copy = tmp_path / "release.sqlite"
    shutil.copy(STORE, copy)
    return f"sqlite:///{copy}"


def test_the_release_store_holds_every_stored_type() -> None:
    with sqlite3.connect(STORE) as db:
        topics = {topic for (topic,) in db.execute("SELECT DISTINCT topic FROM stored_events")}
        snapshots = db.execute("SELECT count(*) FROM stored_snapshots").fetchone()[0]
    assert topics == {cls.TOPIC for cls in (*EVENT_TYPES, ExecutionSeen)} - LATER_TOPICS
    assert snapshots > 0


def test_every_stored_event_encodes_to_its_stored_bytes(release_url: str) -> None:
    app = LedgerApplication.for_settings(settings_for(release_url, create_tables=False))
    try:
        decoder = StoredEventDecoder(app.mapper)
        encoder = StoredEventEncoder(app.mapper)
        rows = app.recorder.select_notifications(start=1, limit=10_000)
        assert len(rows) == 66
        for row in rows:
            event = decoder(row.originator_id, row.originator_version, row.topic, row.state)
            again = encoder(event)
            assert (again.topic, again.state) == (row.topic, row.state)
            mapped = app.mapper.to_stored_event(app.mapper.to_domain_event(row))
            assert mapped.state == row.state
    finally:
        app.close()


def test_positions_read_as_the_release_wrote_them(release_url: str) -> None:
    """Every field the release had holds what it held; fields added since hold their default."""
    expected = json.loads(STATES.read_text())
    defaults = json.loads(json.dumps(encode(PositionState(key=KEY, version=1, updated_at=T0))))
    with Ledger.open(release_url, create_tables=False) as ledger:
        states = {str(state.key): encode(state) for state in ledger.positions()}
    states = json.loads(json.dumps(states))  # as the file holds them: lists, not tuples
    assert set(states) == set(expected)
    for key, state in states.items():
        added = set(state) - set(expected[key])
        assert added <= LATER_STATE_FIELDS, key
        assert {name: state[name] for name in added} == {name: defaults[name] for name in added}
        assert {name: state[name] for name in expected[key]} == expected[key]


def test_the_release_store_verifies_clean(release_url: str) -> None:
    report = verify(release_url)
    assert report.ok, report.problems
    assert report.events_checked > 0


def test_old_execution_events_read_without_a_venue_type(release_url: str) -> None:
    """``venue_type`` came later, with a default: events stored before it read as None."""
    with Ledger.open(release_url, create_tables=False) as ledger:
        executions = [
            event
            for state in ledger.positions()
            for event in ledger.history(state.key)
            if isinstance(event, ExecutionEvent)
        ]
    assert executions
    assert {event.venue_type for event in executions} == {None}
