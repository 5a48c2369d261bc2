"""Network cuts between the ledger and PostgreSQL: StorageUnavailable within the timeout,
whatever the network does, nothing half-written, and the same objects work once it is back.

A real TCP proxy sits between the ledger and the real server. ``refuse`` drops every connection
and refuses new ones (the host is gone); ``blackhole`` keeps every connection open and accepts
new ones but forwards nothing (a dropped route, a dead NAT entry, a frozen server): psycopg
would wait in ``execute`` for as long as the socket stays open.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from posledger import Ledger, StorageUnavailable
from posledger.aio import AsyncLedger
from posledger.readmodel import ReadModel
from tests.conftest import key
from tests.helpers import at, fill, row, snapshot
from tests.ledger.test_outage import timed
from tests.tcp_proxy import TcpProxy

K = key()
TIMEOUT_S = 2.0
PROMPT = TIMEOUT_S + 1.5
"""StorageUnavailable must come within the timeout; the margin is for a loaded CI machine."""
CUTS = ["refuse", "blackhole"]
R = TypeVar("R")


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    parts = urlsplit(postgres_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy, postgres_url.replace(f":{parts.port}/", f":{proxy.port}/", 1)


def cut(proxy: TcpProxy, how: str) -> None:
    proxy.cut() if how == "refuse" else proxy.blackhole()


def once_back(call: Callable[[], R]) -> R:
    """``call`` once the network is back: the pool may still be finishing a connection attempt
    begun during the cut (bounded by the connect timeout), so allow a few timeouts."""
    give_up = time.monotonic() + 3 * TIMEOUT_S
    while True:
        try:
            return call()
        except StorageUnavailable:
            if time.monotonic() > give_up:
                raise


@pytest.mark.parametrize("how", CUTS)
def test_every_call_fails_within_the_timeout_then_works_again(
    proxied: tuple[TcpProxy, str], how: str
) -> None:
    proxy, url = proxied
    with Ledger.open(url, timeout=TIMEOUT_S) as ledger:
        ledger.record_fill(K, fill("before", "buy", "1"))
        cut(proxy, how)
        calls: dict[str, Callable[[], object]] = {
            "record_fill": lambda: ledger.record_fill(K, fill("during", "buy", "5")),
            "reconcile": lambda: ledger.reconcile(snapshot(at(5)), now=at(5)),
            "open_positions": ledger.open_positions,
            "position": lambda: ledger.position(K),
            "history": lambda: ledger.history(K),
            "request_open": lambda: ledger.request_open(
                K, order_id="o-during", side="buy", qty="1", at=at(6)
            ),
        }
        waited = {name: timed(call) for name, call in calls.items()}
        assert all(seconds < PROMPT for seconds in waited.values()), waited
        proxy.restore()
        once_back(lambda: ledger.record_fill(K, fill("after", "buy", "2")))
        state = ledger.position(K)
        assert state is not None and state.size == 3 and not state.pending_orders
        assert [type(e).__name__ for e in ledger.history(K)] == [
            "KeyRegistered",
            "Filled",
            "Filled",
        ]


@pytest.mark.parametrize("how", CUTS)
def test_open_fails_within_the_timeout_and_lets_its_thread_go(
    proxied: tuple[TcpProxy, str], how: str
) -> None:
    proxy, url = proxied
    Ledger.open(url, timeout=TIMEOUT_S).close()  # the tables exist
    cut(proxy, how)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        Ledger.open(url, timeout=TIMEOUT_S)
    gc.collect()  # a half-built connection pool is closed here: it must not wait for workers
    assert time.monotonic() - started < PROMPT
    proxy.restore()
    with once_back(lambda: Ledger.open(url, timeout=TIMEOUT_S)) as ledger:
        assert ledger.positions() == []


@pytest.mark.parametrize("how", CUTS)
def test_asyncio_calls_fail_within_the_timeout(proxied: tuple[TcpProxy, str], how: str) -> None:
    proxy, url = proxied

    async def scenario() -> float:
        ledger = AsyncLedger.open(url, timeout=TIMEOUT_S)
        try:
            await ledger.record_fill(K, fill("before", "buy", "1"))
            cut(proxy, how)
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await ledger.record_fill(K, fill("during", "buy", "1"))
            waited = time.monotonic() - started
            proxy.restore()
            await asyncio.to_thread(
                once_back, lambda: ledger.ledger.record_fill(K, fill("after", "buy", "1"))
            )
            state = await ledger.position(K)
            assert state is not None and state.size == 2
            return waited
        finally:
            await ledger.aclose()

    assert asyncio.run(scenario()) < PROMPT


@pytest.mark.parametrize("how", CUTS)
def test_the_read_model_follower_fails_within_the_timeout_then_catches_up(
    proxied: tuple[TcpProxy, str], how: str
) -> None:
    proxy, url = proxied
    with Ledger.open(url, timeout=TIMEOUT_S) as ledger, ReadModel.attach(ledger) as model:
        ledger.record_fill(K, fill("before", "buy", "1"))
        model.catch_up()
        cut(proxy, how)
        assert timed(model.catch_up) < PROMPT
        stop = threading.Event()
        failures: list[BaseException] = []

        def follow() -> None:
            try:
                model.run_forever(stop, poll_interval=0.2)
            except BaseException as error:
                failures.append(error)

        started = time.monotonic()
        follower = threading.Thread(target=follow)
        follower.start()
        follower.join(timeout=PROMPT + 2)
        stop.set()
        assert not follower.is_alive(), "the follower hung on the cut connection"
        assert time.monotonic() - started < PROMPT + 2
        assert failures and isinstance(failures[0], StorageUnavailable)
        proxy.restore()
        once_back(lambda: ledger.record_fill(K, fill("after", "buy", "2")))
        once_back(model.catch_up)
        assert [(s.key, s.size) for s in model.open_positions()] == [(K, 3)]


def test_a_blackholed_snapshot_reconcile_writes_nothing(proxied: tuple[TcpProxy, str]) -> None:
    proxy, url = proxied
    with Ledger.open(url, timeout=TIMEOUT_S) as ledger:
        ledger.record_fill(K, fill("open", "buy", "1"))
        flat = snapshot(at(5), [row("ETHUSDT", "buy", "1")])
        proxy.blackhole()
        with pytest.raises(StorageUnavailable):
            ledger.reconcile(flat, now=at(5))
        proxy.restore()
        history = once_back(lambda: ledger.history(K))
        assert [type(e).__name__ for e in history] == ["KeyRegistered", "Filled"]
