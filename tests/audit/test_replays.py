"""Bulk replay and time travel: equal to the ledger on every backend, bounded memory, and a
source that is not a ledger refused without writing anything."""

from __future__ import annotations

import itertools
import sqlite3
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest

from posledger import InvalidInput, Ledger, PositionKey, Side, StorageUnavailable
from posledger.audit import replay, replay_all, replay_events, state_at, verify
from tests.audit.stores import BTC, source_of, varied_history
from tests.conftest import T0, key
from tests.helpers import at, fill


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
