"""The exchanges' money records read completely (docs/money.md): Bybit's closed-pnl through real
pybit and real ccxt (blocking and asyncio), OKX's positions-history through real ccxt, against
the fakes, whose records are booked from their own closes, fees and funding. Every window and
page is read; any failure raises and returns nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from posledger import ExchangeRejected, ExchangeUnavailable, PositionKey
from posledger.core.money import MoneyRecord
from posledger.testing.fake_bybit import (
    CLOSED_PNL,
    POSITIONS,
    DropConnection,
    FakeBybit,
    Fault,
    HttpError,
    NoList,
    NoRetCode,
    NotJson,
    RetCode,
    RowField,
    Slow,
    StuckCursor,
    TruncatedJson,
)
from posledger.testing.fake_okx import POSITIONS_HISTORY, ErrorCode, FakeOkx, IgnoredAfter, NoData
from posledger.testing.fake_okx import RowField as OkxRowField
from posledger.venues.bybit import BybitVenue
from tests.ccxt_harness import FLAVOURS, NOW, CcxtHarness, ago, okx_with_swaps


def bybit_key(symbol: str, idx: int = 0, category: str = "linear") -> PositionKey:
    return PositionKey(venue="bybit", account="main", category=category, symbol=symbol, idx=idx)


def okx_key(symbol: str, idx: int = 0, category: str = "swap") -> PositionKey:
    return PositionKey(venue="okx", account="main", category=category, symbol=symbol, idx=idx)


def figures(records: list[MoneyRecord]) -> list[tuple[Any, ...]]:
    """What a record says, without its id: key, size, trading PnL, fees, net, funding."""
    return [
        (r.key, r.closed_size, r.trading_pnl, r.fees, r.net_pnl, r.funding, r.penalty)
        for r in records
    ]


@pytest.fixture
def bybit() -> Iterator[FakeBybit]:
    with FakeBybit(clock=lambda: NOW, page_size=2) as server:
        yield server


def pybit_venue(fake: FakeBybit, **options: Any) -> BybitVenue:
    settings: dict[str, Any] = {"account": "main", "category": "linear", "clock": lambda: NOW}
    timeout = options.pop("timeout", 5.0)
    return BybitVenue(fake.session(timeout=timeout), **{**settings, **options})


def trade(fake: FakeBybit, symbol: str, side: str, qty: str, price: str, fee: str, at: datetime,
          **order: Any) -> str:  # fmt: skip
    """One order filled at once on the fake Bybit; returns its id."""
    order_id = fake.add_open_order(symbol, side, qty, price, at=at, **order)
    fake.partial_fill(order_id, qty, fee=fee, at=at)
    return order_id


# Bybit closed-pnl


def test_seed_002_the_missed_exit_fill_has_the_exchanges_closed_pnl(bybit: FakeBybit) -> None:
    """AGIUSDT short 4160 @ 0.04701 (fee 0.11); its exit fills 1000 @ 0.04784 (the fill the
    bot missed) and 3160 @ 0.04809: each fill is one record, its share of the opening fee
    with it, and the two add up to the whole lifecycle."""
    trade(bybit, "AGIUSDT", "Sell", "4160", "0.04701", "0.11", ago(hours=3))
    exit_id = bybit.add_open_order(
        "AGIUSDT", "Buy", "4160", "0.04784", reduce_only=True, at=ago(hours=2)
    )
    bybit.partial_fill(exit_id, "1000", fee="0.026", at=ago(minutes=58))
    bybit.partial_fill(exit_id, "3160", price="0.04809", fee="0.08", at=ago(minutes=29))
    missed, rest = pybit_venue(bybit, settle_coin="USDT").fetch_money(ago(days=1))
    assert missed.key == bybit_key("AGIUSDT")
    assert (missed.closed_size, missed.trading_pnl) == (Decimal(1000), Decimal("-0.83"))
    assert missed.fees == Decimal("0.02644231") + Decimal("0.026")  # 0.11 × 1000/4160, to 8 places
    assert missed.net_pnl == Decimal("-0.88244231")
    assert missed.closed_at == ago(minutes=58) and missed.funding is None
    assert missed.record_id == f"{exit_id}:{bybit.closed_pnl()[0].created_ms}"
    assert rest.trading_pnl == Decimal("-3.4128")  # (0.04701 - 0.04809) × 3160
    assert missed.fees + rest.fees == Decimal("0.11") + Decimal("0.026") + Decimal("0.08")
    assert missed.net_pnl + rest.net_pnl == Decimal("-0.83") + Decimal("-3.4128") - Decimal("0.216")


def test_open_partial_close_close_and_flip_are_one_record_per_closing_fill(
    bybit: FakeBybit,
) -> None:
    trade(bybit, "ETHUSDT", "Buy", "2", "3000", "0.6", ago(days=12))
    trade(bybit, "ETHUSDT", "Sell", "0.5", "3100", "0.2", ago(days=11))
    trade(bybit, "ETHUSDT", "Sell", "3.5", "3200", "1.4", ago(days=3))  # closes 1.5, opens 2 short
    trade(bybit, "ETHUSDT", "Buy", "2", "3150", "-0.1", ago(hours=1))  # maker rebate on the close
    records = pybit_venue(bybit).fetch_money(ago(days=13))
    assert figures(records) == [
        (bybit_key("ETHUSDT"), Decimal("0.5"), Decimal(50), Decimal("0.35"), Decimal("49.65"),
         None, Decimal(0)),
        (bybit_key("ETHUSDT"), Decimal("1.5"), Decimal(300), Decimal("1.05"), Decimal("298.95"),
         None, Decimal(0)),
        (bybit_key("ETHUSDT"), Decimal(2), Decimal(100), Decimal("0.7"), Decimal("99.3"),
         None, Decimal(0)),
    ]  # fmt: skip
    assert [r.closed_at for r in records] == [ago(days=11), ago(days=3), ago(hours=1)]
    windows = {(r.params["startTime"], r.params["endTime"]) for r in bybit.requests(CLOSED_PNL)}
    assert len(windows) == 2  # 13 days: two windows of at most seven


def test_every_page_of_every_window_is_read(bybit: FakeBybit) -> None:
    trade(bybit, "BTCUSDT", "Buy", "1", "40000", "0", ago(days=20))
    for n in range(7):
        trade(bybit, "BTCUSDT", "Sell", "0.1", "41000", "0", ago(days=19 - 2 * n))
    records = pybit_venue(bybit).fetch_money(ago(days=20))
    assert [r.closed_size for r in records] == [Decimal("0.1")] * 7
    assert sum(r.trading_pnl for r in records) == Decimal(700)
    assert len(bybit.requests(CLOSED_PNL)) > 3  # pages of two in three windows


def test_the_second_window_is_read(bybit: FakeBybit) -> None:
    bybit_closes(bybit)
    venue = pybit_venue(bybit)
    venue.fetch_money(ago(days=11))
    first, second = sorted({r.params["startTime"] for r in bybit.requests(CLOSED_PNL)})
    assert int(second) - int(first) == 7 * 24 * 3600 * 1000 + 1


def test_funding_is_folded_into_closed_pnl_and_left_out_of_the_record(bybit: FakeBybit) -> None:
    """Bybit's Closed P&L deducts the funding the closed size paid; its record has no funding
    field, so the record's funding is None and the remainder of ``net_pnl`` is that funding."""
    trade(bybit, "BTCUSDT", "Buy", "1", "40000", "0", ago(hours=10))
    bybit.settle_funding("BTCUSDT", fee="2", price="40000", at=ago(hours=8))
    trade(bybit, "BTCUSDT", "Sell", "0.25", "40100", "0", ago(hours=2))
    (record,) = pybit_venue(bybit).fetch_money(ago(days=1))
    assert (record.trading_pnl, record.fees, record.funding) == (Decimal(25), Decimal(0), None)
    assert record.net_pnl == Decimal("24.5")  # a quarter of the 2 USDT of funding


