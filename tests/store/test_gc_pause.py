"""The cyclic collector is paused through bulk loads and imports (a third of a cold reconcile
of 10,000 keys was spent in its full collections, walking every live object of the process),
and it comes back as it was: after nested and concurrent pauses, after an error, and not at
all in a process that had turned it off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from posledger import Ledger, StoreCorrupted
from posledger.audit import replay_all
from posledger.store.gc_pause import gc_paused
from tests.audit.stores import damage_by_sql
from tests.conftest import T0, key
from tests.helpers import fill, row, snapshot

KEYS = [key(f"K{n}USDT") for n in range(40)]


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generations the collector ran on while the test ran, with thresholds so low that
    any bulk work without the pause sets it off many times."""
    ran: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            ran.append(info["generation"])

    thresholds = gc.get_threshold()
    gc.set_threshold(50, 1000, 1000)
    gc.callbacks.append(seen)
    yield ran
    gc.callbacks.remove(seen)
    gc.set_threshold(*thresholds)


def history(n: int) -> list:  # type: ignore[type-arg]
    return [fill(f"e{n}-{i}", "buy", "1", exec_time=T0 + timedelta(seconds=i)) for i in range(6)]


@pytest.mark.usefixtures("collector_on")
def test_nested_and_concurrent_pauses_restore_the_collector_once_the_last_ends() -> None:
    inner_started, outer_may_end = threading.Event(), threading.Event()

    def other_thread() -> None:
        with gc_paused():
            inner_started.set()
            outer_may_end.wait(5)
            assert not gc.isenabled()

    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
        worker = threading.Thread(target=other_thread)
        worker.start()
        inner_started.wait(5)
    assert not gc.isenabled()  # the other thread's pause is still on
    outer_may_end.set()
    worker.join(5)
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_an_error_inside_restores_the_collector() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_process_that_turned_the_collector_off_keeps_it_off() -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


FILLS = {k: history(n) for n, k in enumerate(KEYS)}
AGREEING = snapshot(T0 + timedelta(days=1), [row(k.symbol, "buy", "6") for k in KEYS])
BULK: dict[str, Callable[[Ledger, str], object]] = {
    "backfill": lambda fresh, url: fresh.backfill(FILLS),
    "cold reconcile": lambda fresh, url: fresh.reconcile(AGREEING, now=AGREEING.taken_at),
    "replay_all": lambda fresh, url: replay_all(url),
}


@pytest.mark.usefixtures("collector_on")
@pytest.mark.parametrize("bulk", sorted(BULK))
def test_bulk_work_runs_without_a_collection(
    durable_url: str, bulk: str, collections: list[int]
) -> None:
    if bulk != "backfill":
        with Ledger.open(durable_url) as ledger:
            ledger.backfill(FILLS)
    with Ledger.open(durable_url) as fresh:  # nothing loaded yet
        collections.clear()
        result = BULK[bulk](fresh, durable_url)
        ran = list(collections)
    # Right after the pause its allocations are due (a collection or two); without it, dozens.
    assert len(ran) <= 2, f"{bulk} let the collector run {len(ran)} times"
    assert result
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_a_damaged_store_met_in_a_bulk_load_restores_the_collector(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        ledger.backfill(FILLS)
    damage_by_sql(durable_url, KEYS[7], 3, b'{"timestamp": {')
    with pytest.raises(StoreCorrupted):
        replay_all(durable_url)
    assert gc.isenabled()
