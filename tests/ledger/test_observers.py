"""A ledger's store observers: each written transaction's duration, each StorageUnavailable once;
an observer that raises never breaks a write nor changes the error the caller gets."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from posledger import Ledger, StorageUnavailable
from posledger.ledger.observers import StoreObserver
from tests.conftest import key
from tests.helpers import fill

K = key()


class Recording(StoreObserver):
    def __init__(self) -> None:
        self.writes: list[float] = []
        self.outages: list[StorageUnavailable] = []

    def write_seconds(self, seconds: float) -> None:
        self.writes.append(seconds)

    def storage_unavailable(self, error: StorageUnavailable) -> None:
        self.outages.append(error)


class Raising(StoreObserver):
    def write_seconds(self, seconds: float) -> None:
        raise RuntimeError("observer bug")

    def storage_unavailable(self, error: StorageUnavailable) -> None:
        raise RuntimeError("observer bug")


def test_each_written_transaction_is_timed(ledger_url: str) -> None:
    recording = Recording()
    with Ledger.open(ledger_url, observers=[recording]) as ledger:
        ledger.record_fill(K, fill("e-1", "buy", "1"))
        ledger.record_fill(K, fill("e-1", "buy", "1"))  # a duplicate writes nothing
        ledger.record_fills(K, [fill("e-2", "buy", "1"), fill("e-3", "buy", "1")])
        assert ledger.transactions == 2
    assert len(recording.writes) == 2 and all(0 < s < 60 for s in recording.writes)


def locked(path: Path) -> sqlite3.Connection:
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


def test_each_storage_unavailable_is_told_once(tmp_path: Path) -> None:
    recording = Recording()
    path = tmp_path / "ledger.db"
    with Ledger.open(f"sqlite:///{path}", timeout=0.2, observers=[recording]) as ledger:
        ledger.record_fill(K, fill("before", "buy", "1"))
        blocker = locked(path)
        try:
            with pytest.raises(StorageUnavailable) as raised:
                ledger.record_fill(K, fill("during", "buy", "5"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert recording.outages == [raised.value]
        ledger.record_fill(K, fill("after", "buy", "2"))
        assert ledger.position(K).size == 3  # type: ignore[union-attr]


def test_an_observer_that_raises_breaks_no_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(f"sqlite:///{path}", timeout=0.2, observers=[Raising()]) as ledger:
        ledger.record_fill(K, fill("before", "buy", "1"))
        blocker = locked(path)
        try:
            with pytest.raises(StorageUnavailable):
                ledger.record_fill(K, fill("during", "buy", "5"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        ledger.record_fill(K, fill("after", "buy", "2"))
        assert ledger.position(K).size == 3  # type: ignore[union-attr]
    failures = [r for r in caplog.records if r.name == "posledger.observers"]
    assert len(failures) == 3 and all(r.levelno == logging.ERROR for r in failures)
