"""Real ccxt (blocking or ``async_support``) against the fake Bybit server, behind one interface,
so every ccxt test body runs on both flavours."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import ccxt  # type: ignore[import-untyped]
import ccxt.async_support as accxt  # type: ignore[import-untyped]

from posledger.testing.fake_bybit import FakeBybit
from posledger.venues.ccxt import AsyncCcxtVenue, CcxtVenue

FLAVOURS = ("sync", "async")
T = TypeVar("T")


class CcxtHarness:
    """One ccxt exchange pointed at ``fake`` and the venue over it. The async flavour owns an
    event loop on which every coroutine (the venue's, an AsyncLedger's) runs. ccxt's throttle
    (tens of milliseconds per Bybit request) is off unless ``throttle``: the fake has no limit."""

    def __init__(
        self,
        flavour: str,
        fake: FakeBybit,
        *,
        timeout_ms: int = 2000,
        throttle: bool = False,
        **config: Any,
    ) -> None:
        self.flavour = flavour
        self.fake = fake
        self.loop: asyncio.AbstractEventLoop | None = None
        config = fake.ccxt_config(timeout=timeout_ms, enableRateLimit=throttle, **config)
        if flavour == "sync":
            self.exchange = ccxt.bybit(config)
        else:
            self.loop = asyncio.new_event_loop()
            self.exchange = accxt.bybit({**config, "asyncio_loop": self.loop})

    def venue(self, **options: Any) -> CcxtVenue | AsyncCcxtVenue:
        settings: dict[str, Any] = {"account": "main", "category": "linear", **options}
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
