"""CcxtVenue and AsyncCcxtVenue over real ccxt and the fake Bybit server: complete reads in exact
Decimals, or ExchangeUnavailable; the same keys as BybitVenue; unified symbols mapped both ways.

Every test runs on blocking ``ccxt`` and on ``ccxt.async_support``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import ccxt  # type: ignore[import-untyped]
import ccxt.async_support as accxt  # type: ignore[import-untyped]
import pytest

from posledger import (
    ExchangeAuthFailed,
    ExchangeRejected,
    ExchangeUnavailable,
    InvalidInput,
    Side,
)
from posledger.testing.fake_bybit import (
    EXECUTIONS,
    INSTRUMENTS,
    OPEN_ORDERS,
    ORDER_HISTORY,
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
from posledger.venues.base import AsyncVenue, Venue
from posledger.venues.bybit import BybitVenue
from posledger.venues.ccxt import AsyncCcxtVenue, CcxtVenue, unified_symbol, venue_symbol
from tests.ccxt_harness import (
    FLAVOURS,
    NOW,
    CcxtHarness,
    ago,
    assert_a_failed_snapshot_heals,
    assert_unavailable_because_of,
)


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(clock=lambda: NOW, page_size=2) as server:
        yield server


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, fake: FakeBybit) -> Iterator[CcxtHarness]:
    with CcxtHarness(request.param, fake) as opened:
        yield opened


def venue(harness: CcxtHarness, **options: Any) -> CcxtVenue | AsyncCcxtVenue:
    settings: dict[str, Any] = {"settle_coin": "USDT", "clock": lambda: NOW, **options}
    return harness.venue(**settings)


def snapshot_of(harness: CcxtHarness, **options: Any) -> Any:
    return harness.call(venue(harness, **options), "fetch_snapshot")


def seed_002_book(fake: FakeBybit) -> None:
    """The three aged shorts and longs of seed 002, each with a partially filled exit."""
    for symbol, side, size, filled in (
        ("AGIUSDT", "Sell", "4160", "1000"),
        ("SCAUSDT", "Buy", "2136.9", "100.9"),
        ("HNTUSDT", "Buy", "60", "0.12"),
    ):
        fake.set_position(symbol, side, size, "1.5", at=ago(hours=2))
        exit_side = "Buy" if side == "Sell" else "Sell"
        order = fake.add_open_order(
            symbol, exit_side, size, "1.4", reduce_only=True, at=ago(hours=1)
        )
        fake.partial_fill(order, filled, fee="0.01", at=ago(minutes=30))


# ccxt itself against the fake


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ccxt_unified_reads_work_against_the_fake(fake: FakeBybit, flavour: str) -> None:
    seed_002_book(fake)
    fake.add_instrument("AGIUSDT", category="spot")
    with CcxtHarness(flavour, fake, throttle=True) as harness:  # ccxt as a bot configures it
        unified_reads(harness, fake)


def unified_reads(harness: CcxtHarness, fake: FakeBybit) -> None:
    exchange = harness.exchange
    harness.run(exchange.load_markets())
    assert exchange.market("AGI/USDT:USDT")["settle"] == "USDT"
    assert exchange.market("AGI/USDT")["spot"]
    assert len(fake.requests(INSTRUMENTS)) > 6  # every page of instruments-info, per category
    params = {"category": "linear", "settleCoin": "USDT"}
    positions = harness.run(exchange.fetch_positions(params=params))
    assert positions and all(p["info"]["symbol"].endswith("USDT") for p in positions)
    orders = harness.run(exchange.fetch_open_orders(params=params))
    assert {o["symbol"] for o in orders} <= {"AGI/USDT:USDT", "SCA/USDT:USDT", "HNT/USDT:USDT"}
    trades = harness.run(exchange.fetch_my_trades(params={"category": "linear"}))
    assert trades and trades[0]["symbol"].endswith(":USDT")


def test_ccxt_fetch_positions_is_not_a_complete_read(harness: CcxtHarness, fake: FakeBybit) -> None:
    """Why the venues page and check replies themselves: ccxt's unified call silently stops
    after one page, and turns a reply without a list, or not JSON at all, into "no positions"."""
    for n in range(5):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
    params = {"category": "linear", "settleCoin": "USDT"}
    assert len(harness.run(harness.exchange.fetch_positions(params=params))) == 2
    assert len(snapshot_of(harness).positions) == 5
    for fault in (NoList(), TruncatedJson(), NotJson()):
        fake.inject(POSITIONS, fault)
        assert harness.run(harness.exchange.fetch_positions(params=params)) == []
        fake.inject(POSITIONS, fault)
        with pytest.raises(ExchangeUnavailable):
            snapshot_of(harness)


def test_ccxt_fetch_my_trades_reads_trades_only_one_default_page(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    """docs/ccxt.md's facts about ccxt 4.5.90's bybit fetch_my_trades: it sends
    ``execType=Trade`` (funding never comes back), no ``limit`` (Bybit's default page, 50),
    and one page unless asked to paginate."""
    fake.set_position("ETHUSDT", "Buy", "1", "3000")
    for n in range(3):
        fake.add_execution("ETHUSDT", "Buy", "1", "3000", at=ago(minutes=10 + n))
    fake.settle_funding("ETHUSDT", fee="0.1", price="3000", at=ago(minutes=5))
    trades = harness.run(harness.exchange.fetch_my_trades(params={"category": "linear"}))
    (request,) = fake.requests(EXECUTIONS)
    assert request.params["execType"] == "Trade" and "limit" not in request.params
    assert len(trades) == 2  # the fake's page of two: one page, the third trade left unread
    assert len(harness.call(venue(harness), "fetch_executions", ago(hours=1))) == 4


# complete snapshots


def test_a_snapshot_reads_every_page_with_exact_decimals(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    seed_002_book(fake)
    fake.set_position("BTCUSDT", "Buy", "0.001", "43000.5")
    fake.set_position("ETHUSDT", "Sell", "12345678.123456789", "3000.1")
    for _ in range(3):
        fake.add_open_order("ETHUSDT", "Buy", "1", "2000", reduce_only=True)
    snapshot = snapshot_of(harness)
    sizes = {(p.symbol, p.idx): (p.side, p.size) for p in snapshot.positions}
    assert sizes == {
        ("AGIUSDT", 0): (Side.SELL, Decimal("3160")),
        ("SCAUSDT", 0): (Side.BUY, Decimal("2036.0")),
        ("HNTUSDT", 0): (Side.BUY, Decimal("59.88")),
        ("BTCUSDT", 0): (Side.BUY, Decimal("0.001")),
        ("ETHUSDT", 0): (Side.SELL, Decimal("12345678.123456789")),
    }
    assert len(fake.requests(POSITIONS)) == 3
    assert len(snapshot.open_order_ids) == 6
    assert len(fake.requests(OPEN_ORDERS)) == 3
    assert snapshot.taken_at == NOW
    assert (snapshot.venue, snapshot.account, snapshot.category) == ("bybit", "main", "linear")


def test_sizes_never_pass_through_float(harness: CcxtHarness, fake: FakeBybit) -> None:
    fake.set_position("ETHUSDT", "Sell", "12345678.123456789", "3000.1")
    fake.set_position("BTCUSDT", "Buy", "0.30000000000000001", "43000.5")
    exact = {p.symbol: p.size for p in snapshot_of(harness).positions}
    params = {"category": "linear", "settleCoin": "USDT"}
    unified = harness.run(harness.exchange.fetch_positions(params=params))
    through_float = {p["info"]["symbol"]: Decimal(repr(p["contracts"])) for p in unified}
    assert exact == {
        "ETHUSDT": Decimal("12345678.123456789"),
        "BTCUSDT": Decimal("0.30000000000000001"),
    }
    assert all(through_float[symbol] != size for symbol, size in exact.items())


def test_a_snapshot_keeps_seq_update_time_and_avg_price(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.set_position("BTCUSDT", "Buy", "0.004", "43000.5", seq=7788, at=ago(minutes=5))
    (position,) = snapshot_of(harness).positions
    assert (position.seq, position.updated_at, position.avg_price) == (
        7788,
        ago(minutes=5),
        Decimal("43000.5"),
    )


def test_hedge_legs_are_kept_apart(harness: CcxtHarness, fake: FakeBybit) -> None:
    fake.set_position("ETHUSDT", "Buy", "2", "3000", idx=1)
    fake.set_position("ETHUSDT", "Sell", "0.7", "3100", idx=2)
    snapshot = snapshot_of(harness)
    legs = {p.idx: (p.side, p.size) for p in snapshot.positions}
    assert legs == {1: (Side.BUY, Decimal("2")), 2: (Side.SELL, Decimal("0.7"))}
    fake.add_execution("ETHUSDT", "Buy", "2", "3000", idx=1, exec_id="long", at=ago(hours=3))
    fake.add_execution("ETHUSDT", "Sell", "1", "3010", idx=2, exec_id="short", at=ago(hours=2))
    fake.settle_funding("ETHUSDT", fee="0.1", price="3015", idx=2, exec_id="fund", at=ago(hours=1))
    fills = harness.call(venue(harness), "fetch_executions", ago(days=1))
    assert {f.exec_id: f.idx for f in fills} == {"long": 1, "short": 2, "fund": 2}


def test_a_snapshot_is_taken_at_bybits_clock_not_the_venues(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.set_position("ETHUSDT", "Buy", "1", "3000")
    fast = snapshot_of(harness, clock=lambda: NOW + timedelta(seconds=60))
    assert fast.taken_at == NOW  # the fake's clock, which stamps its replies' ``time``


def test_a_refused_status_filter_narrows_coverage_and_says_so(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    """instruments-info documents Trading and PreLaunch as filters, not Delivering or Closed:
    refused (retCode 10001), the snapshot covers the other symbols and the listed positions,
    and says so, instead of failing every round."""
    fake.refuse_undocumented_statuses = True
    fake.add_instrument("BTCUSDT")
    fake.add_instrument("ETHUSDT", status="Delivering")
    fake.add_instrument("SOLUSDT", status="Closed")
    fake.set_position("SOLUSDT", "Buy", "1", "150")
    snapshot = snapshot_of(harness)
    assert snapshot.symbols == {"BTCUSDT", "SOLUSDT"}
    assert [p.symbol for p in snapshot.positions] == ["SOLUSDT"]
    (caveat,) = snapshot.caveats
    assert "Delivering, Closed" in caveat and "10001" in caveat


def test_a_settle_coin_covers_only_its_symbols(harness: CcxtHarness, fake: FakeBybit) -> None:
    fake.add_instrument("ETHUSDT")
    fake.add_instrument("ETHPERP")
    fake.set_position("BTCPERP", "Buy", "0.1", "43000")
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    usdt = snapshot_of(harness)
    usdc = snapshot_of(harness, settle_coin="USDC")
    assert usdt.symbols == {"AGIUSDT", "ETHUSDT"}
    assert [p.symbol for p in usdt.positions] == ["AGIUSDT"]
    assert usdc.symbols == {"BTCPERP", "ETHPERP"}
    assert [p.symbol for p in usdc.positions] == ["BTCPERP"]


# symbols


def test_unified_symbols_map_to_venue_symbols_and_back(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.add_instrument("AGIUSDT", category="spot")
    fake.add_instrument("AGIUSDT")
    fake.add_instrument("BTCPERP")
    fake.add_instrument("BTCUSD", category="inverse")
    linear = venue(harness)
    assert harness.call(linear, "venue_symbol", "AGI/USDT:USDT") == "AGIUSDT"
    assert harness.call(linear, "venue_symbol", "AGIUSDT") == "AGIUSDT"
    assert harness.call(linear, "unified_symbol", "AGIUSDT") == "AGI/USDT:USDT"
    assert harness.call(linear, "unified_symbol", "BTCPERP") == "BTC/USDC:USDC"
    inverse = venue(harness, category="inverse", settle_coin="BTC")
    assert harness.call(inverse, "unified_symbol", "BTCUSD") == "BTC/USD:BTC"
    assert venue_symbol(harness.exchange, "AGI/USDT", "spot") == "AGIUSDT"
    assert unified_symbol(harness.exchange, "AGIUSDT", "spot") == "AGI/USDT"
    with pytest.raises(InvalidInput):
        venue_symbol(harness.exchange, "AGI/USDT", "linear")
    with pytest.raises(InvalidInput):
        harness.call(linear, "unified_symbol", "NOPEUSDT")


def test_listed_unified_symbols_become_venue_symbols_with_flat_rows(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.add_instrument("SCAUSDT")
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    snapshot = snapshot_of(harness, symbols=["AGI/USDT:USDT", "SCA/USDT:USDT"])
    assert snapshot.symbols == {"AGIUSDT", "SCAUSDT"}
    flat = snapshot.position(snapshot.key("SCAUSDT"))
    assert flat is not None and (flat.side, flat.size) == (None, Decimal(0))
    assert [r.params["symbol"] for r in fake.requests(POSITIONS)] == ["AGIUSDT", "SCAUSDT"]


def test_markets_that_fail_to_load_are_unavailable(harness: CcxtHarness, fake: FakeBybit) -> None:
    fake.inject(INSTRUMENTS, HttpError(503))
    with pytest.raises(ExchangeUnavailable):
        snapshot_of(harness, symbols=["AGI/USDT:USDT"])


# the same keys as pybit


def test_ccxt_and_pybit_read_the_same_account_the_same_way(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    seed_002_book(fake)
    fake.set_position("ETHUSDT", "Buy", "2", "3000", idx=1)
    fake.set_position("ETHUSDT", "Sell", "0.7", "3100", idx=2)
    fake.add_execution("ETHUSDT", "Buy", "2", "3000", idx=1, at=ago(hours=3))
    fake.settle_funding("SCAUSDT", fee="0.0534", price="0.51", at=ago(minutes=10))
    pybit = BybitVenue(
        fake.session(), account="main", category="linear", settle_coin="USDT", clock=lambda: NOW
    )
    ours = venue(harness)
    assert harness.call(ours, "fetch_snapshot") == pybit.fetch_snapshot()
    fills = harness.call(ours, "fetch_executions", ago(days=1))
    assert fills == pybit.fetch_executions(ago(days=1))
    assert len(fills) == 5
    ccxt_snapshot = harness.call(ours, "fetch_snapshot")
    keys = {ccxt_snapshot.key_for(p) for p in ccxt_snapshot.positions}
    assert {(k.venue, k.symbol, k.idx) for k in keys} == {
        ("bybit", "AGIUSDT", 0),
        ("bybit", "SCAUSDT", 0),
        ("bybit", "HNTUSDT", 0),
        ("bybit", "ETHUSDT", 1),
        ("bybit", "ETHUSDT", 2),
    }


def inverse_book(fake: FakeBybit) -> None:
    """A coin-margined account: BTCUSD bought at 20000 and 30000 (100 USD contracts each), a
    BTC quarterly, an ETH perpetual (settling in ETH), and open orders on both coins."""
    for price in ("20000", "30000"):
        order = fake.add_open_order("BTCUSD", "Buy", "100", price, category="inverse")
        fake.partial_fill(order, "100", fee="0.00000375", at=ago(hours=2))
    fake.set_position("BTCUSDH26", "Sell", "300", "31000", category="inverse")
    fake.set_position("ETHUSD", "Buy", "50", "3000", category="inverse")
    fake.add_open_order("BTCUSD", "Sell", "200", "25000", category="inverse", order_id="tp-btc")
    fake.add_open_order("ETHUSD", "Sell", "50", "3500", category="inverse", order_id="tp-eth")


def test_ccxt_and_pybit_read_an_inverse_account_the_same_way(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    """Category inverse is read by category alone and kept to the settle coin's symbols (the
    base coin, BTC for BTCUSD and BTCUSDH26); sizes stay USD contracts, the average is
    harmonic."""
    inverse_book(fake)
    pybit = BybitVenue(
        fake.session(), account="main", category="inverse", settle_coin="BTC", clock=lambda: NOW
    )
    ours = venue(harness, category="inverse", settle_coin="BTC")
    snapshot = harness.call(ours, "fetch_snapshot")
    assert snapshot == pybit.fetch_snapshot()
    assert snapshot.symbols == {"BTCUSD", "BTCUSDH26"}
    held = {p.symbol: (p.side, p.size, p.avg_price) for p in snapshot.positions}
    assert held == {
        "BTCUSD": (Side.BUY, Decimal(200), Decimal(24000)),
        "BTCUSDH26": (Side.SELL, Decimal(300), Decimal(31000)),
    }
    assert snapshot.open_order_ids == {"tp-btc"}
    assert all("settleCoin" not in r.params for r in fake.requests(POSITIONS))
    assert all("settleCoin" not in r.params for r in fake.requests(OPEN_ORDERS))
    fills = harness.call(ours, "fetch_executions", ago(days=1))
    assert fills == pybit.fetch_executions(ago(days=1))
    assert [(f.qty, f.price, f.fee) for f in fills] == [
        (Decimal(100), Decimal(20000), Decimal("0.00000375")),
        (Decimal(100), Decimal(30000), Decimal("0.00000375")),
    ]


def test_inverse_symbols_map_both_ways_and_read_flat_legs(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    inverse_book(fake)
    fake.add_instrument("XRPUSD", category="inverse")
    inverse = venue(harness, category="inverse", settle_coin=None)
    assert harness.call(inverse, "venue_symbol", "BTC/USD:BTC-260327") == "BTCUSDH26"
    assert harness.call(inverse, "unified_symbol", "ETHUSD") == "ETH/USD:ETH"
    with pytest.raises(InvalidInput):
        harness.call(venue(harness), "venue_symbol", "BTC/USD:BTC")  # not a linear market
    listed = venue(harness, category="inverse", symbols=["BTC/USD:BTC", "XRP/USD:XRP"])
    snapshot = harness.call(listed, "fetch_snapshot")
    legs = {p.symbol: (p.side, p.size) for p in snapshot.positions}
    assert legs == {"BTCUSD": (Side.BUY, Decimal(200)), "XRPUSD": (None, Decimal(0))}
    everything = harness.call(inverse, "fetch_snapshot")
    assert everything.symbols is None and len(everything.positions) == 3


# executions


def test_executions_read_every_page_and_every_week(harness: CcxtHarness, fake: FakeBybit) -> None:
    for day in range(20):
        fake.add_execution(
            "BTCUSDT", "Buy", "0.001", "43000.1", exec_id=f"e{day}", fee="0.0001", at=ago(days=day)
        )
    fills = harness.call(venue(harness, hedge_mode=False), "fetch_executions", ago(days=20), NOW)
    assert [f.exec_id for f in fills] == [f"e{day}" for day in reversed(range(20))]
    assert all(
        (f.qty, f.price, f.fee) == (Decimal("0.001"), Decimal("43000.1"), Decimal("0.0001"))
        for f in fills
    )
    windows = {(r.params["startTime"], r.params["endTime"]) for r in fake.requests(EXECUTIONS)}
    assert len(windows) == 3
    assert len(fake.requests(EXECUTIONS)) == 11  # 7 + 7 + 6 executions, two per page


def test_seed_002_partial_exits_come_back_as_fills(harness: CcxtHarness, fake: FakeBybit) -> None:
    seed_002_book(fake)
    fills = harness.call(venue(harness), "fetch_executions", ago(hours=1))
    assert {f.symbol: (f.side, f.qty, f.leaves_qty, f.idx) for f in fills} == {
        "AGIUSDT": (Side.BUY, Decimal("1000"), Decimal("3160"), 0),
        "SCAUSDT": (Side.SELL, Decimal("100.9"), Decimal("2036.0"), 0),
        "HNTUSDT": (Side.SELL, Decimal("0.12"), Decimal("59.88"), 0),
    }


def test_new_and_unknown_exec_types_come_back_as_fills_of_their_kind(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    for minute, exec_type in enumerate(("BlockTrade", "MovePosition", "FutureSpread", "Novel")):
        at = ago(minutes=10 - minute)
        fake.add_execution(
            "BTCUSDT", "Buy", "1", "100", exec_type=exec_type, exec_id=exec_type, at=at
        )
    fills = harness.call(venue(harness), "fetch_executions", ago(hours=1))
    assert [(f.exec_id, f.kind.value, f.venue_type) for f in fills] == [
        ("BlockTrade", "block_trade", "BlockTrade"),
        ("MovePosition", "move_position", "MovePosition"),
        ("FutureSpread", "spread_trade", "FutureSpread"),
        ("Novel", "unknown", "Novel"),
    ]


# failures


FAILED_READS: list[tuple[str, str, Fault, int]] = [
    ("502 on the first page", POSITIONS, HttpError(502), 0),
    ("502 on the last page", POSITIONS, HttpError(502), 2),
    ("503 maintenance", POSITIONS, HttpError(503), 1),
    ("retCode 10016", POSITIONS, RetCode(10016, "server error"), 1),
    ("rate limited", POSITIONS, RetCode(10006, "Too many visits!"), 0),
    ("no retCode", POSITIONS, NoRetCode(), 1),
    ("html body", POSITIONS, NotJson(), 0),
    ("truncated json", POSITIONS, TruncatedJson(), 1),
    ("no result.list", POSITIONS, NoList(), 1),
    ("timeout", POSITIONS, Slow(4.0), 1),
    ("dropped connection", POSITIONS, DropConnection(), 1),
    ("cut mid-body", POSITIONS, DropConnection(mid_body=True), 1),
    ("size not a number", POSITIONS, RowField("size", "1,5"), 1),
    ("size a JSON float", POSITIONS, RowField("size", 4160.5), 0),
    ("unknown side", POSITIONS, RowField("side", "Long"), 0),
    ("no positionIdx", POSITIONS, RowField("positionIdx", remove=True), 2),
    ("stuck cursor", POSITIONS, StuckCursor(), 0),
    ("open orders 502", OPEN_ORDERS, HttpError(502), 1),
    ("open orders no list", OPEN_ORDERS, NoList(), 0),
    ("instruments no list", INSTRUMENTS, NoList(), 0),
    ("instruments truncated", INSTRUMENTS, TruncatedJson(), 2),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "after"),
    [case[1:] for case in FAILED_READS],
    ids=[case[0] for case in FAILED_READS],
)
def test_every_failed_read_raises_and_returns_nothing(
    fake: FakeBybit, endpoint: str, fault: Fault, after: int
) -> None:
    for n in range(5):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
        fake.add_instrument(f"C{n}PERP")
    for n in range(3):
        fake.add_open_order(f"S{n}USDT", "Sell", "1", "11")
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, timeout_ms=1000) as harness:
            times = None if isinstance(fault, StuckCursor | DropConnection) else 1
            fake.inject(endpoint, fault, after=after, times=times)
            assert_a_failed_snapshot_heals(harness, venue(harness), positions=5)


@pytest.mark.parametrize(
    ("fault", "code"),
    [(RetCode(10016, "server error"), 10016), (RetCode(10006, "Too many visits!"), 10006)],
    ids=["server error", "rate limit"],
)
def test_a_retcode_is_a_rejection_with_its_code_and_ccxts_error_as_cause(
    harness: CcxtHarness, fake: FakeBybit, fault: Fault, code: int
) -> None:
    fake.inject(POSITIONS, fault)
    with pytest.raises(ExchangeRejected) as raised:
        snapshot_of(harness)
    assert raised.value.code == code
    assert isinstance(raised.value.__cause__, ccxt.BaseError)


@pytest.mark.parametrize(
    ("fault", "ccxt_error"),
    [
        (HttpError(502), ccxt.ExchangeNotAvailable),
        (DropConnection(), ccxt.NetworkError),
        (Slow(4.0), ccxt.RequestTimeout),
        (NoRetCode(), ccxt.ExchangeError),
    ],
    ids=["502", "dropped", "timeout", "no retCode"],
)
def test_ccxt_errors_are_chained_as_the_cause(
    fake: FakeBybit, fault: Fault, ccxt_error: Any
) -> None:
    assert_unavailable_because_of(fake, POSITIONS, fault, ccxt_error, venue)


def test_a_wrong_secret_is_an_authentication_rejection(fake: FakeBybit) -> None:
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, secret="wrong") as harness:
            with pytest.raises(ExchangeAuthFailed) as raised:
                snapshot_of(harness)
            assert raised.value.code == 10004
            assert isinstance(raised.value.__cause__, ccxt.AuthenticationError)


def test_a_key_without_the_permission_is_an_authentication_failure(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.inject(POSITIONS, RetCode(10005, "Permission denied, please check your API key"))
    with pytest.raises(ExchangeAuthFailed) as raised:
        snapshot_of(harness)
    assert raised.value.code == 10005


def test_no_key_at_all_is_an_authentication_failure_before_any_request(fake: FakeBybit) -> None:
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, apiKey="") as harness:
            with pytest.raises(ExchangeAuthFailed) as raised:
                snapshot_of(harness)
            assert raised.value.code is None
            assert isinstance(raised.value.__cause__, ccxt.AuthenticationError)
    assert fake.requests(POSITIONS) == []


@pytest.mark.parametrize(
    "fault",
    [HttpError(502), NoList(), TruncatedJson(), RowField("execQty", "abc")],
    ids=["502", "no list", "truncated", "bad qty"],
)
def test_a_failure_in_a_later_execution_window_returns_nothing(
    harness: CcxtHarness, fake: FakeBybit, fault: Fault
) -> None:
    for day in range(20):
        fake.add_execution("BTCUSDT", "Buy", "1", "100", at=ago(days=day))
    fake.inject(EXECUTIONS, fault, after=7)
    with pytest.raises(ExchangeUnavailable):
        harness.call(venue(harness, hedge_mode=False), "fetch_executions", ago(days=20), NOW)


def test_an_order_history_failure_fails_the_execution_read(
    harness: CcxtHarness, fake: FakeBybit
) -> None:
    fake.set_hedge_mode("ETHUSDT")
    fake.add_execution("ETHUSDT", "Buy", "1", "3000", idx=1, at=ago(hours=1))
    fake.inject(ORDER_HISTORY, HttpError(502))
    with pytest.raises(ExchangeUnavailable):
        harness.call(venue(harness), "fetch_executions", ago(days=1))


def test_a_cancelled_async_read_is_abandoned_cleanly(fake: FakeBybit) -> None:
    for n in range(3):
        fake.set_position(f"S{n}USDT", "Buy", "1", "100")
    fake.inject(POSITIONS, Slow(5.0), after=1)  # the second page hangs

    async def scenario() -> None:
        exchange = accxt.bybit(fake.ccxt_config(timeout=10_000))
        try:
            reader = AsyncCcxtVenue(exchange, account="main", category="linear", settle_coin="USDT")
            read = asyncio.create_task(reader.fetch_snapshot())
            while not fake.requests(POSITIONS):
                await asyncio.sleep(0.01)
            read.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read
            fake.clear_faults()
            assert len((await reader.fetch_snapshot()).positions) == 3
        finally:
            await exchange.close()

    asyncio.run(scenario())


# construction


def test_the_venues_satisfy_the_protocols(fake: FakeBybit) -> None:
    assert isinstance(CcxtVenue(ccxt.bybit(), account="a", category="linear"), Venue)
    assert isinstance(AsyncCcxtVenue(accxt.bybit(), account="a", category="linear"), AsyncVenue)


@pytest.mark.parametrize("exchange_id", ["binance", "binanceusdm", "bitget"])
def test_an_exchange_whose_shapes_are_not_read_is_refused_by_name(exchange_id: str) -> None:
    exchange = getattr(ccxt, exchange_id)()
    with pytest.raises(InvalidInput, match=exchange_id):
        CcxtVenue(exchange, account="main", category="linear")


def test_bad_symbols_are_refused() -> None:
    with pytest.raises(InvalidInput):
        CcxtVenue(ccxt.bybit(), account="main", category="linear", symbols="BTCUSDT")
    with pytest.raises(InvalidInput):
        CcxtVenue(ccxt.bybit(), account="main", category="linear", symbols=[])
