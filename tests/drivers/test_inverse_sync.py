"""Inverse (coin-margined) keys end to end: a bot records its fills on an ``inverse`` key, the
exchange executes what the bot misses, and the Synchronizer recovers it with the inverse
arithmetic (docs/design.md#inverse): Bybit's category ``inverse`` through pybit and through ccxt
(blocking and asyncio), and OKX's coin-margined swap ``BTC-USD-SWAP`` (100 USD a contract)
through ccxt, against the fake exchanges, on every store.

The worked example: long 100 @ 20000, long 100 @ 30000 (average 24000, harmonic), sell 200 @
25000 realizes exactly +0.0003333333333333333333333333333 BTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import Fill, Outcome, PositionKey, Side
from posledger.aio import AsyncSynchronizer
from posledger.drivers.sync import Synchronizer, SyncReport
from posledger.testing.fake_bybit import FakeBybit
from posledger.testing.fake_okx import FakeOkx
from posledger.venues.bybit import BybitVenue
from tests.ccxt_harness import NOW, CcxtHarness, Rig, ago, okx_with_swaps

WORKED_PNL = Decimal("0.0003333333333333333333333333333")
"""200 × (1/24000 − 1/25000) BTC to the 28 significant digits a figure is stored with."""

FEE = Decimal("0.00000375")
"""A fill's fee, in BTC."""


class PybitHarness:
    """BybitVenue over a real pybit session, behind the interface of CcxtHarness the Rig uses."""

    flavour = "sync"

    def __init__(self, fake: Any) -> None:
        self.fake = fake

    def venue(self, **options: Any) -> BybitVenue:
        return BybitVenue(self.fake.session(timeout=1), **{"account": "main", **options})

    def run(self, outcome: Any) -> Any:
        return outcome

    def close(self) -> None:
        pass


class BybitBook:
    """Scripts BTCUSD and the quarterly BTCUSDH26 on the fake Bybit (sizes in USD contracts, fees
    in BTC), beside an ETHUSD position a BTC venue does not cover."""

    venue, symbol, quarterly = "bybit", "BTCUSD", "BTCUSDH26"

    def __init__(self, fake: FakeBybit) -> None:
        self.fake = fake
        fake.set_position("ETHUSD", "Sell", "500", "3000", category="inverse")

    def order(
        self, side: str, usd: str, price: str, at: datetime, reduce_only: bool, symbol: str = ""
    ) -> str:
        return self.fake.add_open_order(
            symbol or self.symbol, side.capitalize(), usd, price, category="inverse",
            reduce_only=reduce_only, at=at,
        )  # fmt: skip

    def fill(self, order_id: str, usd: str, fee: Decimal, at: datetime) -> str:
        return self.fake.partial_fill(order_id, usd, fee=fee, at=at).exec_id


class OkxBook:
    """Scripts the coin-margined BTC-USD-SWAP and BTC-USD-260327 on the fake OKX (orders and
    fills in contracts of 100 USD, fees in BTC and negative when paid), beside an ETH-USD-SWAP
    position a BTC venue does not cover."""

    venue, symbol, quarterly = "okx", "BTC-USD-SWAP", "BTC-USD-260327"

    def __init__(self, fake: FakeOkx) -> None:
        self.fake = fake
        for inst_id in (self.symbol, self.quarterly):
            fake.add_instrument(inst_id, ct_val="100")
        fake.add_instrument("ETH-USD-SWAP", ct_val="10")
        fake.set_position("ETH-USD-SWAP", "-50", "3000")

    def order(
        self, side: str, usd: str, price: str, at: datetime, reduce_only: bool, symbol: str = ""
    ) -> str:
        contracts = Decimal(usd) / 100
        return self.fake.add_open_order(
            symbol or self.symbol, side, contracts, price, reduce_only=reduce_only, at=at
        )

    def fill(self, order_id: str, usd: str, fee: Decimal, at: datetime) -> str:
        return self.fake.partial_fill(order_id, Decimal(usd) / 100, fee=-fee, at=at).trade_id


Book = BybitBook | OkxBook

