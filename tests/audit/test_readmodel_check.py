"""verify's read-model check: the posledger_positions table compared with the replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from posledger import Ledger
from posledger.audit import READ_MODEL_TABLE, Check, verify
from tests.audit.stores import BETA, BOOK_POLICY, BTC, ETH, SOL, build, with_books
from tests.conftest import T0


def run_sql(url: str, statement: str) -> None:
    """Run ``statement`` in the store at ``url`` (its schema on PostgreSQL), as a hand-edit."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url[len("sqlite:///") :]) as db:
            db.execute(statement)
        return
    import psycopg

    server, schema = url.split("?schema=")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"SET search_path TO {schema}")
        connection.execute(statement)


def caught_up_read_model(url: str, write: Callable[[Ledger], None], **options: Any) -> None:
    """A store written by ``write`` (a ledger opened with ``options``) and its read model,
    caught up."""
    readmodel = pytest.importorskip("posledger.store.readmodel")
    with Ledger.open(url, clock=lambda: T0, **options) as ledger:
        write(ledger)
    with readmodel.ReadModel.open(url) as model:
        model.catch_up()


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
    caught_up_read_model(durable_url, build)
    report = verify(durable_url)
    assert report.ok and report.read_model_checked, str(report)
    run_sql(durable_url, f"UPDATE {READ_MODEL_TABLE} SET status = 'open' WHERE symbol = 'BTCUSDT'")
    report = verify(durable_url)
    assert [(p.key, p.check) for p in report.problems] == [(BTC, Check.READ_MODEL)]
    assert "status" in report.problems[0].detail


def test_a_state_column_that_disagrees_with_the_replay_is_caught(durable_url: str) -> None:
    """The read model's own reads return its ``state`` column: a state edited by hand (every
    other column intact), or one that no longer decodes, is a problem of its key."""
    caught_up_read_model(durable_url, build)
    if durable_url.startswith("sqlite"):
        edited = "json_set(state, '$.size', '9')"
    else:
        edited = "jsonb_set(state, '{size}', '\"9\"')"
    run_sql(durable_url, f"UPDATE {READ_MODEL_TABLE} SET state = {edited} WHERE symbol = 'ETHUSDT'")
    run_sql(durable_url, f"UPDATE {READ_MODEL_TABLE} SET state = '{{}}' WHERE symbol = 'SOLUSDT'")
    report = verify(durable_url)
    assert [(p.key, p.check) for p in report.problems] == [
        (ETH, Check.READ_MODEL),
        (SOL, Check.READ_MODEL),
    ], str(report)
    assert report.for_key(ETH)[0].detail.endswith(": state.size: table 9, replay 3")
    assert "state: cannot be decoded" in report.for_key(SOL)[0].detail


def test_a_read_model_of_books_agrees_and_a_row_in_the_wrong_book_is_caught(
    durable_url: str,
) -> None:
    caught_up_read_model(durable_url, with_books, allocation=BOOK_POLICY)
    report = verify(durable_url)
    assert report.ok and report.read_model_checked, str(report)
    run_sql(durable_url, f"UPDATE {READ_MODEL_TABLE} SET book = 'gamma' WHERE book = 'beta'")
    report = verify(durable_url)
    problems = {(str(p.key), p.detail.split(":")[0]) for p in report.problems}
    assert problems == {
        (str(BETA), f"{READ_MODEL_TABLE} has no row for this key (replay"),
        (
            str(BETA.in_book("gamma")),
            f"{READ_MODEL_TABLE} has a row for a key the event log does not hold",
        ),
    }, str(report)
    assert all(p.check == Check.READ_MODEL for p in report.problems)


def test_a_hand_made_table_without_a_book_column_holds_default_book_rows(
    sqlite_url: str,
) -> None:
    """Rows named by their key columns alone, as dashboards made them before books."""
    with Ledger.open(sqlite_url, clock=lambda: T0) as ledger:
        build(ledger)
        states = ledger.positions()
    with sqlite3.connect(sqlite_url[len("sqlite:///") :]) as db:
        db.execute(
            f"CREATE TABLE {READ_MODEL_TABLE} (venue TEXT, account TEXT, category TEXT, "
            "symbol TEXT, idx INTEGER, size TEXT)"
        )
        db.executemany(
            f"INSERT INTO {READ_MODEL_TABLE} VALUES (?,?,?,?,?,?)",
            [(*(getattr(s.key, f) for f in KEY_FIELDS), str(s.size)) for s in states],
        )
    report = verify(sqlite_url)
    assert report.ok and report.read_model_checked, str(report)


KEY_FIELDS = ("venue", "account", "category", "symbol", "idx")
