"""The open-positions read model: a SQL table that always equals a replay of the event log.

Every test compares the table with a replay (``Ledger.positions()`` of a freshly opened ledger,
and ``project(history)`` per key), both through ``ReadModel`` and through plain SQL with
``sqlite3``/``psycopg``, since plain SQL is what the table is for.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from hypothesis import given
from hypothesis import strategies as st

from posledger import (
    ExecKind,
    Fill,
    InvalidInput,
    Ledger,
    PositionKey,
    PositionState,
    Side,
    StorageUnavailable,
)
from posledger.core.events import POSITION_TOPICS, PositionEvent
from posledger.core.position import project
from posledger.store.application import LedgerApplication
from posledger.store.readmodel import COLUMNS, ReadModel
from posledger.store.readmodel.views import LATER_COLUMNS, SQLitePositionsView
from posledger.store.storage import settings_for
from tests.conftest import T0
from tests.helpers import at, fill, row, snapshot

BTC = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT", idx=0)
ETH = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=0)
SOL_LONG = PositionKey(venue="bybit", account="main", category="linear", symbol="SOLUSDT", idx=1)
SOL_SHORT = PositionKey(venue="bybit", account="main", category="linear", symbol="SOLUSDT", idx=2)
XRP = PositionKey(venue="bybit", account="main", category="linear", symbol="XRPUSDT", idx=0)


# --- histories --------------------------------------------------------------------------------


def execute(
    ledger: Ledger,
    key: PositionKey,
    exec_id: str,
    side: str,
    qty: str,
    price: str,
    minute: float,
    *,
    order: str = "",
    leaves: str | None = None,
    fee: str = "0",
    seq: int | None = None,
    kind: ExecKind = ExecKind.TRADE,
) -> None:
    ledger.record_fill(
        key,
        fill(
            exec_id,
            side,
            qty,
            price,
            order_id=order,
            leaves_qty=None if leaves is None else Decimal(leaves),
            fee=fee,
            exec_time=at(minute),
            seq=seq,
            kind=kind,
            idx=key.idx,
        ),
    )


def varied_history(ledger: Ledger) -> None:
    """Requests, partial fills, a flip, funding, exits, a cancellation, hedge legs, and
    reconcile corrections (phantom, stale quantity, adoption) after their confirmations."""
    funding = ExecKind.FUNDING
    ledger.request_open(BTC, order_id="o1", side=Side.BUY, qty=Decimal("2.000"), at=at(0))
    execute(ledger, BTC, "b1", "buy", "0.500", "43000.5", 1, order="o1", leaves="1.5", seq=11)
    execute(ledger, BTC, "b2", "buy", "1.500", "43010", 2, order="o1", leaves="0", seq=12)
    execute(ledger, BTC, "bf", "buy", "2", "43005", 3, fee="0.7331", kind=funding)
    ledger.request_exit(BTC, order_id="x1", qty=Decimal("2"), at=at(4))
    execute(ledger, BTC, "b3", "sell", "0.700", "43100", 5, order="x1", leaves="1.3", seq=13)
    ledger.record_order_end(BTC, order_id="x1", status="Cancelled", at=at(6))
    ledger.request_open(BTC, order_id="o2", side=Side.SELL, qty=Decimal("3"), at=at(7))
    # Sells 3 of a long 1.3: closes lifecycle 1 and opens a short 1.7 (a maker rebate fee).
    execute(ledger, BTC, "b4", "sell", "3", "42900.25", 8, order="o2", leaves="0", fee="-0.005")

    execute(ledger, ETH, "e1", "buy", "1", "3000", 1, seq=21)

    ledger.request_open(SOL_LONG, order_id="s1", side=Side.BUY, qty=Decimal(5), at=at(1))
    execute(ledger, SOL_LONG, "s1", "buy", "5", "150.1", 2, order="s1", leaves="0", seq=31)
    ledger.request_open(SOL_SHORT, order_id="s2", side=Side.SELL, qty=Decimal(2), at=at(1))
    execute(ledger, SOL_SHORT, "s2", "sell", "2", "150.3", 2, order="s2", leaves="0", seq=32)
    execute(ledger, SOL_SHORT, "sf", "sell", "2", "150", 3, fee="-0.03", kind=funding)
    ledger.request_open(SOL_SHORT, order_id="s3", side=Side.SELL, qty=Decimal(1), at=at(9))

    # The exchange: BTC short 1.7 (agrees), ETH gone (phantom), SOL long leg 4 not 5 (stale
    # quantity), SOL short leg 2 (agrees), XRP long 10 unknown to the ledger (adopted).
    rows = [
        row("BTCUSDT", "sell", "1.7"),
        row("SOLUSDT", "buy", "4", idx=1, avg_price=Decimal("150.1")),
        row("SOLUSDT", "sell", "2", idx=2),
        row("XRPUSDT", "buy", "10", avg_price=Decimal("0.5123")),
    ]
    for minute in (20, 21):
        ledger.reconcile(snapshot(at(minute), rows, open_order_ids={"s3"}), now=at(minute))


def more_history(ledger: Ledger, start: float = 30) -> None:
    """What happens while the read model is down: BTC closes, SOL adds, ETH reopens."""
    ledger.request_open(BTC, order_id="o3", side=Side.BUY, qty=Decimal("1.7"), at=at(start))
    execute(ledger, BTC, "b5", "buy", "1.7", "42000", start + 1, order="o3", leaves="0", seq=15)
    execute(ledger, SOL_SHORT, "s4", "sell", "1", "149", start + 1, order="s3", leaves="0")
    execute(ledger, ETH, "e2", "sell", "0.25", "3100", start + 2, seq=22)


def many_fills(ledger: Ledger, count: int, prefix: str = "m") -> None:
    keys = (BTC, ETH, SOL_LONG, SOL_SHORT)
    for i in range(count):
        key = keys[i % len(keys)]
        side = key.leg_side or (Side.BUY if i % 3 else Side.SELL)
        ledger.record_fill(
            key,
            Fill(
                exec_id=f"{prefix}{i}",
                order_id="",
                side=side,
                qty=Decimal(i % 7 + 1) / 10,
                price=Decimal(100 + i % 13),
                fee=Decimal("0.001"),
                exec_time=T0 + timedelta(seconds=i),
                idx=key.idx,
            ),
        )


# --- comparing with a replay ------------------------------------------------------------------


def replay(url: str) -> list[PositionState]:
    """The ledger's answer from a fresh process view of the store (events + snapshots)."""
    with Ledger.open(url) as fresh:
        return fresh.positions()


