"""Fixtures of the audit tests: a ledger holding the varied stores, and a SQLite ledger URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from posledger import Ledger
from tests.audit.stores import build


@pytest.fixture
def store(ledger: Ledger) -> Ledger:
    build(ledger)
    return ledger


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"
