"""Ledger URLs: the three backends, clear refusals, and no password in any description."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from posledger import InvalidInput, Ledger, StorageUnavailable
from posledger.store.storage import settings_for
from tests.conftest import key
from tests.helpers import fill


def test_memory_and_sqlite_urls(tmp_path: Path) -> None:
    assert settings_for("memory://").scheme == "memory"
    sqlite = settings_for(f"sqlite:///{tmp_path / 'p.db'}")
    assert sqlite.env["SQLITE_DBNAME"] == str(tmp_path / "p.db")


@pytest.mark.parametrize(
    "url",
    ["positions.db", "mysql://x/y", "sqlite://", "sqlite:///", "postgresql:///nohost", 42],
)
def test_bad_urls_are_refused_with_a_hint(url: object) -> None:
    with pytest.raises(InvalidInput):
        settings_for(url)  # type: ignore[arg-type]


def test_sqlite_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        Ledger.open(f"sqlite:///{tmp_path / 'missing' / 'p.db'}")


def test_passwords_never_appear_in_descriptions_or_reprs() -> None:
    settings = settings_for("postgresql://bot:s3cr%40t@db.example:6432/ledger?schema=live")
    assert "s3cr" not in settings.description
    assert settings.description == "postgresql://bot@db.example:6432/ledger?schema=live"
    assert settings.env["POSTGRES_PASSWORD"] == "s3cr@t"
    assert settings.env["POSTGRES_SCHEMA"] == "live"
    assert "s3cr" not in repr(settings)


@pytest.mark.parametrize("schema", ["live-bots", "live bots", "1live", "x" * 64, ""])
def test_a_schema_name_the_store_cannot_use_is_refused_before_connecting(schema: str) -> None:
    with pytest.raises(InvalidInput, match="letters, digits and underscores"):
        Ledger.open(f"postgresql://bot@127.0.0.1:1/ledger?schema={schema}")


def test_a_ledger_reopens_its_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Ledger.open(url) as first:
        assert repr(first) == f"Ledger('{url}')"
    with Ledger.open(url) as second:
        assert second.keys() == []


def test_init_db_then_a_least_privilege_open(durable_url: str) -> None:
    import subprocess
    import sys

    with pytest.raises(StorageUnavailable, match="init-db"):
        Ledger.open(durable_url, create_tables=False)
    done = subprocess.run(
        [sys.executable, "-m", "posledger.cli", "init-db", durable_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Ledger tables ready" in done.stdout
    with Ledger.open(durable_url, create_tables=False) as ledger:
        assert ledger.keys() == []
    from posledger.store.readmodel import ReadModel

    with ReadModel.open(durable_url, create_tables=False) as model:
        assert model.positions() == []


def test_init_db_with_a_bad_url_is_one_clean_line() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "posledger.cli", "init-db", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_opening_does_not_wait_for_a_writer_holding_the_table_lock(postgres_url: str) -> None:
    """The CREATE statements (whose CREATE INDEX IF NOT EXISTS locks the table even when the
    index exists) run only when something is missing, so an open never queues behind writers."""
    import psycopg

    with Ledger.open(postgres_url) as ledger:
        ledger.record_fill(key(), fill("e1", "buy", "1"))
    server, schema = postgres_url.split("?schema=")
    opened: list[Ledger] = []
    with psycopg.connect(server) as writer:
        writer.execute(f'LOCK TABLE "{schema}".posledger_events IN EXCLUSIVE MODE')
        thread = threading.Thread(target=lambda: opened.append(Ledger.open(postgres_url)))
        thread.start()
        thread.join(10)
        waited = thread.is_alive()
        writer.rollback()
    thread.join()
    assert not waited, "Ledger.open waited for the writer's table lock"
    with opened[0] as ledger:
        assert ledger.position(key()) is not None
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP INDEX "{schema}".posledger_events_posledger_key_registered_idx')
    with Ledger.open(postgres_url) as reopened:  # a missing index is created again
        assert reopened.keys() == [key()]
    with psycopg.connect(server) as admin:
        indexes = admin.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    assert ("posledger_events_posledger_key_registered_idx",) in indexes


def test_a_sqlite_commit_is_durable_when_it_returns(tmp_path: Path) -> None:
    """docs/design.md#eventsourcing: the store runs in WAL mode with synchronous FULL (SQLite's
    default, which eventsourcing keeps); in WAL mode only FULL syncs the log at each commit. A
    build whose default is NORMAL would fail here rather than lose the last fills at a power
    cut."""
    from posledger.store.application import open_application

    app = open_application(settings_for(f"sqlite:///{tmp_path / 'p.db'}"))
    try:
        with app.recorder.datastore.get_connection(commit=True) as pooled:
            db = pooled._sqlite_conn
            assert tuple(db.execute("PRAGMA journal_mode").fetchone()) == ("wal",)
            assert tuple(db.execute("PRAGMA synchronous").fetchone()) == (2,)
    finally:
        app.close()
