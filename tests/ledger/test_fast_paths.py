"""The fast paths behave exactly like the slow ones: group commit gives every caller its own
result (and a refused group is recomputed command by command), bulk loading equals
eventsourcing's repository.get, and the one-round-trip PostgreSQL insert keeps its lock
timeout."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.application import AggregateNotFoundError
from hypothesis import given
from hypothesis import strategies as st

from posledger import ExecutionConflict, Ledger, PositionKey, StorageUnavailable
from posledger.core.events import EXEC_NAMESPACE, marker_id
from posledger.ledger import FillResult
from posledger.ledger import states as state_cache
from posledger.store import replay
from posledger.store.replay import load_states, registered_keys
from posledger.store.snapshot import project_from_store
from tests.conftest import key
from tests.helpers import at, fill, row, snapshot

THREADS = 8


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def grouped(ledger: Ledger, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on threads while the ledger's lock is held, so they all queue, then let
    one of them commit the group. Returns each call's result or exception."""
    outcomes: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            outcomes[i] = calls[i]()
        except Exception as error:
            outcomes[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with ledger._lock:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(ledger._writer.queue) == len(calls))
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_commands_commit_together_each_with_its_own_result(ledger_url: str) -> None:
    keys = [key(f"K{t}USDT") for t in range(THREADS)]
    with Ledger.open(ledger_url) as ledger:
        ledger.record_fill(keys[0], fill("known", "buy", "1"))
        before = ledger.transactions
        calls: list[Callable[[], Any]] = [
            (lambda t=t: ledger.record_fill(keys[t], fill(f"e{t}", "buy", str(t + 1))))
            for t in range(THREADS - 2)
        ]
        calls.append(lambda: ledger.record_fill(keys[0], fill("known", "sell", "5")))
        calls.append(lambda: ledger.record_fill(keys[0], fill("e0b", "buy", "2")))
        outcomes = grouped(ledger, calls)
        assert ledger.transactions == before + 1
        for t in range(THREADS - 2):
            assert outcomes[t] == FillResult(f"e{t}", False, "Filled", Decimal(0))
        assert isinstance(outcomes[-2], ExecutionConflict)
        assert outcomes[-1] == FillResult("e0b", False, "Filled", Decimal(0))
        assert ledger.position(keys[0]).size == 1 + 1 + 2  # type: ignore[union-attr]
        for t in range(1, THREADS - 2):
            assert ledger.position(keys[t]).size == t + 1  # type: ignore[union-attr]


def test_a_refused_group_is_recomputed_command_by_command(durable_url: str) -> None:
    btc, eth = key("BTCUSDT"), key("ETHUSDT")
    with Ledger.open(durable_url) as ledger, Ledger.open(durable_url) as other:
        ledger.record_fill(btc, fill("b1", "buy", "1"))
        other.record_fill(btc, fill("b2", "buy", "2"))  # behind the first ledger's back
        outcomes = grouped(
            ledger,
            [
                lambda: ledger.record_fill(btc, fill("b3", "buy", "4")),
                lambda: ledger.record_fill(eth, fill("e1", "sell", "1")),
                lambda: ledger.record_fill(btc, fill("b2", "buy", "2")),
            ],
        )
        assert ledger.conflict_retries >= 1
        assert [o.exec_id for o in outcomes] == ["b3", "e1", "b2"]
        assert [o.duplicate for o in outcomes] == [False, False, True]
        assert ledger.position(btc).size == 7  # type: ignore[union-attr]
        assert ledger.position(eth).size == 1  # type: ignore[union-attr]
        with Ledger.open(durable_url) as fresh:
            assert fresh.positions() == ledger.positions()


