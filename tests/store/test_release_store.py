"""A store written by release be93bd9 (tests/data/release-be93bd9.sqlite, made by
tests/data/make_release_store.py at that commit) reads the same, and every stored event encodes
to the very bytes it was stored as: moving modules never changed the stored format."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from eventsourcing.persistence import StoredEvent

from posledger import ConfigurationError, Fill, Ledger, PositionKey
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
    with Ledger.open(release_url, create_tables=False) as ledger:
        assert_release_states(ledger)


def assert_release_states(ledger: Ledger) -> None:
    expected = json.loads(STATES.read_text())
    defaults = json.loads(json.dumps(encode(PositionState(key=KEY, version=1, updated_at=T0))))
    states = {str(state.key): encode(state) for state in ledger.positions()}
    states = json.loads(json.dumps(states))  # as the file holds them: lists, not tuples
    assert set(states) == set(expected)
    for key, state in states.items():
        added = set(state) - set(expected[key])
        assert added <= LATER_STATE_FIELDS, key
        assert {name: state[name] for name in added} == {name: defaults[name] for name in added}
        assert {name: state[name] for name in expected[key]} == expected[key]


def release_postgres_store(url: str) -> Any:
    """The release's rows in the release's PostgreSQL layout: eventsourcing's tables, made and
    written by eventsourcing's own recorders (which take the EXCLUSIVE lock, as the release
    did), plus the key index. Returns that old-style events recorder."""
    from eventsourcing.postgres import (
        PostgresAggregateRecorder,
        PostgresApplicationRecorder,
        PostgresDatastore,
    )

    from posledger.store.replay import key_index_statement

    server, schema = url.split("?schema=")
    parts = urlsplit(server)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "",
        port=str(parts.port or 5432),
        user=parts.username or "",
        password="",
        schema=schema,
    )
    events = PostgresApplicationRecorder(datastore, events_table_name="posledger_events")
    snapshots = PostgresAggregateRecorder(datastore, events_table_name="posledger_snapshots")
    events.create_table()
    snapshots.create_table()
    with datastore.get_connection() as conn:
        conn.execute(key_index_statement("posledger_events", f'"{schema}".posledger_events'))
    with sqlite3.connect(STORE) as db:
        for table, order, recorder in (
            ("stored_events", "rowid", events),
            ("stored_snapshots", "originator_id, originator_version", snapshots),
        ):
            rows = db.execute(
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                f"ORDER BY {order}"
            ).fetchall()
            recorder.insert_events(
                [StoredEvent(uuid.UUID(i), v, topic, state) for i, v, topic, state in rows]
            )
    return events


def test_a_postgres_store_of_the_release_is_upgraded_in_place(postgres_url: str) -> None:
    """Opening adds the transaction id column (0 for the release's rows) and the reserve
    function; nothing stored changes, and writers of the release's kind (the EXCLUSIVE lock)
    and of this one share the store, their events followed in order."""
    import psycopg

    old_writer = release_postgres_store(postgres_url)
    server, schema = postgres_url.split("?schema=")
    before = old_writer.select_notifications(start=1, limit=10_000)
    with Ledger.open(postgres_url) as ledger:
        assert_release_states(ledger)
        ledger.record_fill(KEY, Fill(exec_id="after-upgrade", order_id="o-up", side="buy",
                                     qty="0.1", price="100", exec_time=T0, seq=1))  # fmt: skip
    with psycopg.connect(server) as conn:
        xacts = conn.execute(
            f'SELECT notification_id, xact_id::text::bigint FROM "{schema}".posledger_events '
            "ORDER BY notification_id"
        ).fetchall()
    assert [x for n, x in xacts if n <= before[-1].id] == [0] * len(before)
    assert all(x > 0 for n, x in xacts if n > before[-1].id)
    old_writer.insert_events([StoredEvent(uuid.uuid4(), 1, "old-writer", b"{}")])
    app = LedgerApplication.for_settings(settings_for(postgres_url))
    try:
        after = app.recorder.select_notifications(start=1, limit=10_000)
    finally:
        app.close()
    assert [(n.id, n.state) for n in after[: len(before)]] == [(n.id, n.state) for n in before]
    assert [n.id for n in after] == sorted({n.id for n in after})
    assert after[-1].topic == "old-writer"
    report = verify(postgres_url)
    assert report.ok, report.problems


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


def test_a_ledger_that_may_not_create_tables_says_an_old_postgres_store_needs_init_db(
    postgres_url: str,
) -> None:
    """A least-privilege ledger cannot upgrade the store itself: opening says what to run
    instead of failing its first write; after ``init-db`` it opens and reads."""
    release_postgres_store(postgres_url)
    with pytest.raises(ConfigurationError, match="posledger init-db") as raised:
        Ledger.open(postgres_url, create_tables=False)
    assert "earlier release" in str(raised.value)
    with Ledger.open(postgres_url):  # what init-db does: create what is missing
        pass
    with Ledger.open(postgres_url, create_tables=False) as ledger:
        assert_release_states(ledger)
