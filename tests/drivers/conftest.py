"""Fixtures of the driver tests against the fake Bybit: one clock that the fake exchange, the
venue, the ledger and the synchronizer all read, the fake server, and a ledger on each backend
(a test module may define its own of the same name instead)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from posledger import Ledger
from posledger.testing.fake_bybit import FakeBybit
from tests.conftest import T0


class Clock:
    """The one time the fake exchange, the venue, the ledger and the synchronizer read."""

    def __init__(self) -> None:
        self.now = T0 + timedelta(days=30)

    def __call__(self) -> datetime:
        return self.now

    def ago(self, **delta: float) -> datetime:
        return self.now - timedelta(**delta)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeBybit]:
    with FakeBybit(clock=clock, page_size=2) as server:
        yield server


@pytest.fixture
def ledger(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, clock=clock) as opened:
        yield opened