def test_hedge_legs_come_from_the_closing_orders_side(bybit: FakeBybit) -> None:
    bybit.set_hedge_mode("BTCUSDT")
    trade(bybit, "BTCUSDT", "Buy", "1", "40000", "0", ago(hours=5), idx=1)
    trade(bybit, "BTCUSDT", "Sell", "2", "40000", "0", ago(hours=5), idx=2)
    trade(bybit, "BTCUSDT", "Sell", "1", "40500", "0", ago(hours=2), idx=1)
    trade(bybit, "BTCUSDT", "Buy", "2", "40500", "0", ago(hours=1), idx=2)
    long, short = pybit_venue(bybit).fetch_money(ago(days=1))
    assert (long.key.idx, long.trading_pnl) == (1, Decimal(500))
    assert (short.key.idx, short.trading_pnl) == (2, Decimal(-1000))


def test_bybit_inverse_records_are_in_the_coin(bybit: FakeBybit) -> None:
    trade(bybit, "BTCUSD", "Buy", "1000", "20000", "0.00001", ago(hours=5), category="inverse")
    trade(bybit, "BTCUSD", "Sell", "1000", "25000", "0.00001", ago(hours=1), category="inverse")
    (record,) = pybit_venue(bybit, category="inverse", settle_coin="BTC").fetch_money(ago(days=1))
    assert record.key == bybit_key("BTCUSD", category="inverse")
    assert record.trading_pnl == Decimal("0.01")  # 1000 × (1/20000 - 1/25000) BTC
    assert (record.fees, record.net_pnl) == (Decimal("0.00002"), Decimal("0.00998"))


