"""Writers in several processes commit concurrently, and a follower of the log still reads every
committed event exactly once, in an order consistent with each stream (docs/design.md#concurrent-
writers): a transaction holding lower ids holds followers back until it ends, and the gap a
killed writer leaves is skipped once its transaction is over."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from posledger import Ledger
from posledger.store.application import LedgerApplication, open_application
from posledger.store.readmodel import ReadModel
from posledger.store.storage import settings_for
from tests.store.writer_worker import START_TIMEOUT_S, bot_key, fill, hold_write, record_fills

Row = tuple[int, uuid.UUID, int]
"""(notification id, stream, version) of one event."""
SPAWN = multiprocessing.get_context("spawn")
WAIT_S = 60


@pytest.fixture
def app(durable_url: str) -> Iterator[LedgerApplication]:
    with Ledger.open(durable_url):  # creates the tables
        pass
    application = open_application(settings_for(durable_url))
    yield application
    application.close()


def follow(app: LedgerApplication, after: int) -> list[Row]:
    """Every notification a follower at ``after`` reads now."""
    rows: list[Row] = []
    while True:
        page = app.recorder.select_notifications(after, 500, inclusive_of_start=False)
        rows += [(n.id, uuid.UUID(str(n.originator_id)), n.originator_version) for n in page]
        if len(page) < 500:
            return rows
        after = page[-1].id


def committed(url: str) -> list[Row]:
    """Every event in the table, read directly (not as a follower), in id order."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            query = "SELECT rowid, originator_id, originator_version FROM stored_events"
            return sorted((n, uuid.UUID(s), v) for n, s, v in db.execute(query))
    import psycopg

    server, schema = url.split("?schema=")
    with psycopg.connect(server) as conn:
        query = (
            "SELECT notification_id, originator_id, originator_version "
            f'FROM "{schema}".posledger_events'
        )
        return sorted((n, uuid.UUID(str(s)), v) for n, s, v in conn.execute(query))


def assert_exact(delivered: list[Row], table: list[Row]) -> None:
    """Invariant 1: every committed event once, nothing else. Invariant 2: ids increase.
    Invariant 3: each stream's versions arrive as 1, 2, 3, ..."""
    assert delivered == sorted(set(delivered)), "an event was delivered twice or out of id order"
    assert {(s, v) for _, s, v in delivered} == {(s, v) for _, s, v in table}
    seen: dict[uuid.UUID, int] = {}
    for _, stream, version in delivered:
        assert version == seen.get(stream, 0) + 1, f"{stream} v{version} after v{seen.get(stream)}"
        seen[stream] = version


def stream_rows(rows: list[Row], stream: uuid.UUID) -> list[Row]:
    return [row for row in rows if row[1] == stream]


def held_writer(url: str, symbol: str) -> tuple[Any, Any, Any]:
    held, release = SPAWN.Event(), SPAWN.Event()
    process = SPAWN.Process(target=hold_write, args=(url, symbol, held, release))
    process.start()
    assert held.wait(WAIT_S), "the held writer did not reach its INSERT"
    return process, held, release


def after_held_write(url: str, app: LedgerApplication, symbol: str) -> tuple[Any, Any, list[Row]]:
    """A write held open with the lowest ids, one committed after it, and what a follower
    reads then: (the held writer's process, its release, the rows read). The follower must
    not have read the later write."""
    process, _, release = held_writer(url, symbol)
    with Ledger.open(url) as ledger:
        ledger.record_fill(bot_key("AFTER"), fill("after-1", 1))  # commits while held is open
    table = committed(url)
    after = stream_rows(table, bot_key("AFTER").stream_id)
    assert after, "the later writer committed"
    before = follow(app, 0)
    assert not stream_rows(before, bot_key("AFTER").stream_id), "passed ids an open write holds"
    assert (app.recorder.max_notification_id() or 0) < after[0][0]
    return process, release, before


def last(rows: list[Row]) -> int:
    return rows[-1][0] if rows else 0


@pytest.mark.parametrize("durable_url", ["postgres"], indirect=True)
def test_a_follower_waits_for_a_transaction_holding_lower_ids_then_reads_both(
    durable_url: str, app: LedgerApplication
) -> None:
    process, release, before = after_held_write(durable_url, app, "HELD")
    release.set()
    process.join(WAIT_S)
    assert process.exitcode == 0
    delivered = before + follow(app, last(before))
    assert_exact(delivered, committed(durable_url))
    held_ids = [n for n, s, _ in delivered if s == bot_key("HELD").stream_id]
    after_ids = [n for n, s, _ in delivered if s == bot_key("AFTER").stream_id]
    assert held_ids and max(held_ids) < min(after_ids)


@pytest.mark.parametrize("durable_url", ["postgres"], indirect=True)
def test_the_gap_a_killed_writer_leaves_is_skipped_once_its_transaction_is_over(
    durable_url: str, app: LedgerApplication
) -> None:
    process, _, before = after_held_write(durable_url, app, "KILLED")
    os.kill(process.pid, signal.SIGKILL)
    process.join(WAIT_S)
    delivered = list(before)
    deadline = time.monotonic() + WAIT_S  # the server ends the session when it sees it closed
    while not stream_rows(delivered, bot_key("AFTER").stream_id):
        assert time.monotonic() < deadline, "the follower never passed the killed writer's gap"
        time.sleep(0.05)
        delivered += follow(app, last(delivered))
    assert_exact(delivered, committed(durable_url))
    assert not stream_rows(delivered, bot_key("KILLED").stream_id)
    with Ledger.open(durable_url) as ledger:
        assert ledger.position(bot_key("KILLED")) is None
        assert ledger.position(bot_key("AFTER")) is not None


