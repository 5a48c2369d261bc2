"""A closed ledger refuses every use with LedgerClosed, on every store: a fill task or a
synchronizer that outlived the ledger got eventsourcing's ConnectionPoolClosedError on SQLite,
a write that silently went nowhere on memory, and from AsyncLedger a bare RuntimeError
("cannot schedule new futures after shutdown")."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from posledger import Ledger, LedgerClosed, PosledgerError
from posledger.ledger.aio import AsyncLedger
from tests.conftest import T0, key
from tests.helpers import at, fill, row, snapshot

K = key()

USES: dict[str, Callable[[Any], object]] = {
    "request_open": lambda led: led.request_open(K, order_id="o9", side="buy", qty=1, at=T0),
    "request_exit": lambda led: led.request_exit(K, order_id="o8", side="sell", qty=1, at=T0),
    "record_fill": lambda led: led.record_fill(K, fill("e9", "buy", "1")),
    "record_fills": lambda led: led.record_fills(K, [fill("e9", "buy", "1")]),
    "record_account_fills": lambda led: led.record_account_fills(K, [fill("e9", "buy", "1")]),
    "backfill": lambda led: led.backfill({K: [fill("e9", "buy", "1")]}),
    "record_order_end": lambda led: led.record_order_end(K, order_id="o1", status="Cancelled"),
    "reconcile": lambda led: led.reconcile(snapshot(at(5), [row("BTCUSDT", "buy", "1")])),
    "proposals": lambda led: led.proposals(),
    "can_trade": lambda led: led.can_trade(K),
    "approve": lambda led: led.approve("p1", operator="alice"),
    "reject": lambda led: led.reject("p1", operator="alice", reason="no"),
    "check_money": lambda led: led.check_money(K, [], since=T0, until=at(5)),
    "position": lambda led: led.position(K),
    "positions": lambda led: led.positions(),
    "account_position": lambda led: led.account_position(K),
    "account_positions": lambda led: led.account_positions(),
    "books": lambda led: led.books(K),
    "open_positions": lambda led: led.open_positions(),
    "keys": lambda led: led.keys(),
    "history": lambda led: led.history(K),
    "has_books": lambda led: led.has_books(K),
}


def test_every_public_method_is_covered() -> None:
    public = {
        name
        for name, member in inspect.getmembers(Ledger, inspect.isfunction)
        if not name.startswith("_") and name not in {"open", "close"}
    }
    assert public == set(USES)


@pytest.mark.parametrize("use", sorted(USES))
def test_a_closed_ledger_refuses_each_use(ledger_url: str, use: str) -> None:
    ledger = Ledger.open(ledger_url, clock=lambda: T0)
    ledger.record_fill(K, fill("e1", "buy", "1", order_id="o1"))
    ledger.close()
    with pytest.raises(LedgerClosed, match="closed"):
        USES[use](ledger)


def test_closing_twice_is_harmless_and_the_store_keeps_what_was_written(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url, clock=lambda: T0)
    ledger.record_fill(K, fill("e1", "buy", "1"))
    ledger.close()
    ledger.close()
    if ledger_url != "memory://":  # a memory store ends with its ledger
        with Ledger.open(ledger_url) as again:
            assert again.position(K).size == 1  # type: ignore[union-attr]


def test_an_async_task_that_outlives_the_ledger_gets_ledger_closed(ledger_url: str) -> None:
    async def scenario() -> None:
        aledger = AsyncLedger.open(ledger_url)
        await aledger.record_fill(K, fill("e1", "buy", "1"))
        await aledger.aclose()
        await aledger.aclose()
        with pytest.raises(LedgerClosed) as refused:
            await aledger.record_fill(K, fill("e2", "buy", "1"))
        assert isinstance(refused.value, PosledgerError)
        with pytest.raises(LedgerClosed):
            await aledger.position(K)

    asyncio.run(scenario())
