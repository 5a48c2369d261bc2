"""PostgreSQL setup mistakes: the server's own reason, at once when it is final.

A missing schema, database or role, or failed authentication, is a :class:`ConfigurationError`
(retrying will not help) raised as soon as the server says so; a refused connection may be a
server still starting, so it is retried until the timeout, then reported as refused.
"""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from posledger import ConfigurationError, Ledger, StorageUnavailable
from posledger.audit import verify
from posledger.store.readmodel import ReadModel

TIMEOUT_S = 5.0
FINAL_WITHIN_S = 2.0
"""A final answer comes well before the timeout."""
PROMPT_S = TIMEOUT_S + 1.5
"""A refused connection is retried until the timeout; the margin is for a loaded machine."""


@pytest.fixture
def server(postgres_url: str) -> str:
    """The test server's URL without a schema."""
    return postgres_url.split("?schema=")[0]


@pytest.fixture
def missing_schema(server: str) -> Iterator[str]:
    """A URL whose schema does not exist (dropped afterwards, should anything create it)."""
    import psycopg

    schema = f"t_missing_{uuid.uuid4().hex[:12]}"
    yield f"{server}?schema={schema}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def schema_exists(server: str, url: str) -> bool:
    import psycopg

    schema = url.split("?schema=")[1]
    with psycopg.connect(server) as connection:
        row = connection.execute("SELECT to_regnamespace(%s) IS NOT NULL", [schema]).fetchone()
    return bool(row and row[0])


def with_database(
    server: str, dbname: str | None = None, *, user: str | None = None, port: int | None = None
) -> str:
    """``server`` with another database, login or port."""
    parts = urlsplit(server)
    login = f"{user or parts.username}@" if user or parts.username else ""
    where = f"{parts.hostname}:{port or parts.port or 5432}"
    return f"postgresql://{login}{where}/{dbname or parts.path[1:]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed_failure(error: type[Exception], call: Callable[[], object]) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return str(caught.value), time.monotonic() - started


def open_ledger(url: str, create_tables: bool = False) -> Callable[[], object]:
    return lambda: Ledger.open(url, timeout=TIMEOUT_S, create_tables=create_tables).close()


def read_positions(url: str) -> object:
    """A read model opened without creating tables finds out what is missing at its first read."""
    with ReadModel.open(url, timeout=TIMEOUT_S, create_tables=False) as model:
        return model.positions()


def test_a_configuration_error_is_not_an_outage() -> None:
    """Bots retry StorageUnavailable; a store that is not set up must not be retried."""
    assert not issubclass(ConfigurationError, StorageUnavailable)


def test_a_missing_schema_is_a_configuration_error_everywhere(
    server: str, missing_schema: str
) -> None:
    schema = missing_schema.split("?schema=")[1]
    opens: dict[str, Callable[[], object]] = {
        "Ledger.open": open_ledger(missing_schema),
        "Ledger.open creating tables": open_ledger(missing_schema, create_tables=True),
        "ReadModel.positions": lambda: read_positions(missing_schema),
        "ReadModel.open creating tables": lambda: ReadModel.open(missing_schema).close(),
        "verify": lambda: verify(missing_schema),
    }
    for name, call in opens.items():
        message, seconds = timed_failure(ConfigurationError, call)
        assert f'schema "{schema}" does not exist' in message, name
        assert "posledger init-db --db URL" in message, name
        assert seconds < FINAL_WITHIN_S, name
    assert not schema_exists(server, missing_schema)


def test_init_db_creates_the_schema(server: str, missing_schema: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "posledger.cli", "init-db", "--db", missing_schema],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Ledger tables ready" in done.stdout
    assert schema_exists(server, missing_schema)
    with Ledger.open(missing_schema, create_tables=False) as ledger:
        assert ledger.keys() == []
    with ReadModel.open(missing_schema, create_tables=False) as model:
        assert model.positions() == []


def test_a_missing_database_is_said_at_once(server: str) -> None:
    url = with_database(server, f"nosuchdb_{uuid.uuid4().hex[:8]}")
    message, seconds = timed_failure(ConfigurationError, open_ledger(url))
    assert f'database "{urlsplit(url).path[1:]}" does not exist' in message
    assert message.startswith(url)
    assert seconds < FINAL_WITHIN_S


def test_a_missing_role_is_said_at_once_without_its_password(server: str) -> None:
    url = with_database(server, user="nosuchrole:s3cret")
    message, seconds = timed_failure(ConfigurationError, open_ledger(url))
    assert 'role "nosuchrole" does not exist' in message
    assert "s3cret" not in message
    assert seconds < FINAL_WITHIN_S


@pytest.mark.parametrize("opener", ["ledger", "read model", "audit"])
def test_a_missing_role_is_final_for_every_reader(server: str, opener: str) -> None:
    url = with_database(server, user="nosuchrole")
    opens: dict[str, Callable[[], object]] = {
        "ledger": open_ledger(url, create_tables=True),
        "read model": lambda: ReadModel.open(url, timeout=TIMEOUT_S).close(),
        "audit": lambda: verify(url),
    }
    message, seconds = timed_failure(ConfigurationError, opens[opener])
    assert 'role "nosuchrole" does not exist' in message
    assert seconds < FINAL_WITHIN_S


