"""Real ccxt (blocking or ``async_support``) against a fake exchange server (Bybit or OKX), behind
one interface, so every ccxt test body runs on both flavours; and the ledger + synchronizer rig
the sync tests of both exchanges drive."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import ccxt  # type: ignore[import-untyped]
import ccxt.async_support as accxt  # type: ignore[import-untyped]
import pytest

from posledger import AllocationPolicy, ExchangeRejected, ExchangeUnavailable, Ledger, PositionKey
from posledger.aio import AsyncLedger, AsyncSynchronizer
from posledger.drivers.sync import Synchronizer, SyncReport
from posledger.testing.fake_bybit import FakeBybit
from posledger.testing.fake_okx import FakeOkx
from posledger.venues.ccxt import AsyncCcxtVenue, CcxtVenue
from tests.conftest import T0

FLAVOURS = ("sync", "async")
NOW = T0 + timedelta(days=30)
T = TypeVar("T")

CCXT_EXCHANGES = {"Bybit": ("bybit", "linear"), "OKX": ("okx", "swap")}
"""A fake's exchange -> the ccxt exchange id that talks to it and the venue's default category."""


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def okx_with_swaps() -> FakeOkx:
    """A fake OKX account at NOW that pages two rows at a time and lists the BTC and ETH USDT
    swaps (0.01 BTC and 0.1 ETH a contract); start it with ``with``."""
    fake = FakeOkx(clock=lambda: NOW, page_size=2)
    fake.add_instrument("BTC-USDT-SWAP", ct_val="0.01")
    fake.add_instrument("ETH-USDT-SWAP", ct_val="0.1")
    return fake


class CcxtHarness:
    """One ccxt exchange pointed at ``fake`` and the venue over it; a context manager. The async
    flavour owns an event loop on which every coroutine (the venue's, an AsyncLedger's) runs.
    ccxt's throttle (tens of milliseconds per request) is off unless ``throttle``: the fakes
    have no limit."""

    def __init__(
        self,
        flavour: str,
        fake: FakeBybit | FakeOkx,
        *,
        timeout_ms: int = 2000,
        throttle: bool = False,
        **config: Any,
    ) -> None:
        self.flavour = flavour
        self.fake = fake
        self.loop: asyncio.AbstractEventLoop | None = None
        exchange_id, self.category = CCXT_EXCHANGES[fake.exchange]
        config = fake.ccxt_config(timeout=timeout_ms, enableRateLimit=throttle, **config)
        if flavour == "sync":
            self.exchange = getattr(ccxt, exchange_id)(config)
        else:
            self.loop = asyncio.new_event_loop()
            self.exchange = getattr(accxt, exchange_id)({**config, "asyncio_loop": self.loop})

    def venue(self, **options: Any) -> CcxtVenue | AsyncCcxtVenue:
        settings: dict[str, Any] = {"account": "main", "category": self.category, **options}
        if self.flavour == "sync":
            return CcxtVenue(self.exchange, **settings)
        return AsyncCcxtVenue(self.exchange, **settings)

    def run(self, outcome: Coroutine[Any, Any, T] | T) -> T:
        """The value of a blocking call, or of a coroutine run on the harness's loop."""
        if self.loop is None:
            assert not asyncio.iscoroutine(outcome)
            return outcome  # type: ignore[return-value]
        assert asyncio.iscoroutine(outcome)
        return self.loop.run_until_complete(outcome)

    def call(self, target: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """``target.name(*args, **kwargs)``, awaited when it is a coroutine."""
        return self.run(getattr(target, name)(*args, **kwargs))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.exchange.close())
            self.loop.close()

    def __enter__(self) -> CcxtHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_a_failed_snapshot_heals(harness: CcxtHarness, venue: Any, positions: int) -> None:
    """The armed fault fails the snapshot with ExchangeUnavailable; cleared, the same venue reads
    all ``positions``."""
    with pytest.raises(ExchangeUnavailable):
        harness.call(venue, "fetch_snapshot")
    harness.fake.clear_faults()
    assert len(harness.call(venue, "fetch_snapshot").positions) == positions


def assert_unavailable_because_of(
    fake: FakeBybit | FakeOkx,
    endpoint: str,
    fault: Any,
    ccxt_error: Any,
    venue_of: Callable[[CcxtHarness], Any],
) -> None:
    """With ``fault`` on every call of ``endpoint`` (aiohttp retries a dropped GET once), a
    snapshot fails as unavailable (not as a rejection) with ccxt's error as its cause, on both
    flavours."""
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, timeout_ms=1000) as harness:
            fake.inject(endpoint, fault, times=None)
            try:
                with pytest.raises(ExchangeUnavailable) as raised:
                    harness.call(venue_of(harness), "fetch_snapshot")
                assert isinstance(raised.value.__cause__, ccxt_error)
                assert not isinstance(raised.value, ExchangeRejected)
            finally:
                fake.clear_faults()


class Clock:
    """One time that a fake exchange and a Rig's venue, ledger and synchronizer read; each
    round of the Rig moves it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Rig:
    """A ledger and a synchronizer over a ccxt venue, blocking or asyncio, driven step by step
    with a clock the test moves (give the fake exchange the same ``clock``: Bybit stamps
    snapshots with its replies' time); a context manager."""

    def __init__(
        self,
        harness: CcxtHarness,
        url: str,
        *,
        clock: Clock | None = None,
        money: Any = None,
        allocation: AllocationPolicy | None = None,
        **venue_options: Any,
    ) -> None:
        self.harness = harness
        self.clock = clock or Clock()
        venue = harness.venue(clock=self.clock, **venue_options)
        self.ledger: Any
        self.sync: Any
        if harness.flavour == "sync":
            self.ledger = Ledger.open(url, clock=self.clock, allocation=allocation)
            self.sync = Synchronizer(self.ledger, venue, clock=self.clock, money=money)  # type: ignore[arg-type]
        else:
            self.ledger = AsyncLedger.open(url, clock=self.clock, allocation=allocation)
            self.sync = AsyncSynchronizer(self.ledger, venue, clock=self.clock, money=money)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        """The ledger's commands and queries, awaited on the harness loop when async."""
        method = getattr(self.ledger, name)
        return lambda *args, **kwargs: self.harness.run(method(*args, **kwargs))

    def run_once(self, now: datetime) -> SyncReport:
        self.clock.now = now
        report: SyncReport = self.harness.run(self.sync.run_once(now=now))
        return report

    def names(self, position: PositionKey) -> list[str]:
        return [type(e).__name__ for e in self.history(position)]

    def close(self) -> None:
        if self.harness.flavour == "sync":
            self.ledger.close()
        else:
            self.harness.run(self.ledger.aclose())

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