PATHS = ["pybit-bybit", "ccxt-sync-bybit", "ccxt-async-bybit", "ccxt-sync-okx", "ccxt-async-okx"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scripted(path: str, ledger_url: str) -> Iterator[tuple[Rig, Book]]:
    """A Rig (ledger and synchronizer over an inverse venue) and the book it reads."""
    _, *flavour, exchange = path.split("-")
    fake: FakeBybit | FakeOkx = (
        FakeBybit(clock=lambda: NOW, page_size=2) if exchange == "bybit" else okx_with_swaps()
    )
    with fake:
        book: Book = BybitBook(fake) if isinstance(fake, FakeBybit) else OkxBook(fake)
        harness: Any = CcxtHarness(flavour[0], fake) if flavour else PybitHarness(book.fake)
        try:
            with Rig(harness, ledger_url, category="inverse", settle_coin="BTC") as rig:
                yield rig, book
        finally:
            harness.close()


def key_of(book: Book, symbol: str = "") -> PositionKey:
    return PositionKey(
        venue=book.venue, account="main", category="inverse", symbol=symbol or book.symbol
    )


def traded(
    rig: Rig, book: Book, side: str, usd: str, price: str, at: datetime, symbol: str = ""
) -> None:
    """An order the bot requested and whose fill it recorded, in USD and BTC."""
    key = key_of(book, symbol)
    order_id = book.order(side, usd, price, at, reduce_only=False, symbol=key.symbol)
    rig.request_open(key, order_id=order_id, side=side, qty=usd, at=at)
    exec_id = book.fill(order_id, usd, FEE, at)
    fill = Fill(
        exec_id=exec_id, order_id=order_id, side=side, qty=usd, price=price, fee=FEE, exec_time=at
    )
    rig.record_fill(key, fill)


def long_200(rig: Rig, book: Book) -> PositionKey:
    """The worked example's two buys, both recorded: 100 @ 20000 and 100 @ 30000."""
    traded(rig, book, "buy", "100", "20000", ago(hours=4))
    traded(rig, book, "buy", "100", "30000", ago(hours=3))
    return key_of(book)


def sold_unheard(rig: Rig, book: Book, key: PositionKey, usd: str, *, as_exit: bool) -> None:
    """A sell @ 25000 the bot requested (an exit, or an open that may flip) and the exchange
    filled an hour ago without the bot hearing of it."""
    order_id = book.order("sell", usd, "25000", ago(hours=2), reduce_only=as_exit)
    if as_exit:
        rig.request_exit(key, order_id=order_id, qty=usd, price="25000", at=ago(hours=2))
    else:
        rig.request_open(
            key, order_id=order_id, side="sell", qty=usd, price="25000", at=ago(hours=2)
        )
    book.fill(order_id, usd, FEE, ago(hours=1))


def recovered(rig: Rig, key: PositionKey, fills: int) -> SyncReport:
    """A round at NOW that recovers ``fills`` executions of ``key`` and then agrees."""
    report = rig.run_once(NOW)
    assert report.recovered == {key: fills}
    assert agreed(report, key)
    return report


def agreed(report: SyncReport, key: PositionKey) -> bool:
    outcome = report.reconcile.outcome(key)
    return outcome is not None and outcome.outcome is Outcome.AGREES


def test_the_exchange_reports_the_harmonic_average_the_ledger_keeps(
    scripted: tuple[Rig, Book],
) -> None:
    rig, book = scripted
    key, quarterly = long_200(rig, book), key_of(book, book.quarterly)
    traded(rig, book, "sell", "300", "31000", ago(hours=3), symbol=book.quarterly)
    report = rig.run_once(ago(hours=2))
    assert report.snapshot.symbols == {book.symbol, book.quarterly}  # the BTC-settled ones
    rows = {p.symbol: (p.side, p.size, p.avg_price) for p in report.snapshot.positions}
    assert rows == {
        book.symbol: (Side.BUY, Decimal(200), Decimal(24000)),
        book.quarterly: (Side.SELL, Decimal(300), Decimal(31000)),
    }
    position = rig.position(key)
    assert (position.side, position.size) == (Side.BUY, Decimal(200))
    assert position.avg_entry_price == Decimal(24000)
    assert agreed(report, key) and agreed(report, quarterly)
    assert report.reconcile.events_written == 0
    assert position.fees == 2 * FEE  # in BTC


def test_a_missed_close_is_recovered_and_realizes_exact_coin_pnl(
    scripted: tuple[Rig, Book],
) -> None:
    rig, book = scripted
    key = long_200(rig, book)
    sold_unheard(rig, book, key, "200", as_exit=True)
    recovered(rig, key, 1)
    position = rig.position(key)
    assert (position.size, position.realized_pnl, position.fees) == (0, WORKED_PNL, 3 * FEE)
    assert position.last_closed.realized_pnl == WORKED_PNL
    assert rig.names(key)[-2:] == ["Filled", "Closed"]
    assert "Reconciled" not in rig.names(key)
    assert rig.run_once(NOW + timedelta(minutes=1)).reconcile.events_written == 0


def test_a_missed_flip_closes_in_coin_and_opens_the_other_side(
    scripted: tuple[Rig, Book],
) -> None:
    rig, book = scripted
    key = long_200(rig, book)
    sold_unheard(rig, book, key, "300", as_exit=False)
    report = recovered(rig, key, 1)
    position = rig.position(key)
    assert (position.side, position.size, position.avg_entry_price) == (
        Side.SELL,
        Decimal(100),
        Decimal(25000),
    )
    assert position.last_closed.realized_pnl == WORKED_PNL
    (row,) = report.snapshot.positions
    assert (row.side, row.size, row.avg_price) == (Side.SELL, Decimal(100), Decimal(25000))


@pytest.mark.parametrize("path", PATHS[:3], indirect=True)
def test_bybit_funding_in_coin_is_recovered_beside_the_close(
    scripted: tuple[Rig, Book],
) -> None:
    rig, book = scripted
    assert isinstance(book, BybitBook)
    key = long_200(rig, book)
    funding = book.fake.settle_funding(
        "BTCUSD", fee="0.00000125", price="24500", category="inverse", at=ago(hours=2)
    )
    assert funding.exec_qty == 200  # the whole position, in USD contracts
    sold_unheard(rig, book, key, "200", as_exit=True)
    recovered(rig, key, 2)
    position = rig.position(key)
    assert (position.size, position.funding) == (0, Decimal("0.00000125"))
    assert position.realized_pnl == WORKED_PNL - Decimal("0.00000125")
    assert position.last_closed.funding == Decimal("0.00000125")
    assert rig.names(key)[-3:] == ["FundingSettled", "Filled", "Closed"]


@pytest.mark.parametrize("path", PATHS[3:], indirect=True)
def test_a_swap_snapshot_never_judges_a_coin_margined_key(scripted: tuple[Rig, Book]) -> None:
    """OKX's instrument types hold both contract types: the swap venue covers the linear swaps
    only, so neither the inverse key nor a ``swap`` key on a coin-margined swap (recorded before
    coin-margined swaps had their own category) is judged, or closed, by its snapshots."""
    rig, book = scripted
    assert isinstance(book, OkxBook)
    key = long_200(rig, book)
    legacy = PositionKey(venue="okx", account="main", category="swap", symbol=book.symbol)
    linear = PositionKey(venue="okx", account="main", category="swap", symbol="ETH-USDT-SWAP")
    for held in (legacy, linear):
        opening = Fill(
            exec_id=f"open-{held.symbol}", order_id="", side="buy", qty="1", price="3000",
            exec_time=ago(hours=3),
        )  # fmt: skip
        rig.record_fill(held, opening)
    before = {k: rig.names(k) for k in (key, legacy)}
    venue = rig.harness.venue(category="swap", clock=lambda: rig.now)
    synchronizer_of = Synchronizer if rig.harness.flavour == "sync" else AsyncSynchronizer
    swap = synchronizer_of(rig.ledger, venue, clock=lambda: rig.now)
    for minutes in (2, 1):
        rig.now = ago(minutes=minutes)
        report = rig.harness.run(swap.run_once(now=rig.now))
        assert {o.key for o in report.outcomes} == {linear}
    assert {p.key for p in rig.open_positions()} == {key, legacy}
    assert {k: rig.names(k) for k in (key, legacy)} == before
    inverse = rig.run_once(NOW)
    assert {o.key: o.outcome for o in inverse.outcomes} == {key: Outcome.AGREES}