def test_a_settle_coin_keeps_only_its_symbols(bybit: FakeBybit) -> None:
    trade(bybit, "BTCUSDT", "Buy", "1", "40000", "0", ago(hours=5))
    trade(bybit, "BTCUSDT", "Sell", "1", "40100", "0", ago(hours=4))
    trade(bybit, "BTCPERP", "Buy", "1", "40000", "0", ago(hours=3))
    trade(bybit, "BTCPERP", "Sell", "1", "40100", "0", ago(hours=2))
    records = pybit_venue(bybit, settle_coin="USDC").fetch_money(ago(days=1))
    assert [r.key.symbol for r in records] == ["BTCPERP"]


def test_a_read_older_than_two_years_is_refused(bybit: FakeBybit) -> None:
    with pytest.raises(ExchangeUnavailable, match="730 days"):
        pybit_venue(bybit).fetch_money(ago(days=731))
    assert bybit.requests(CLOSED_PNL) == []


BYBIT_FAULTS: list[tuple[str, str, Fault, int, int | None]] = [
    ("502 on the first page", CLOSED_PNL, HttpError(502), 0, None),
    ("502 on a later page", CLOSED_PNL, HttpError(502), 1, None),
    ("502 in the second window", CLOSED_PNL, HttpError(502), 2, None),
    ("retCode", CLOSED_PNL, RetCode(10001, "params error"), 1, 10001),
    ("no retCode", CLOSED_PNL, NoRetCode(), 0, None),
    ("no result.list", CLOSED_PNL, NoList(), 1, None),
    ("html body", CLOSED_PNL, NotJson(), 0, None),
    ("truncated json", CLOSED_PNL, TruncatedJson(), 1, None),
    ("slow reply", CLOSED_PNL, Slow(2.5), 0, None),
    ("dropped connection", CLOSED_PNL, DropConnection(), 0, None),
    ("stuck cursor", CLOSED_PNL, StuckCursor(), 0, None),
    ("closedPnl not a number", CLOSED_PNL, RowField("closedPnl", "1,5"), 0, None),
    ("closedPnl a JSON float", CLOSED_PNL, RowField("closedPnl", 1.5), 0, None),
    ("no openFee", CLOSED_PNL, RowField("openFee", remove=True), 0, None),
    ("empty closeFee", CLOSED_PNL, RowField("closeFee", ""), 0, None),
    ("unknown side", CLOSED_PNL, RowField("side", "Long"), 0, None),
    ("createdTime not ms", CLOSED_PNL, RowField("createdTime", "2025-11-12"), 0, None),
    ("closedSize zero", CLOSED_PNL, RowField("closedSize", "0"), 0, None),
    ("mode unknown", POSITIONS, NoList(), 0, None),
]