def folded(ledger: Ledger, keys: list[PositionKey]) -> list[PositionState]:
    """Every key's events folded from scratch, in key order."""
    states = [project(None, ledger.history(key)) for key in keys]
    return sorted((s for s in states if s is not None), key=lambda s: str(s.key))


def assert_table_equals(url: str, model: ReadModel, expected: list[PositionState]) -> None:
    assert model.positions() == expected
    opened = [s for s in expected if s.status == "open"]
    assert model.open_positions() == opened
    assert [model.position(s.key) for s in expected] == expected
    assert_sql_equals(url, expected)


def sql_rows(
    url: str, relation: str, account: str | None = None, connection: Any = None
) -> list[dict[str, Any]]:
    """``SELECT * FROM relation`` with the database's own driver: what a dashboard would do."""
    if connection is None:
        with sql_connection(url) as opened:
            return sql_rows(url, relation, account, opened)
    where = "" if account is None else " WHERE account = "
    if url.startswith("sqlite"):
        query = f"SELECT * FROM {relation}{where and where + '?'} ORDER BY stream_id"
        cursor = connection.execute(query, () if account is None else (account,))
        return [dict(r) for r in cursor.fetchall()]
    schema = url.split("?schema=")[1]
    query = f'SELECT * FROM "{schema}".{relation}{where and where + "%s"} ORDER BY stream_id'
    return list(connection.execute(query, () if account is None else (account,)))


@contextmanager
def sql_connection(url: str) -> Iterator[Any]:
    if url.startswith("sqlite"):
        with contextlib_closing(sqlite3.connect(url[len("sqlite:///") :])) as connection:
            connection.row_factory = sqlite3.Row
            yield connection
        return
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url.split("?schema=")[0], row_factory=dict_row, autocommit=True) as pg:
        yield pg


