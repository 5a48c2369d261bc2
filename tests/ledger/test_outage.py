"""Database outages: a clear StorageUnavailable within the timeout, nothing half-written, and the
same Ledger object works again once the database is back.

The PostgreSQL test puts a real TCP proxy between the ledger and the real server and cuts it;
the SQLite test holds the database's write lock from another connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from posledger import Ledger, StorageUnavailable
from tests.conftest import key
from tests.helpers import fill
from tests.tcp_proxy import TcpProxy

K = key()
TIMEOUT_S = 2.0
HANG = TIMEOUT_S + 5.0
"""A call that takes longer than this is hanging, not timing out (generous for a loaded CI)."""


def timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        call()
    assert "password" not in str(caught.value).lower()
    return time.monotonic() - started


def test_postgres_unreachable_then_back(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        via_proxy = postgres_url.replace(f":{parts.port}/", f":{proxy.port}/", 1)
        with Ledger.open(via_proxy, timeout=TIMEOUT_S) as ledger:
            ledger.record_fill(K, fill("before", "buy", "1"))
            proxy.cut()
            assert timed(lambda: ledger.record_fill(K, fill("during", "buy", "5"))) < HANG
            assert timed(lambda: ledger.position(K)) < HANG
            assert timed(lambda: ledger.open_positions()) < HANG
            proxy.restore()
            ledger.record_fill(K, fill("after", "buy", "2"))
            state = ledger.position(K)
            assert state is not None and state.size == 3
            assert [getattr(e, "exec_id", None) for e in ledger.history(K)][1:] == [
                "before",
                "after",
            ]


def test_sqlite_locked_beyond_the_timeout_then_free(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(f"sqlite:///{path}", timeout=1) as ledger:
        ledger.record_fill(K, fill("before", "buy", "1"))
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            assert timed(lambda: ledger.record_fill(K, fill("during", "buy", "5"))) < HANG
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        ledger.record_fill(K, fill("after", "buy", "2"))
        assert ledger.position(K).size == 3  # type: ignore[union-attr]