def bybit_closes(fake: FakeBybit) -> None:
    """Five closes over ten days: pages of two in two windows."""
    trade(fake, "BTCUSDT", "Buy", "1", "40000", "0", ago(days=10))
    for n in range(5):
        trade(fake, "BTCUSDT", "Sell", "0.1", "41000", "0.01", ago(days=9 - 2 * n))


@pytest.mark.parametrize(
    ("endpoint", "fault", "after", "code"),
    [case[1:] for case in BYBIT_FAULTS],
    ids=[case[0] for case in BYBIT_FAULTS],
)
def test_every_failed_closed_pnl_read_raises_and_returns_nothing(
    bybit: FakeBybit, endpoint: str, fault: Fault, after: int, code: int | None
) -> None:
    bybit_closes(bybit)
    venue = pybit_venue(bybit, timeout=1.0)
    times = None if isinstance(fault, StuckCursor) else 1
    bybit.inject(endpoint, fault, after=after, times=times)
    with pytest.raises(ExchangeUnavailable) as raised:
        venue.fetch_money(ago(days=11))
    assert (raised.value.code if isinstance(raised.value, ExchangeRejected) else None) == code
    bybit.clear_faults()
    assert len(venue.fetch_money(ago(days=11))) == 5


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ccxt_reads_the_same_closed_pnl_records_as_pybit(bybit: FakeBybit, flavour: str) -> None:
    bybit_closes(bybit)
    trade(bybit, "ETHUSDT", "Sell", "1", "3000", "0.3", ago(days=2))
    trade(bybit, "ETHUSDT", "Buy", "1", "2900", "-0.1", ago(days=1))
    expected = pybit_venue(bybit, settle_coin="USDT").fetch_money(ago(days=11))
    with CcxtHarness(flavour, bybit) as harness:
        venue = harness.venue(settle_coin="USDT", clock=lambda: NOW)
        assert harness.call(venue, "fetch_money", ago(days=11)) == expected
        assert len(expected) == 6


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    "fault",
    [HttpError(502), TruncatedJson(), NoList(), RowField("cumExitValue", "abc")],
    ids=["502", "truncated", "no list", "bad value"],
)
def test_a_failed_ccxt_closed_pnl_read_returns_nothing(
    bybit: FakeBybit, flavour: str, fault: Fault
) -> None:
    bybit_closes(bybit)
    with CcxtHarness(flavour, bybit, timeout_ms=1000) as harness:
        venue = harness.venue(clock=lambda: NOW)
        bybit.inject(CLOSED_PNL, fault, after=2)
        with pytest.raises(ExchangeUnavailable):
            harness.call(venue, "fetch_money", ago(days=11))


# OKX positions-history


@pytest.fixture
def okx() -> Iterator[FakeOkx]:
    with okx_with_swaps() as server:
        yield server


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, okx: FakeOkx) -> Iterator[CcxtHarness]:
    with CcxtHarness(request.param, okx) as opened:
        yield opened


def okx_money(harness: CcxtHarness, since: datetime, **options: Any) -> list[MoneyRecord]:
    venue = harness.venue(clock=lambda: NOW, **options)
    records: list[MoneyRecord] = harness.call(venue, "fetch_money", since)
    return records


def okx_trade(fake: FakeOkx, inst_id: str, side: str, sz: str, px: str, fee: str, at: datetime,
              **order: Any) -> None:  # fmt: skip
    fake.partial_fill(fake.add_open_order(inst_id, side, sz, px, at=at, **order), sz, fee=fee,
                      at=at)  # fmt: skip