def test_followers_see_every_committed_event_once_while_writers_race_and_die(
    durable_url: str, app: LedgerApplication
) -> None:
    """Six bots on four shared symbols (their writes conflict and are recomputed); one of them
    writes without end and is killed once the others are done. On PostgreSQL two writes are
    held open with the lowest ids while the bots commit: one then commits, the other's process
    is killed. A follower and the read model run all along."""
    symbols = [f"S{n}" for n in range(4)]
    bots = 6
    start = SPAWN.Barrier(bots + 1)
    writers = [
        SPAWN.Process(
            target=record_fills, args=(durable_url, n, 60 if n else 10**6, symbols, start)
        )
        for n in range(bots)
    ]
    held: list[tuple[Any, Any, Any]] = []
    delivered: list[Row] = []
    stop = threading.Event()

    def follower() -> None:
        while not stop.is_set():
            delivered.extend(follow(app, last(delivered)))
            time.sleep(0.005)

    with ReadModel.open(durable_url) as model:
        threads = [
            threading.Thread(target=follower),
            threading.Thread(target=model.run_forever, args=(stop, 0.05)),
        ]
        try:
            if durable_url.startswith("postgresql"):
                held = [held_writer(durable_url, "HELD-1"), held_writer(durable_url, "HELD-2")]
            for process in [*writers]:
                process.start()
            for thread in threads:
                thread.start()
            start.wait(timeout=START_TIMEOUT_S)
            time.sleep(0.2)
            if held:
                held[0][2].set()
                os.kill(held[1][0].pid, signal.SIGKILL)
            for writer in writers[1:]:
                writer.join(WAIT_S * 2)
            os.kill(writers[0].pid, signal.SIGKILL)
            writers[0].join(WAIT_S)
            for process, _, _ in held:
                process.join(WAIT_S)
            assert [w.exitcode for w in writers] == [-signal.SIGKILL] + [0] * (bots - 1)
            time.sleep(0.5)
        finally:
            stop.set()
            for process in [*writers, *(h[0] for h in held)]:
                if process.is_alive():
                    process.kill()
            for thread in threads:
                if thread.is_alive():
                    thread.join(WAIT_S)
        delivered += follow(app, last(delivered))
        assert_exact(delivered, committed(durable_url))
        if held:
            assert stream_rows(delivered, bot_key("HELD-1").stream_id)
            assert not stream_rows(delivered, bot_key("HELD-2").stream_id)
        model.catch_up()
        with Ledger.open(durable_url) as ledger:
            assert model.positions() == ledger.positions()
            assert len(ledger.positions()) >= len(symbols)


@pytest.mark.parametrize("durable_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("events", [2, 100], ids=["one query", "by COPY"])
def test_a_refused_write_leaves_no_transaction_open_and_no_id_lock_held(
    durable_url: str, app: LedgerApplication, events: int
) -> None:
    """A duplicate fails the write whole; its connection goes back to the pool clean (rolled
    back, advisory locks released), so the next writer neither waits nor fails."""
    import psycopg
    from eventsourcing.persistence import IntegrityError, StoredEvent

    stream = uuid.uuid4()
    app.recorder.insert_events([StoredEvent(stream, 1, "t", b"{}")])
    refused = [StoredEvent(uuid.uuid4(), v, "t", b"{}") for v in range(1, events)]
    with pytest.raises(IntegrityError):
        app.recorder.insert_events([*refused, StoredEvent(stream, 1, "t", b"{}")])
    server, schema = durable_url.split("?schema=")
    with psycopg.connect(server) as admin:  # this store's lock and sessions, not other tests'
        locks = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::regclass",
            [f'"{schema}".posledger_events'],
        )
        assert locks.fetchone() == (0,)
        aborted = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%' "
            "AND query LIKE %s",
            [f"%{schema}%"],
        )
        assert aborted.fetchone() == (0,)
    assert app.recorder.insert_events([StoredEvent(stream, 2, "t", b"{}")]) == [events + 2]


@pytest.mark.parametrize("durable_url", ["postgres"], indirect=True)
def test_a_write_interrupted_holding_the_id_lock_releases_it(
    durable_url: str, app: LedgerApplication
) -> None:
    """A query cancelled inside the reserve function would leave its session's advisory lock
    held, and every other writer waiting for it: the write's error path releases it."""
    from posledger.store.postgres_log import RESERVE_LOCK_CLASS, _released_on_error

    with app.recorder.datastore.get_connection() as conn:
        with pytest.raises(RuntimeError), _released_on_error(conn):
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_lock(%s, 1)", [RESERVE_LOCK_CLASS])
            raise RuntimeError("cancelled")
        held = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()"
        )
        assert held.fetchone()["n"] == 0
        assert conn.info.transaction_status == conn.info.transaction_status.IDLE