@contextmanager
def contextlib_closing(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield connection
    finally:
        connection.close()


def as_decimal(value: object) -> Decimal | None:
    """A quantity column: NUMERIC comes back as Decimal, SQLite TEXT as the exact string."""
    if value is None:
        return None
    assert isinstance(value, Decimal | str), f"quantity stored as {type(value).__name__}"
    return Decimal(value)


def as_datetime(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def expected_row(state: PositionState) -> dict[str, Any]:
    key = state.key
    return {
        "stream_id": str(key.stream_id),
        "venue": key.venue,
        "account": key.account,
        "category": key.category,
        "symbol": key.symbol,
        "idx": key.idx,
        "status": state.status.value,
        "side": state.side.value if state.side else None,
        "size": state.size,
        "avg_entry_price": state.avg_entry_price,
        "realized_pnl": state.realized_pnl,
        "fees": state.fees,
        "funding": state.funding,
        "lifecycle": state.lifecycle,
        "pending_orders": len(state.pending_orders),
        "version": state.version,
        "updated_at": state.updated_at,
        "settle_coin": key.settle_coin,
        "adopted_pnl": state.adopted_pnl,
        "unexplained_pnl": state.unexplained_pnl,
        "book": key.book,
    }


QUANTITY_COLUMNS = (
    "size",
    "avg_entry_price",
    "realized_pnl",
    "fees",
    "funding",
    "adopted_pnl",
    "unexplained_pnl",
)


def normalised(row_: dict[str, Any]) -> dict[str, Any]:
    assert list(row_) == list(COLUMNS)
    out = {name: row_[name] for name in COLUMNS if name != "state"}
    out["stream_id"] = str(out["stream_id"])
    for name in QUANTITY_COLUMNS:
        out[name] = as_decimal(out[name])
    out["updated_at"] = as_datetime(out["updated_at"])
    return out


def assert_sql_equals(url: str, expected: list[PositionState]) -> None:
    by_id = sorted(expected, key=lambda s: str(s.key.stream_id))
    assert [normalised(r) for r in sql_rows(url, "posledger_positions")] == [
        expected_row(s) for s in by_id
    ]
    assert [normalised(r) for r in sql_rows(url, "posledger_open_positions")] == [
        expected_row(s) for s in by_id if s.status == "open"
    ]


def position_event_count(url: str) -> int:
    app = LedgerApplication.for_settings(settings_for(url))
    try:
        return len(app.recorder.select_notifications(0, 10**6, topics=POSITION_TOPICS))
    finally:
        app.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- the table equals a replay ----------------------------------------------------------------


def test_the_table_equals_a_replay_through_the_model_and_plain_sql(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        keys = ledger.keys()
        expected = folded(ledger, keys)
        kinds = {
            e.kind for k in keys for e in ledger.history(k) if type(e).__name__ == "Reconciled"
        }
    assert kinds == {"phantom", "stale_quantity", "adopted"}
    assert {k.symbol for k in keys} == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    assert replay(durable_url) == expected
    btc = next(s for s in expected if s.key == BTC)
    assert (btc.side, btc.size, btc.lifecycle) == (Side.SELL, Decimal("1.7"), 2)

    with ReadModel.open(durable_url) as model:
        assert model.positions() == []
        assert model.catch_up() == position_event_count(durable_url)
        assert model.catch_up() == 0
        assert_table_equals(durable_url, model, expected)


def test_quantities_are_exact_decimals_in_sql(durable_url: str) -> None:
    """NUMERIC on PostgreSQL, TEXT holding the decimal on SQLite: never a binary float."""
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        ledger.record_fill(BTC, fill("q1", "buy", "0.1", "0.1", fee="0.00000001"))
        ledger.record_fill(BTC, fill("q2", "buy", "0.2", "0.2", fee="0.00000002"))
        model.catch_up()
        state = ledger.position(BTC)
        assert state is not None
        (stored,) = sql_rows(durable_url, "posledger_positions")
        assert as_decimal(stored["size"]) == Decimal("0.3")
        assert as_decimal(stored["fees"]) == Decimal("0.00000003")
        assert as_decimal(stored["avg_entry_price"]) == state.avg_entry_price
    if durable_url.startswith("sqlite"):
        path = durable_url[len("sqlite:///") :]
        with contextlib_closing(sqlite3.connect(path)) as connection:
            types = connection.execute(
                "SELECT typeof(size), typeof(avg_entry_price), typeof(fees) "
                "FROM posledger_positions"
            ).fetchone()
        assert types == ("text", "text", "text")
    else:
        import psycopg

        server, schema = durable_url.split("?schema=")
        with psycopg.connect(server) as connection:
            found = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'posledger_positions'",
                (schema,),
            ).fetchall()
        types_by_name = dict(found)
        for name in ("size", "avg_entry_price", "realized_pnl", "fees", "funding"):
            assert types_by_name[name] == "numeric"
        assert types_by_name["state"] == "jsonb"
        assert types_by_name["stream_id"] == "uuid"


def test_each_row_names_its_settle_coin_and_an_older_table_gains_the_later_columns(
    durable_url: str,
) -> None:
    inverse = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        ledger.record_fill(BTC, fill("c1", "buy", "1", "40000"))
        ledger.record_fill(inverse, fill("c2", "buy", "100", "20000"))
        model.catch_up()
    coins = {r["symbol"]: r["settle_coin"] for r in sql_rows(durable_url, "posledger_positions")}
    assert coins == {"BTCUSDT": "USDT", "BTCUSD": "BTC"}

    as_released_before(durable_url)
    assert not set(LATER_COLUMNS) & set(sql_rows(durable_url, "posledger_positions")[0])
    with ReadModel.open(durable_url) as model:
        assert {p.key.symbol for p in model.positions()} == {"BTCUSDT", "BTCUSD"}
    for name in ("posledger_positions", "posledger_open_positions"):
        rows = sql_rows(durable_url, name)
        coins = {r["symbol"]: r["settle_coin"] for r in rows}
        assert coins == {"BTCUSDT": "USDT", "BTCUSD": "BTC"}, name
        assert {as_decimal(r["adopted_pnl"]) for r in rows} == {Decimal(0)}
        assert {as_decimal(r["unexplained_pnl"]) for r in rows} == {Decimal(0)}


def as_released_before(url: str, later: tuple[str, ...] = (*LATER_COLUMNS, "book")) -> None:
    """The read model's table, key and view as the release before the ``later`` columns left
    them (by default the release before LATER_COLUMNS, which had no book either)."""
    old_columns = ", ".join(c for c in COLUMNS if c not in later)
    old_key = "venue, account, category, symbol, idx" + (", book" if "book" not in later else "")
    statements = (
        "DROP VIEW posledger_open_positions",
        "DROP INDEX posledger_positions_key",
        *(f"ALTER TABLE posledger_positions DROP COLUMN {c}" for c in later),
        f"CREATE UNIQUE INDEX posledger_positions_key ON posledger_positions ({old_key})",
        f"CREATE VIEW posledger_open_positions AS SELECT {old_columns} "
        "FROM posledger_positions WHERE status = 'open'",
    )
    run_statements(url, statements)


def run_statements(url: str, statements: Iterable[str], *params: tuple[Any, ...]) -> None:
    """Plain SQL in the store at ``url`` (its schema on PostgreSQL); ``params`` are rows for
    the last statement, which then runs once per row."""
    *plain, last = statements
    if url.startswith("sqlite"):
        with contextlib_closing(sqlite3.connect(url[len("sqlite:///") :])) as connection:
            for statement in plain:
                connection.execute(statement)
            connection.executemany(last, params or [()])
            connection.commit()
        return
    import psycopg

    server, schema = url.split("?schema=")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"SET search_path TO {schema}")
        for statement in plain:
            connection.execute(statement)
        with connection.cursor() as cursor:
            cursor.executemany(last.replace("?", "%s"), params or [()])


PRE_BOOK_DDL = {
    "sqlite": (
        "CREATE TABLE posledger_positions ("
        "stream_id TEXT PRIMARY KEY, venue TEXT NOT NULL, account TEXT NOT NULL, "
        "category TEXT NOT NULL, symbol TEXT NOT NULL, idx INTEGER NOT NULL, "
        "status TEXT NOT NULL, side TEXT, size TEXT NOT NULL, avg_entry_price TEXT, "
        "realized_pnl TEXT NOT NULL, fees TEXT NOT NULL, funding TEXT NOT NULL, "
        "lifecycle INTEGER NOT NULL, pending_orders INTEGER NOT NULL, "
        "version INTEGER NOT NULL, updated_at TEXT NOT NULL, state TEXT NOT NULL, "
        "settle_coin TEXT, adopted_pnl TEXT NOT NULL DEFAULT '0', "
        "unexplained_pnl TEXT NOT NULL DEFAULT '0')",
        "CREATE INDEX posledger_positions_status ON posledger_positions (status)",
    ),
    "postgresql": (
        "CREATE TABLE posledger_positions ("
        "stream_id uuid PRIMARY KEY, venue text NOT NULL, account text NOT NULL, "
        "category text NOT NULL, symbol text NOT NULL, idx integer NOT NULL, "
        "status text NOT NULL, side text, size numeric NOT NULL, "
        "avg_entry_price numeric, realized_pnl numeric NOT NULL, "
        "fees numeric NOT NULL, funding numeric NOT NULL, "
        "lifecycle integer NOT NULL, pending_orders integer NOT NULL, "
        "version bigint NOT NULL, updated_at timestamptz NOT NULL, "
        "state jsonb NOT NULL, settle_coin text, adopted_pnl numeric NOT NULL DEFAULT 0, "
        "unexplained_pnl numeric NOT NULL DEFAULT 0)",
        "CREATE INDEX posledger_positions_status ON posledger_positions (status)",
    ),
}
"""The read model's table as the release before books created it (the tracking table is
unchanged): its unique key had no book."""
PRE_BOOK_KEY_AND_VIEW = (
    "CREATE UNIQUE INDEX posledger_positions_key "
    "ON posledger_positions (venue, account, category, symbol, idx)",
    f"CREATE VIEW posledger_open_positions AS SELECT {', '.join(COLUMNS[:-1])} "
    "FROM posledger_positions WHERE status = 'open'",
)


def test_a_table_made_before_books_gains_the_book_column_and_key(durable_url: str) -> None:
    """The release before books' DDL, with its rows (written as that release wrote them):
    opened by this release, every row is the default book's, and two books of one account
    are two rows."""
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        before = ledger.positions()
    backend = "sqlite" if durable_url.startswith("sqlite") else "postgresql"
    if backend == "sqlite":
        row_of = SQLitePositionsView._row
    else:
        from posledger.store.readmodel.postgres_view import PostgresPositionsView

        row_of = PostgresPositionsView._row
    insert = (
        f"INSERT INTO posledger_positions ({', '.join(COLUMNS[:-1])}) "
        f"VALUES ({', '.join('?' * (len(COLUMNS) - 1))})"
    )
    old_rows = [row_of(state)[:-1] for state in before]
    run_statements(durable_url, (*PRE_BOOK_DDL[backend], *PRE_BOOK_KEY_AND_VIEW, insert), *old_rows)

    with ReadModel.open(durable_url) as model:
        assert model.catch_up() == 0  # the old rows already hold every event
        assert_table_equals(durable_url, model, before)
        assert {r["book"] for r in sql_rows(durable_url, "posledger_positions")} == {""}
        with Ledger.open(durable_url) as ledger:
            for book in ("alpha", "beta"):
                execute(ledger, XRP.in_book(book), f"x-{book}", "buy", "1", "0.5", 40)
            model.catch_up()
            expected = folded(ledger, ledger.keys())
        assert_table_equals(durable_url, model, expected)
    xrp = [r for r in sql_rows(durable_url, "posledger_open_positions") if r["symbol"] == "XRPUSDT"]
    assert sorted(r["book"] for r in xrp) == ["", "alpha", "beta"]


def test_books_of_one_account_are_rows_of_their_own(durable_url: str) -> None:
    account = BTC
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        ledger.request_open(account.in_book("alpha"), order_id="a1", side="Buy", qty="2", at=at(0))
        execute(ledger, account.in_book("alpha"), "a", "buy", "2", "100", 1, order="a1")
        execute(ledger, account.in_book("beta"), "b", "sell", "1", "110", 2)
        ledger.record_account_fills(account, [fill("m", "sell", "0.5", "120", exec_time=at(3))])
        model.catch_up()
        expected = folded(ledger, ledger.keys())
        assert {s.key.book for s in expected} == {"", "alpha", "beta"}
        assert_table_equals(durable_url, model, expected)
    rows = sql_rows(durable_url, "posledger_positions")
    assert {(r["book"], as_decimal(r["size"]), r["side"]) for r in rows} == {
        ("alpha", 2, "buy"),
        ("beta", 1, "sell"),
        ("", Decimal("0.5"), "sell"),
    }


# --- restarts and downtime --------------------------------------------------------------------


def test_catch_up_after_downtime_continues_from_the_tracking_position(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        with ReadModel.open(durable_url) as model:
            first = model.catch_up()
            assert_table_equals(durable_url, model, replay(durable_url))
            position = model.tracking_position()
        more_history(ledger)  # written while the read model is down
        missed = position_event_count(durable_url) - first
        assert missed > 0
        with ReadModel.open(durable_url) as restarted:
            assert restarted.tracking_position() == position
            assert restarted.positions() != replay(durable_url)  # stale until it catches up
            assert restarted.catch_up() == missed
            assert_table_equals(durable_url, restarted, folded(ledger, ledger.keys()))
            assert restarted.catch_up() == 0


def test_run_forever_stopped_and_restarted_misses_nothing(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        for round_ in range(2):
            with ReadModel.open(durable_url) as model:
                stop = threading.Event()
                expected = replay(durable_url)
                runner = threading.Thread(target=model.run_forever, args=(stop, 0.05))
                runner.start()
                wait_until(lambda m=model, e=expected: m.positions() == e)
                stop.set()
                runner.join(timeout=10)
                assert not runner.is_alive()
            if round_ == 0:
                more_history(ledger)
        with ReadModel.open(durable_url) as model:
            assert_table_equals(durable_url, model, replay(durable_url))


# --- exactly once -----------------------------------------------------------------------------


def test_processing_tracked_notifications_again_changes_nothing(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        varied_history(ledger)
        model.catch_up()
        before = sql_rows(durable_url, "posledger_positions")
        position = model.tracking_position()

        app = LedgerApplication.for_settings(settings_for(durable_url))
        try:
            log = list(app.recorder.select_notifications(0, 10**6, topics=POSITION_TOPICS))
        finally:
            app.close()
        # The whole log again, a page of it, and single notifications: all already tracked.
        assert model.process(log) == 0
        assert model.process(log[3:9]) == 0
        for notification in log[:5]:
            assert model.process([notification]) == 0
        # The projection itself refuses a tracked notification: nothing half-applied.
        event = app.mapper.to_domain_event(log[-1])
        with pytest.raises(IntegrityError):
            model.projection.process_event(event, Tracking(model.application_name, log[-1].id))
        assert sql_rows(durable_url, "posledger_positions") == before
        assert model.tracking_position() == position
        assert model.catch_up() == 0
        assert_table_equals(durable_url, model, replay(durable_url))


def test_a_refused_write_leaves_no_row_behind(durable_url: str) -> None:
    """The row upsert and the tracking record are one transaction: when tracking refuses a
    notification, the row it would have written is not there either."""
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        ledger.record_fill(BTC, fill("a1", "buy", "1"))
        model.catch_up()
        ledger.record_fill(ETH, fill("a2", "buy", "2"))
        eth = ledger.position(ETH)
        assert eth is not None
        stale = Tracking(model.application_name, model.tracking_position())
        with pytest.raises(IntegrityError):
            model.view.write([eth], stale)
        assert model.position(ETH) is None
        assert [r["symbol"] for r in sql_rows(durable_url, "posledger_positions")] == ["BTCUSDT"]
        assert model.catch_up() == 2  # KeyRegistered + Filled of ETH
        assert_table_equals(durable_url, model, replay(durable_url))


def test_two_runners_racing_on_one_view_apply_each_event_once(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        many_fills(ledger, 80)
    total = position_event_count(durable_url)
    models = [ReadModel.open(durable_url) for _ in range(2)]
    applied = [0, 0]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            applied[i] = models[i].catch_up(page=7)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not errors, errors
        assert sum(applied) == total
        assert_table_equals(durable_url, models[0], replay(durable_url))
    finally:
        for model in models:
            model.close()


def test_two_followers_racing_while_a_writer_writes(durable_url: str) -> None:
    """Two run_forever loops on the same view (live subscriptions on PostgreSQL) while events
    arrive: neither fails on the other's writes, and the table ends equal to the replay."""
    stop = threading.Event()
    with Ledger.open(durable_url) as ledger:
        models = [ReadModel.open(durable_url) for _ in range(2)]
        runners = [threading.Thread(target=m.run_forever, args=(stop, 0.02)) for m in models]
        try:
            for runner in runners:
                runner.start()
            varied_history(ledger)
            many_fills(ledger, 40)
            expected = folded(ledger, ledger.keys())
            wait_until(lambda: models[1].positions() == expected)
        finally:
            stop.set()
            for runner in runners:
                runner.join(timeout=10)
            for model in models:
                model.close()
        assert not any(r.is_alive() for r in runners)
        with ReadModel.open(durable_url) as model:
            assert model.catch_up() == 0
            assert_table_equals(durable_url, model, expected)


def test_several_read_models_opening_at_once_on_a_fresh_store(durable_url: str) -> None:
    """Creating the tables is idempotent, also when processes start together."""
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            with ReadModel.open(durable_url) as model:
                model.catch_up()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with ReadModel.open(durable_url) as model:
        assert_table_equals(durable_url, model, replay(durable_url))


# --- following live ---------------------------------------------------------------------------


def test_run_forever_picks_up_new_events_and_stops_cleanly(durable_url: str) -> None:
    postgres = durable_url.startswith("postgres")
    # On PostgreSQL the poll interval is far longer than the test: only LISTEN/NOTIFY can
    # deliver the events in time. SQLite has no live subscription and polls.
    interval = 60.0 if postgres else 0.05
    with Ledger.open(durable_url) as ledger, ReadModel.open(durable_url) as model:
        ledger.record_fill(BTC, fill("r0", "buy", "1"))
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                model.run_forever(stop, poll_interval=interval)
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        runner = threading.Thread(target=run)
        runner.start()
        try:
            wait_until(lambda: model.position(BTC) == ledger.position(BTC))
            time.sleep(0.2)  # now it waits for notifications
            started = time.monotonic()
            execute(ledger, BTC, "r1", "buy", "2", "101", 1)
            execute(ledger, BTC, "r2", "sell", "0.5", "102", 1)
            execute(ledger, ETH, "r3", "sell", "4", "99", 1)
            wait_until(lambda: model.positions() == ledger.positions(), timeout=5)
            assert time.monotonic() - started < 5
        finally:
            stop.set()
            runner.join(timeout=5)
        assert not runner.is_alive()
        assert not errors, errors
        assert_table_equals(durable_url, model, replay(durable_url))


# --- memory:// --------------------------------------------------------------------------------


def test_memory_read_model_shares_its_ledger() -> None:
    with Ledger.open("memory://") as ledger:
        varied_history(ledger)
        with ReadModel.attach(ledger) as model:
            assert model.catch_up() > 0
            assert model.positions() == folded(ledger, ledger.keys())
            assert model.open_positions() == ledger.open_positions()
            stop = threading.Event()
            runner = threading.Thread(target=model.run_forever, args=(stop, 0.05))
            runner.start()
            try:
                more_history(ledger)
                wait_until(lambda: model.positions() == ledger.positions())
            finally:
                stop.set()
                runner.join(timeout=5)
            assert not runner.is_alive()
            tracked = model.tracking_position()
            assert (
                model.process(
                    ledger.application.recorder.select_notifications(
                        0, 10**6, topics=POSITION_TOPICS
                    )
                )
                == 0
            )
            assert model.tracking_position() == tracked
        # The ledger is still usable: attach() does not own it.
        assert ledger.position(BTC) is not None


def test_memory_url_alone_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInput, match="attach"):
        ReadModel.open("memory://")


def test_attach_to_a_durable_ledger_reads_the_same_table(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        varied_history(ledger)
        with ReadModel.attach(ledger) as attached:
            attached.catch_up()
        assert ledger.position(BTC) is not None  # still open
        with ReadModel.open(durable_url) as model:
            assert model.catch_up() == 0
            assert_table_equals(durable_url, model, replay(durable_url))


# --- storage errors ---------------------------------------------------------------------------


def test_an_unreachable_database_is_storage_unavailable() -> None:
    with pytest.raises(StorageUnavailable):
        ReadModel.open("postgresql://postgres@127.0.0.1:9/test", timeout=1)


def test_postgres_outage_stops_the_runner_with_storage_unavailable_then_restart_catches_up(
    postgres_url: str,
) -> None:
    from urllib.parse import urlsplit

    from tests.tcp_proxy import TcpProxy

    parts = urlsplit(postgres_url)
    with (
        Ledger.open(postgres_url) as ledger,
        TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy,
    ):
        via_proxy = postgres_url.replace(f":{parts.port}/", f":{proxy.port}/", 1)
        varied_history(ledger)
        with ReadModel.open(via_proxy, timeout=1) as model:
            stop = threading.Event()
            failures: list[BaseException] = []

            def run() -> None:
                try:
                    model.run_forever(stop, poll_interval=0.2)
                except BaseException as error:
                    failures.append(error)

            runner = threading.Thread(target=run)
            runner.start()
            wait_until(lambda: model.tracking_position() > 0)
            proxy.cut()
            runner.join(timeout=30)
            stop.set()
            assert not runner.is_alive()
            assert [type(f) for f in failures] == [StorageUnavailable]
            with pytest.raises(StorageUnavailable):
                model.positions()
            more_history(ledger)  # written while the read model is cut off
            proxy.restore()
            model.run_forever(stop)  # the same object works again: catches up, then stops
            assert_table_equals(postgres_url, model, replay(postgres_url))
            with ReadModel.open(via_proxy, timeout=1) as restarted:
                restarted.catch_up()
                assert_table_equals(postgres_url, restarted, replay(postgres_url))


def test_missing_tables_without_create_tables_are_storage_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    with Ledger.open(url) as ledger:
        ledger.record_fill(BTC, fill("t1", "buy", "1"))
    with (
        pytest.raises(StorageUnavailable, match="create_tables"),
        ReadModel.open(url, create_tables=False) as model,
    ):
        model.catch_up()
    with ReadModel.open(url) as model:
        assert model.catch_up() == 2
    with ReadModel.open(url, create_tables=False) as model:
        assert model.catch_up() == 0
        assert [s.key for s in model.open_positions()] == [BTC]


# --- random histories -------------------------------------------------------------------------


OPERATIONS = (
    *("open", "open", "exit", "fill", "fill", "fill", "fill", "liquidation", "funding"),
    *("end", "reconcile", "reconcile", "catch"),
)


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A random bot session on a few keys (one-way and both hedge legs): requests, executions
    (trades, liquidations, funding), order ends, reconciles (possibly repeated, so corrections
    get their confirmations) and catch-ups of the read model in between."""
    steps = []
    for i in range(draw(st.integers(1, 8))):
        symbol = draw(st.sampled_from(("BTCUSDT", "BTCUSDT", "BTCUSDT", "ETHUSDT")))
        idx = draw(st.sampled_from((0, 0, 1, 2)))
        side = draw(st.sampled_from(("buy", "sell")))
        qty = draw(st.sampled_from(("0.5", "1", "1.5", "2", "3.25")))
        op = draw(st.sampled_from(OPERATIONS))
        steps.append((op, i, symbol, idx, side, qty, draw(st.integers(0, 4))))
    return steps


def apply_operation(ledger: Ledger, account: str, step: tuple[Any, ...], model: ReadModel) -> None:
    op, i, symbol, idx, side, qty, pick = step
    key = PositionKey(venue="bybit", account=account, category="linear", symbol=symbol, idx=idx)
    side = (key.leg_side or side) if op in ("open", "reconcile") else side
    when = at(i)
    try:
        if op == "open":
            ledger.request_open(key, order_id=f"o{pick}", side=side, qty=qty, at=when)
        elif op == "exit":
            ledger.request_exit(key, order_id=f"o{pick}", qty=qty, at=when)
        elif op in ("fill", "liquidation", "funding"):
            kind = {"fill": ExecKind.TRADE, "liquidation": ExecKind.LIQUIDATION}.get(
                op, ExecKind.FUNDING
            )
            order = f"o{pick}" if pick and op == "fill" else ""
            price = str(100 + pick * 3)
            fee = str(Decimal(pick - 1) / 100)
            leaves = "1" if pick == 4 and order else None  # a partial fill, order still working
            execute(ledger, key, f"e{i}", side, qty, price, i, order=order, fee=fee, kind=kind,
                    leaves=leaves)  # fmt: skip
        elif op == "end":
            ledger.record_order_end(key, order_id=f"o{pick}", status="Cancelled", at=when)
        elif op == "reconcile":
            rows = [row(symbol, side, qty, idx=idx)] if pick % 2 else []
            for minute in range(2 if pick >= 2 else 1):
                taken = when + timedelta(minutes=2 + minute)
                ledger.reconcile(
                    snapshot(taken, rows, symbols=[symbol], account=account), now=taken
                )
        else:
            model.catch_up()
    except InvalidInput:
        pass  # refused before anything was written: part of the history too


def test_random_histories_table_equals_replay(durable_url: str) -> None:
    """Hypothesis drives random sessions through the Ledger (each in its own account of one
    store); after each, the table equals the replay, through the model and through SQL."""
    with (
        Ledger.open(durable_url) as ledger,
        ReadModel.open(durable_url) as model,
        sql_connection(durable_url) as connection,
    ):

        @given(steps=operations())
        def check(steps: list[tuple[Any, ...]]) -> None:
            account = f"h{uuid4().hex[:12]}"
            for step in steps:
                apply_operation(ledger, account, step, model)
            model.catch_up()
            known = ledger.keys()
            keys = [k for k in known if k.account == account]
            expected = folded(ledger, keys)
            assert [s for s in ledger.positions() if s.key.account == account] == expected
            assert [model.position(k) for k in keys] == expected
            rows = sql_rows(durable_url, "posledger_positions", account, connection)
            table = [normalised(r) for r in rows]
            assert table == [
                expected_row(s) for s in sorted(expected, key=lambda s: str(s.key.stream_id))
            ]
            opened = sql_rows(durable_url, "posledger_open_positions", account, connection)
            assert [r["symbol"] for r in opened] == [
                s.key.symbol
                for s in sorted(expected, key=lambda s: str(s.key.stream_id))
                if s.status == "open"
            ]

        check()
        assert model.positions() == ledger.positions()
        assert model.open_positions() == ledger.open_positions()


def test_event_topics_cover_every_position_event() -> None:
    """The projection subscribes by topic; a position event class without its topic in
    POSITION_TOPICS would silently never reach the table."""
    from posledger import events

    classes = {
        obj
        for obj in vars(events).values()
        if isinstance(obj, type) and issubclass(obj, PositionEvent) and obj.__subclasses__() == []
    }
    assert {cls.TOPIC for cls in classes} <= set(POSITION_TOPICS)


def test_ddl_that_lost_a_creation_race_is_tried_again_and_other_errors_are_not() -> None:
    """Two processes creating the open-positions view at once: the loser's "already exists"
    (seen once in CI) is a lost race, tried again; any other programming error is raised."""
    from eventsourcing.persistence import ProgrammingError

    from posledger.store.readmodel.runner import _creating

    calls: list[int] = []

    def lost_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ProgrammingError('relation "posledger_open_positions" already exists')
        return "created"

    assert _creating(lost_once) == "created" and len(calls) == 2

    def broken() -> str:
        raise ProgrammingError("syntax error at or near SELEC")

    with pytest.raises(ProgrammingError, match="syntax"):
        _creating(broken)