@pytest.mark.parametrize("keys_per_query", [2, 1_000])
def test_bulk_loading_equals_one_repository_get_per_key(
    ledger_url: str, keys_per_query: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across several keys per query and across query batches alike."""
    monkeypatch.setattr(replay, "SQLITE_KEYS_PER_QUERY", keys_per_query)
    monkeypatch.setattr(replay, "POSTGRES_KEYS_PER_QUERY", keys_per_query)
    keys = [key(f"K{n}USDT") for n in range(5)]
    with Ledger.open(ledger_url, snapshot_every=4) as ledger:
        for n, k in enumerate(keys):
            for i in range(3 + 5 * n):  # 0 to several snapshots, and tails after them
                ledger.record_fill(k, fill(f"{k.symbol}-{i}", ("buy", "sell")[i % 3 == 2], "1"))
        app = ledger.application
        expected = {
            k.stream_id: app.repository.get(k.stream_id, projector_func=project_from_store)
            for k in keys
        }
        assert load_states(app) == expected
        assert load_states(app, [keys[1].stream_id, keys[3].stream_id]) == {
            s: expected[s] for s in (keys[1].stream_id, keys[3].stream_id)
        }
        missing = key("NOPEUSDT").stream_id
        with pytest.raises(AggregateNotFoundError):
            app.repository.get(missing)
        assert load_states(app, [missing]) == {}
        assert registered_keys(app) == {k.stream_id: k for k in keys}
        if ledger_url != "memory://":
            with Ledger.open(ledger_url) as fresh:
                assert fresh.positions() == sorted(expected.values(), key=lambda s: str(s.key))


def test_a_postgres_bulk_load_reads_snapshots_and_tails_in_one_statement_per_batch(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip per batch of keys (#20), and one MVCC snapshot of the store: a key's
    tail is read in the statement that read its snapshot."""
    monkeypatch.setattr(replay, "POSTGRES_KEYS_PER_QUERY", 3)
    keys = [key(f"K{n}USDT") for n in range(5)]
    with Ledger.open(postgres_url, snapshot_every=4) as ledger:
        for n, k in enumerate(keys):
            for i in range(2 + 3 * n):
                ledger.record_fill(k, fill(f"{k.symbol}-{i}", "buy", "1"))
        app = ledger.application
        statements: list[str] = []
        read = replay._PostgresStore._rows

        def counted(store: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            statements.append(query)
            return read(store, query, *args, **kwargs)

        monkeypatch.setattr(replay._PostgresStore, "_rows", counted)
        states = load_states(app, [k.stream_id for k in keys])
        assert len(statements) == 2  # keys 0-2, then 3-4
        assert {s.key: s.size for s in states.values()} == {
            k: 2 + 3 * n for n, k in enumerate(keys)
        }


def test_keys_are_found_through_an_index(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        ledger.record_fill(key(), fill("e1", "buy", "1"))
        datastore: Any = ledger.application.recorder.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as cursor:
            if durable_url.startswith("sqlite"):
                cursor.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            else:
                cursor.execute("SELECT indexname AS name FROM pg_indexes")
            names = [row["name"] for row in cursor.fetchall()]
    assert any(name.endswith("posledger_key_registered_idx") for name in names), names


def test_a_held_table_lock_times_out_the_one_round_trip_insert(postgres_url: str) -> None:
    """The multi-statement insert still sets its lock timeout: a writer blocked by a table lock
    gives up with StorageUnavailable (not a hang), and works once the lock is gone."""
    import psycopg

    with Ledger.open(postgres_url, timeout=1.0) as ledger:
        ledger.record_fill(key(), fill("e1", "buy", "1"))
        schema = postgres_url.rsplit("schema=", 1)[1]
        server = postgres_url.split("?")[0]
        with psycopg.connect(server) as blocker:
            blocker.execute(f'LOCK TABLE "{schema}".posledger_events IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(StorageUnavailable, match="lock timeout"):
                ledger.record_fill(key(), fill("e2", "buy", "1"))
            blocker.rollback()
        ledger.record_fill(key(), fill("e2", "buy", "1"))
        assert ledger.position(key()).size == 2  # type: ignore[union-attr]


def test_closing_snapshots_what_the_ledger_changed(durable_url: str) -> None:
    btc, eth = key("BTCUSDT"), key("ETHUSDT")
    with Ledger.open(durable_url, snapshot_every=100) as ledger:
        ledger.record_fills(btc, [fill("b1", "buy", "1"), fill("b2", "buy", "2")])
        ledger.record_fill(eth, fill("e1", "sell", "1"))
        expected = ledger.positions()
    with Ledger.open(durable_url) as reopened:
        snapshots = reopened.application.snapshots
        assert snapshots is not None
        for state in expected:
            latest = list(snapshots.get(state.key.stream_id, desc=True, limit=1))
            assert [s.originator_version for s in latest] == [state.version]
        assert reopened.positions() == expected
        reopened.record_fill(btc, fill("b3", "sell", "3"))
        closed_at = reopened.position(btc)
    with Ledger.open(durable_url) as again:
        snapshots = again.application.snapshots
        assert snapshots is not None
        latest = list(snapshots.get(btc.stream_id, desc=True, limit=1))
        assert [s.originator_version for s in latest] == [closed_at.version]  # type: ignore[union-attr]
        eth_snapshots = list(snapshots.get(eth.stream_id))
        assert len(eth_snapshots) == 1  # unchanged since: not snapshotted again


def test_a_ledger_catches_up_with_another_writer_page_by_page(
    durable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_cache, "LOG_PAGE", 3)
    keys = [key(f"C{n}USDT") for n in range(3)]
    with Ledger.open(durable_url) as reader, Ledger.open(durable_url) as writer:
        reader.record_fill(keys[0], fill("r1", "buy", "1"))
        assert reader.keys() == [keys[0]]
        for n, k in enumerate(keys):
            for i in range(4):
                writer.record_fill(k, fill(f"w{n}-{i}", ("buy", "sell")[i == 3], "2"))
        assert reader.keys() == writer.keys() == sorted(keys, key=str)
        assert reader.positions() == writer.positions()


def test_opening_reads_no_key_yet_every_query_sees_every_key(durable_url: str) -> None:
    """Keys are learnt when first needed; a key written meanwhile joins the rest."""
    old = [key(f"O{n}USDT") for n in range(3)]
    with Ledger.open(durable_url) as writer:
        for n, k in enumerate(old):
            writer.record_fill(k, fill(f"o{n}", "buy", "1"))
        expected = writer.positions()
    new = key("NEWUSDT")
    with Ledger.open(durable_url) as ledger:
        assert ledger._cache.keys == {} and ledger._cache.states == {}
        ledger.record_fill(new, fill("n1", "sell", "2"))
        assert ledger.keys() == sorted([*old, new], key=str)
    with Ledger.open(durable_url) as ledger:
        assert [s for s in ledger.positions() if s.key != new] == expected
    with Ledger.open(durable_url) as ledger:
        flat = snapshot(at(9), [row("NEWUSDT", "sell", "2")])
        report = ledger.reconcile(flat, now=at(9))
        assert {o.key for o in report.outcomes} == {*old, new}  # never-loaded keys judged too


def test_the_one_query_insert_stores_any_topic_and_state_exactly(postgres_url: str) -> None:
    """Values written as SQL literals round-trip: quotes and backslashes in a topic, every
    byte in a state."""
    from eventsourcing.persistence import StoredEvent

    with Ledger.open(postgres_url) as ledger:
        recorder = ledger.application.recorder
        stream = uuid.uuid4()
        events = [
            StoredEvent(stream, 1, "it's a \\ topic''\\'", bytes(range(256))),
            StoredEvent(stream, 2, "E'\\x00'", b"\\x'"),
        ]
        ids = recorder.insert_events(events)
        assert ids is not None and len(ids) == 2
        got = recorder.select_events(stream)
        assert [(e.originator_version, e.topic, bytes(e.state)) for e in got] == [
            (e.originator_version, e.topic, e.state) for e in events
        ]


@given(venue=st.text(min_size=1), account=st.text(min_size=1), exec_id=st.text())
def test_marker_ids_are_the_uuid5_of_venue_account_and_exec_id(
    venue: str, account: str, exec_id: str
) -> None:
    key = PositionKey.__new__(PositionKey)
    object.__setattr__(key, "venue", venue)
    object.__setattr__(key, "account", account)
    expected = uuid.uuid5(EXEC_NAMESPACE, "\x1f".join((venue, account, exec_id)))
    marker = marker_id(key.venue, key.account, exec_id)
    assert (marker, str(marker), hash(marker), marker.version) == (
        expected,
        str(expected),
        hash(expected),
        expected.version,
    )
    assert marker.is_safe == expected.is_safe and pickle.loads(pickle.dumps(marker)) == expected
