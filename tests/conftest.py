"""Shared fixtures: storage backends, a fixed clock, and hypothesis profiles.

``--slow`` selects the nightly-style hypothesis profile (many more examples and longer
histories); CI runs the ``ci`` profile, which is still large enough to find real bugs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from posledger import Ledger, PositionKey

settings.register_profile(
    "ci",
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "slow",
    max_examples=2_000,
    stateful_step_count=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=30, stateful_step_count=30, deadline=None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="run the heavy hypothesis profile")


def pytest_configure(config: pytest.Config) -> None:
    profile = "slow" if config.getoption("--slow") else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(profile)


T0 = datetime(2025, 11, 12, 9, 0, tzinfo=UTC)


POSTGRES_ENV = "POSLEDGER_TEST_POSTGRES"
"""A PostgreSQL URL (e.g. postgresql://postgres@127.0.0.1:5432/test) to run storage tests on."""
REQUIRE_POSTGRES_ENV = "POSLEDGER_REQUIRE_POSTGRES"
"""Set to 1 (CI does) to make a skipped PostgreSQL test a failure."""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the configured server, dropped afterwards."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        reason = f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://user@host:port/db"
        if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_POSTGRES_ENV}=1 forbids skipping)")
        pytest.skip(reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in server else "?"
    try:
        yield f"{server}{separator}schema={schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that outlives a Ledger object: for restart and multi-writer tests."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage test runs on each backend."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, clock=lambda: T0) as opened:
        yield opened


def key(symbol: str = "BTCUSDT", idx: int = 0, account: str = "main") -> PositionKey:
    return PositionKey(venue="bybit", account=account, category="linear", symbol=symbol, idx=idx)