def test_a_position_record_is_its_closes_fees_and_funding_in_ledger_signs(
    harness: CcxtHarness, okx: FakeOkx
) -> None:
    """Long 10 contracts (0.1 BTC) @ 40000, funding paid, closed 4 then 6 of a 10-contract sell
    that flips to short 4, closed at a maker rebate: two positions, two records."""
    okx_trade(okx, "BTC-USDT-SWAP", "buy", "10", "40000", "-0.2", ago(hours=5))
    okx.settle_funding("BTC-USDT-SWAP", "-0.05")
    okx_trade(okx, "BTC-USDT-SWAP", "sell", "4", "41000", "-0.08", ago(hours=4))
    okx_trade(okx, "BTC-USDT-SWAP", "sell", "10", "41000", "-0.2", ago(hours=3))
    okx_trade(okx, "BTC-USDT-SWAP", "buy", "4", "39000", "0.01", ago(hours=1))
    first, flipped = okx_money(harness, ago(days=1))
    assert figures([first, flipped]) == [
        (okx_key("BTC-USDT-SWAP"), Decimal("0.1"), Decimal(100), Decimal("0.4"),
         Decimal("99.55"), Decimal("0.05"), Decimal(0)),
        (okx_key("BTC-USDT-SWAP"), Decimal("0.04"), Decimal(80), Decimal("0.07"),
         Decimal("79.93"), Decimal(0), Decimal(0)),
    ]  # fmt: skip
    assert (first.closed_at, flipped.closed_at) == (ago(hours=3), ago(hours=1))
    assert first.record_id != flipped.record_id


def test_a_partly_closed_position_is_listed_with_its_figures_so_far(
    harness: CcxtHarness, okx: FakeOkx
) -> None:
    okx_trade(okx, "ETH-USDT-SWAP", "sell", "10", "3000", "-0.3", ago(hours=5), pos_side="short")
    okx_trade(okx, "ETH-USDT-SWAP", "buy", "4", "2900", "-0.12", ago(hours=2), pos_side="short")
    (record,) = okx_money(harness, ago(days=1))
    assert record.key == okx_key("ETH-USDT-SWAP", idx=2)
    assert (record.closed_size, record.trading_pnl) == (Decimal("0.4"), Decimal(40))
    assert (record.fees, record.net_pnl) == (Decimal("0.42"), Decimal("39.58"))


def test_every_page_is_read_and_only_the_window_kept(harness: CcxtHarness, okx: FakeOkx) -> None:
    for n in range(5):
        okx_trade(okx, "BTC-USDT-SWAP", "buy", "1", "40000", "0", ago(hours=20 - 3 * n))
        okx_trade(okx, "BTC-USDT-SWAP", "sell", "1", "40100", "0", ago(hours=19 - 3 * n))
    records = okx_money(harness, ago(hours=16, minutes=30))
    assert [r.closed_at for r in records] == [ago(hours=h) for h in (16, 13, 10, 7)]
    assert len(okx.requests(POSITIONS_HISTORY)) >= 3  # pages of two


def test_records_sharing_an_update_time_across_pages_are_all_read(
    harness: CcxtHarness, okx: FakeOkx
) -> None:
    """Pages of two: [BTC at 10 min, one of the two at 30 min], then the other one at 30 min,
    which paging strictly before 30 min would skip."""
    for inst_id in ("BTC-USDT-SWAP", "ETH-USDT-SWAP"):
        okx_trade(okx, inst_id, "buy", "1", "100", "0", ago(hours=5))
        okx_trade(okx, inst_id, "sell", "1", "101", "0", ago(minutes=30))
    okx_trade(okx, "BTC-USDT-SWAP", "buy", "1", "100", "0", ago(minutes=20))
    okx_trade(okx, "BTC-USDT-SWAP", "sell", "1", "101", "0", ago(minutes=10))
    records = okx_money(harness, ago(days=1))
    assert [r.closed_at for r in records] == [ago(minutes=30)] * 2 + [ago(minutes=10)]
    assert {r.key.symbol for r in records} == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}