def test_a_refused_connection_is_retried_until_the_timeout_and_says_refused(server: str) -> None:
    url = with_database(server, port=free_port())
    message, seconds = timed_failure(StorageUnavailable, open_ledger(url))
    assert "refused" in message.lower()
    assert TIMEOUT_S - 0.5 < seconds < PROMPT_S


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("pool-")}


def test_a_failed_open_leaves_no_pool_connecting_in_the_background(server: str) -> None:
    before = pool_threads()
    url = with_database(server, f"nosuchdb_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigurationError) as caught:  # kept, as a caller logging it would
        Ledger.open(url, timeout=TIMEOUT_S)
    give_up = time.monotonic() + FINAL_WITHIN_S
    while pool_threads() - before and time.monotonic() < give_up:
        time.sleep(0.05)
    assert not pool_threads() - before, caught.value


def _open_once(url: str, start: Any, errors: Any) -> None:
    start.wait(timeout=60)
    try:
        with Ledger.open(url, timeout=10) as ledger:
            ledger.positions()
    except Exception as error:
        errors.put(repr(error))


@pytest.fixture(params=["sqlite", "postgres"])
def new_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """Fifteen URLs of stores that do not exist yet (files, or empty schemas)."""
    if request.param == "sqlite":
        yield [f"sqlite:///{tmp_path / f'new-{n}.db'}" for n in range(15)]
        return
    server = request.getfixturevalue("server")
    import psycopg

    schemas = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(15)]
    with psycopg.connect(server, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield [f"{server}?schema={schema}" for schema in schemas]
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            for schema in schemas:
                connection.execute(f"DROP SCHEMA {schema} CASCADE")


def test_bots_starting_at_once_on_a_new_store_all_open_it(new_stores: list[str]) -> None:
    """Processes opening a new store at the same moment race: SQLite refuses to switch a new
    file to WAL while another connection holds it ("database is locked"); PostgreSQL refuses
    concurrent catalog changes (an index that "already exists"). Each waits, within its
    timeout, instead of failing to start. (A race: without the wait, about one round in five
    failed on SQLite; 15 rounds of 4 processes.)"""
    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    for url in new_stores:
        start = context.Barrier(4)
        bots = [context.Process(target=_open_once, args=(url, start, errors)) for _ in range(4)]
        for bot in bots:
            bot.start()
        for bot in bots:
            bot.join(timeout=120)
        assert [bot.exitcode for bot in bots] == [0, 0, 0, 0]
    assert errors.empty(), errors.get()


def _creation_lock(url: str) -> tuple[Any, str]:
    """A connection to the server of ``url`` and the statement taking the lock that serialises
    creating the tables of its schema."""
    import zlib

    import psycopg

    from posledger.store.postgres_log import CREATE_LOCK_CLASS

    server, schema = url.split("?schema=")
    key = zlib.crc32(schema.encode()) & 0x7FFFFFFF
    return psycopg.connect(server), f"SELECT pg_advisory_xact_lock({CREATE_LOCK_CLASS}, {key})"


def test_a_store_is_created_by_one_process_at_a_time(postgres_url: str) -> None:
    """Concurrent creators deadlocked (CI: four bots opening a new store; one held a SHARE
    lock on the events table and waited for the insert function, the other held the function
    and waited to ALTER the table). Each creator now waits for the schema's creation lock
    before its first statement."""
    holder, take = _creation_lock(postgres_url)
    opened = threading.Event()

    def open_store() -> None:
        with Ledger.open(postgres_url, timeout=10):
            opened.set()

    with holder:
        holder.execute(take)  # another creator's transaction, still open
        opener = threading.Thread(target=open_store)
        opener.start()
        assert not opened.wait(1.0), "the tables were created while another creator held the lock"
        holder.commit()
        opener.join(10)
    assert opened.is_set()


def test_creators_racing_on_an_old_store_all_upgrade_it(postgres_url: str) -> None:
    """Every round the store lacks what this release adds, so each of four openers runs the
    whole creation at once: without the creation lock one of them was chosen as the victim
    of a deadlock in most rounds."""
    import psycopg

    with Ledger.open(postgres_url):
        pass
    server, schema = postgres_url.split("?schema=")
    failures: list[str] = []
    for _ in range(8):
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f'DROP FUNCTION "{schema}".posledger_events_reserve_ids(bigint)')
        start = threading.Barrier(4)

        def open_once(start: threading.Barrier = start) -> None:
            start.wait(10)
            try:
                with Ledger.open(postgres_url, timeout=10):
                    pass
            except Exception as error:
                failures.append(repr(error))

        openers = [threading.Thread(target=open_once) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(60)
    assert failures == []