def test_okx_inverse_records_are_in_the_coin(harness: CcxtHarness, okx: FakeOkx) -> None:
    okx.add_instrument("BTC-USD-SWAP", ct_val="100")
    okx_trade(okx, "BTC-USD-SWAP", "buy", "10", "20000", "-0.00001", ago(hours=5))
    okx_trade(okx, "BTC-USD-SWAP", "sell", "10", "25000", "-0.00001", ago(hours=1))
    (record,) = okx_money(harness, ago(days=1), category="inverse")
    assert record.key == okx_key("BTC-USD-SWAP", category="inverse")
    assert record.closed_size == Decimal(1000)  # USD: contracts × ctVal
    assert record.trading_pnl == Decimal("0.01")
    assert (record.fees, record.net_pnl) == (Decimal("0.00002"), Decimal("0.00998"))
    assert okx_money(harness, ago(days=1)) == []  # the swap category owns none of it


def test_a_liquidation_penalty_and_settled_pnl_are_read_in_ledger_signs(
    harness: CcxtHarness, okx: FakeOkx
) -> None:
    okx_trade(okx, "BTC-USDT-SWAP", "buy", "1", "40000", "0", ago(hours=5))
    okx_trade(okx, "BTC-USDT-SWAP", "sell", "1", "39000", "0", ago(hours=1))
    okx.inject(POSITIONS_HISTORY, OkxRowField("liqPenalty", "-1.5"))
    okx.inject(POSITIONS_HISTORY, OkxRowField("settledPnl", "2"), after=2)  # the next read
    (penalised,) = okx_money(harness, ago(days=1))
    assert (penalised.penalty, penalised.trading_pnl) == (Decimal("1.5"), Decimal(-10))
    (settled,) = okx_money(harness, ago(days=1))
    assert (settled.penalty, settled.trading_pnl) == (Decimal(0), Decimal(-8))


def test_a_read_older_than_three_months_is_refused(harness: CcxtHarness, okx: FakeOkx) -> None:
    with pytest.raises(ExchangeUnavailable, match="90 days"):
        okx_money(harness, ago(days=91))
    assert okx.requests(POSITIONS_HISTORY) == []


OKX_FAULTS: list[tuple[str, Fault, int]] = [
    ("502", HttpError(502), 0),
    ("502 on a later page", HttpError(502), 1),
    ("error code", ErrorCode("50013", "System busy"), 1),
    ("no data", NoData(), 0),
    ("truncated json", TruncatedJson(), 1),
    ("timeout", Slow(2.0), 0),
    ("dropped connection", DropConnection(), 0),
    ("after ignored", IgnoredAfter(), 0),
    ("realizedPnl not a number", OkxRowField("realizedPnl", "1,5"), 0),
    ("no fee", OkxRowField("fee", remove=True), 0),
    ("unknown posSide", OkxRowField("posSide", "both"), 0),
    ("uTime not ms", OkxRowField("uTime", "2025-11-12"), 0),
    ("no posId", OkxRowField("posId", ""), 0),
]


@pytest.mark.parametrize(
    ("fault", "after"), [case[1:] for case in OKX_FAULTS], ids=[case[0] for case in OKX_FAULTS]
)
def test_every_failed_positions_history_read_raises_and_returns_nothing(
    okx: FakeOkx, fault: Fault, after: int
) -> None:
    for n in range(3):
        okx_trade(okx, "BTC-USDT-SWAP", "buy", "1", "40000", "0", ago(hours=10 - 3 * n))
        okx_trade(okx, "BTC-USDT-SWAP", "sell", "1", "40100", "0", ago(hours=9 - 3 * n))
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, okx, timeout_ms=1000) as harness:
            times = None if isinstance(fault, IgnoredAfter | DropConnection) else 1
            okx.inject(POSITIONS_HISTORY, fault, after=after, times=times)
            with pytest.raises(ExchangeUnavailable):
                okx_money(harness, ago(days=1))
            okx.clear_faults()
            assert len(okx_money(harness, ago(days=1))) == 3
