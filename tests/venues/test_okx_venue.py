"""CcxtVenue and AsyncCcxtVenue over real ``ccxt.okx`` and the fake OKX server: complete reads
in exact Decimals (contracts × face value), or ExchangeUnavailable; legs from ``posSide``;
unified symbols mapped both ways.

Every test runs on blocking ``ccxt`` and on ``ccxt.async_support``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt  # type: ignore[import-untyped]
import ccxt.async_support as accxt  # type: ignore[import-untyped]
import pytest

from posledger import (
    ExchangeAuthFailed,
    ExchangeRejected,
    ExchangeUnavailable,
    ExecKind,
    InvalidInput,
    Side,
)
from posledger.testing.fake_okx import (
    FILLS,
    INSTRUMENTS,
    OPEN_ORDERS,
    POSITIONS,
    DropConnection,
    ErrorCode,
    FakeOkx,
    Fault,
    HttpError,
    IgnoredAfter,
    NoCode,
    NoData,
    NotJson,
    RowField,
    Slow,
    TruncatedJson,
)
from posledger.venues.base import AsyncVenue, Venue
from posledger.venues.ccxt import AsyncCcxtVenue, CcxtVenue
from posledger.venues.okx import AUTH_CODES, checked_reply
from tests.ccxt_harness import (
    FLAVOURS,
    NOW,
    CcxtHarness,
    ago,
    assert_a_failed_snapshot_heals,
    assert_unavailable_because_of,
    okx_with_swaps,
)


@pytest.fixture
def fake() -> Iterator[FakeOkx]:
    with okx_with_swaps() as server:
        yield server


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, fake: FakeOkx) -> Iterator[CcxtHarness]:
    with CcxtHarness(request.param, fake) as opened:
        yield opened


def venue(harness: CcxtHarness, **options: Any) -> CcxtVenue | AsyncCcxtVenue:
    return harness.venue(clock=lambda: NOW, **options)


def snapshot_of(harness: CcxtHarness, **options: Any) -> Any:
    return harness.call(venue(harness, **options), "fetch_snapshot")


def fills_of(harness: CcxtHarness, since: datetime, until: datetime | None = None) -> Any:
    return harness.call(venue(harness), "fetch_executions", since, until)


# ccxt itself against the fake


def test_ccxt_unified_reads_work_against_the_fake(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("BTC-USDT-SWAP", "-3", "43000")
    order = fake.add_open_order("ETH-USDT-SWAP", "buy", "5", "3000")
    fake.partial_fill(order, "2", fee="-0.01", at=ago(minutes=5))
    exchange = harness.exchange
    harness.run(exchange.load_markets())
    assert exchange.market("BTC/USDT:USDT")["id"] == "BTC-USDT-SWAP"
    assert exchange.market("ETH/USDT:USDT")["contractSize"] == 0.1
    assert all(r.authenticated for r in fake.requests(POSITIONS))
    positions = harness.run(exchange.fetch_positions())
    assert {(p["symbol"], p["side"]) for p in positions} == {
        ("BTC/USDT:USDT", "short"),
        ("ETH/USDT:USDT", "long"),
    }
    assert [o["symbol"] for o in harness.run(exchange.fetch_open_orders())] == ["ETH/USDT:USDT"]
    trades = harness.run(exchange.fetch_my_trades("ETH/USDT:USDT", params={"instType": "SWAP"}))
    assert [t["amount"] for t in trades] == [2]


def test_ccxt_unified_positions_are_not_a_complete_read(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    """Why the venue checks replies itself: ccxt's unified call turns a reply without ``data``
    into "no positions", and its sizes are floats."""
    fake.set_position("BTC-USDT-SWAP", "1234567.89", "43000")
    harness.run(harness.exchange.load_markets())
    fake.inject(POSITIONS, NoData())
    assert harness.run(harness.exchange.fetch_positions()) == []
    fake.inject(POSITIONS, NoData())
    with pytest.raises(ExchangeUnavailable):
        snapshot_of(harness)
    (unified,) = harness.run(harness.exchange.fetch_positions())
    (exact,) = snapshot_of(harness).positions
    assert exact.size == Decimal("12345.6789")
    assert Decimal(repr(unified["contracts"] * unified["contractSize"])) != exact.size


# complete snapshots


def test_a_snapshot_is_contracts_times_face_value_with_every_order_page(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    fake.set_position("BTC-USDT-SWAP", "-3", "43000.5")
    fake.set_position("ETH-USDT-SWAP", "0.01", "3000.1")
    orders = [fake.add_open_order("ETH-USDT-SWAP", "sell", "1", "3100") for _ in range(5)]
    snapshot = snapshot_of(harness)
    sizes = {(p.symbol, p.idx): (p.side, p.size, p.avg_price) for p in snapshot.positions}
    assert sizes == {
        ("BTC-USDT-SWAP", 0): (Side.SELL, Decimal("0.03"), Decimal("43000.5")),
        ("ETH-USDT-SWAP", 0): (Side.BUY, Decimal("0.001"), Decimal("3000.1")),
    }
    assert snapshot.open_order_ids == set(orders)
    assert len(fake.requests(OPEN_ORDERS)) == 4  # 2 + 2 + 1, then the empty page
    assert len(fake.requests(POSITIONS)) == 1  # one reply holds every position
    assert (snapshot.venue, snapshot.category) == ("okx", "swap")
    assert snapshot.symbols == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}  # the swaps listed, explicitly
    assert snapshot.taken_at == NOW


def test_update_time_is_kept_and_there_is_no_seq(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("BTC-USDT-SWAP", "2", "43000", at=ago(minutes=5))
    (position,) = snapshot_of(harness).positions
    assert (position.seq, position.updated_at) == (None, ago(minutes=5))


def test_net_and_long_short_legs_are_kept_apart(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("ETH-USDT-SWAP", "20", "3000", pos_side="long")
    fake.set_position("ETH-USDT-SWAP", "7", "3100", pos_side="short")
    fake.set_position("BTC-USDT-SWAP", "-1", "43000")
    legs = {(p.symbol, p.idx): (p.side, p.size) for p in snapshot_of(harness).positions}
    assert legs == {
        ("ETH-USDT-SWAP", 1): (Side.BUY, Decimal("2.0")),
        ("ETH-USDT-SWAP", 2): (Side.SELL, Decimal("0.7")),
        ("BTC-USDT-SWAP", 0): (Side.SELL, Decimal("0.01")),
    }
    fake.add_fill("ETH-USDT-SWAP", "buy", "20", "3000", pos_side="long", at=ago(hours=3))
    fake.add_fill("ETH-USDT-SWAP", "sell", "7", "3100", pos_side="short", at=ago(hours=2))
    fake.add_fill("ETH-USDT-SWAP", "sell", "5", "3200", pos_side="long", at=ago(hours=1))
    fake.add_fill("BTC-USDT-SWAP", "sell", "1", "43000", at=ago(minutes=30))
    fills = fills_of(harness, ago(days=1))
    assert [(f.side, f.qty, f.idx) for f in fills] == [
        (Side.BUY, Decimal("2.0"), 1),
        (Side.SELL, Decimal("0.7"), 2),
        (Side.SELL, Decimal("0.5"), 1),
        (Side.SELL, Decimal("0.01"), 0),
    ]


def test_a_zero_row_is_flat_and_gives_way_to_a_held_row(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    fake.set_position("BTC-USDT-SWAP", "0", mgn_mode="isolated")
    fake.set_position("ETH-USDT-SWAP", "0", mgn_mode="isolated")
    fake.set_position("ETH-USDT-SWAP", "-4", "3000", mgn_mode="cross")
    snapshot = snapshot_of(harness)
    legs = {p.symbol: (p.side, p.size) for p in snapshot.positions}
    assert legs == {
        "BTC-USDT-SWAP": (None, Decimal(0)),
        "ETH-USDT-SWAP": (Side.SELL, Decimal("0.4")),
    }


def test_two_held_rows_on_one_leg_are_refused(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("ETH-USDT-SWAP", "-4", "3000", mgn_mode="cross")
    fake.set_position("ETH-USDT-SWAP", "-1", "3000", mgn_mode="isolated")
    with pytest.raises(ExchangeUnavailable, match="two held positions"):
        snapshot_of(harness)


def test_a_settle_coin_covers_only_its_instruments(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.add_instrument("BTC-USDC-SWAP", ct_val="0.0001")
    fake.add_instrument("BTC-USD-SWAP", ct_val="100")
    fake.set_position("BTC-USDC-SWAP", "10", "43000")
    fake.set_position("BTC-USD-SWAP", "-2", "43000")
    fake.set_position("ETH-USDT-SWAP", "3", "3000")
    usdt = snapshot_of(harness, settle_coin="USDT")
    assert usdt.symbols == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    assert [(p.symbol, p.size) for p in usdt.positions] == [("ETH-USDT-SWAP", Decimal("0.3"))]
    inverse = snapshot_of(harness, category="inverse", settle_coin="BTC")
    assert inverse.symbols == {"BTC-USD-SWAP"}
    assert [(p.side, p.size) for p in inverse.positions] == [(Side.SELL, Decimal(200))]  # USD
    assert snapshot_of(harness, settle_coin="BTC").symbols == set()  # no linear swap settles in BTC


def test_listed_unified_symbols_become_inst_ids(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("BTC-USDT-SWAP", "2", "43000")
    fake.set_position("ETH-USDT-SWAP", "2", "3000")
    snapshot = snapshot_of(harness, symbols=["BTC/USDT:USDT", "ETH-USDT-SWAP"])
    assert snapshot.symbols == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    assert [r.params["instId"] for r in fake.requests(POSITIONS)] == ["BTC-USDT-SWAP,ETH-USDT-SWAP"]
    only_btc = snapshot_of(harness, symbols=["BTC/USDT:USDT"])
    assert [p.symbol for p in only_btc.positions] == ["BTC-USDT-SWAP"]


def test_unified_symbols_map_both_ways_per_category(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.add_instrument("BTC-USD-251226", ct_val="100")
    fake.add_instrument("BTC-USDT-251226", ct_val="0.01")
    swap, futures = venue(harness), venue(harness, category="futures")
    inverse = venue(harness, category="inverse")
    assert harness.call(swap, "venue_symbol", "BTC/USDT:USDT") == "BTC-USDT-SWAP"
    assert harness.call(swap, "unified_symbol", "ETH-USDT-SWAP") == "ETH/USDT:USDT"
    assert harness.call(futures, "venue_symbol", "BTC/USDT:USDT-251226") == "BTC-USDT-251226"
    assert harness.call(inverse, "venue_symbol", "BTC/USD:BTC-251226") == "BTC-USD-251226"
    assert harness.call(inverse, "unified_symbol", "BTC-USD-251226") == "BTC/USD:BTC-251226"
    with pytest.raises(InvalidInput):
        harness.call(futures, "venue_symbol", "BTC/USDT:USDT")
    with pytest.raises(InvalidInput):  # coin-margined: category inverse's
        harness.call(futures, "venue_symbol", "BTC/USD:BTC-251226")


# coin-margined instruments: category inverse


def coin_margined_book(fake: FakeOkx) -> dict[str, str]:
    """Linear and coin-margined swaps and futures side by side (BTC-USD-* contracts are 100
    USD), each held, with an open order and a fill; returns the open orders by instrument.
    BTC-USD-SWAP is bought at 20000 and 30000, one contract each."""
    fake.add_instrument("BTC-USD-SWAP", ct_val="100")
    fake.add_instrument("BTC-USD-251226", ct_val="100")
    fake.add_instrument("BTC-USDT-251226", ct_val="0.01")
    for price in ("20000", "30000"):
        order = fake.add_open_order("BTC-USD-SWAP", "buy", "1", price, at=ago(hours=2))
        fake.partial_fill(order, "1", fee="-0.00000375", at=ago(hours=2))
    fake.set_position("BTC-USD-251226", "-3", "31000")
    fake.set_position("BTC-USDT-251226", "2", "43000")
    fake.set_position("BTC-USDT-SWAP", "-1", "43000")
    fake.add_fill("BTC-USDT-SWAP", "sell", "1", "43000", at=ago(hours=1))
    fake.add_fill("BTC-USD-251226", "sell", "3", "31000", at=ago(hours=1))
    return {
        inst_id: fake.add_open_order(inst_id, "buy", "1", "1000")
        for inst_id in ("BTC-USD-SWAP", "BTC-USD-251226", "BTC-USDT-SWAP", "BTC-USDT-251226")
    }


def test_inverse_reads_the_coin_margined_swaps_and_futures_in_usd(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    orders = coin_margined_book(fake)
    inverse = snapshot_of(harness, category="inverse")
    assert inverse.symbols == {"BTC-USD-SWAP", "BTC-USD-251226"}
    held = {p.symbol: (p.side, p.size, p.avg_price) for p in inverse.positions}
    assert held == {
        "BTC-USD-SWAP": (Side.BUY, Decimal(200), Decimal(24000)),  # harmonic: 200 / (1/200 + 1/300)
        "BTC-USD-251226": (Side.SELL, Decimal(300), Decimal(31000)),
    }
    assert inverse.open_order_ids == {orders["BTC-USD-SWAP"], orders["BTC-USD-251226"]}
    since = ago(days=1)
    fills = harness.call(venue(harness, category="inverse"), "fetch_executions", since)
    assert [(f.symbol, f.qty, f.fee) for f in fills] == [
        ("BTC-USD-SWAP", Decimal(100), Decimal("0.00000375")),
        ("BTC-USD-SWAP", Decimal(100), Decimal("0.00000375")),
        ("BTC-USD-251226", Decimal(300), Decimal(0)),
    ]
    reply = harness.run(harness.exchange.private_get_account_positions({"instId": "BTC-USD-SWAP"}))
    (row,) = reply["data"]
    assert (row["ccy"], row["avgPx"]) == ("BTC", "24000")  # margin, PnL and fees in the coin


def test_swap_and_futures_keep_only_the_linear_instruments(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    orders = coin_margined_book(fake)
    swap = snapshot_of(harness)
    assert swap.symbols == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    assert [p.symbol for p in swap.positions] == ["BTC-USDT-SWAP"]
    assert swap.open_order_ids == {orders["BTC-USDT-SWAP"]}
    assert [f.symbol for f in fills_of(harness, ago(days=1))] == ["BTC-USDT-SWAP"]
    futures = snapshot_of(harness, category="futures")
    assert futures.symbols == {"BTC-USDT-251226"}
    assert [(p.symbol, p.size) for p in futures.positions] == [("BTC-USDT-251226", Decimal("0.02"))]


def test_listed_coin_margined_symbols_are_read_per_instrument_type(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    coin_margined_book(fake)
    listed = venue(harness, category="inverse", symbols=["BTC/USD:BTC", "BTC-USD-251226"])
    snapshot = harness.call(listed, "fetch_snapshot")
    assert {p.symbol for p in snapshot.positions} == {"BTC-USD-SWAP", "BTC-USD-251226"}
    scopes = {(r.params["instType"], r.params["instId"]) for r in fake.requests(POSITIONS)}
    assert scopes == {("SWAP", "BTC-USD-SWAP"), ("FUTURES", "BTC-USD-251226")}
    harness.call(listed, "fetch_executions", ago(days=1))
    scopes = {(r.params["instType"], r.params["instId"]) for r in fake.requests(FILLS)}
    assert scopes == {("SWAP", "BTC-USD-SWAP"), ("FUTURES", "BTC-USD-251226")}


def test_a_listed_symbol_of_the_other_category_is_refused(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    coin_margined_book(fake)
    with pytest.raises(InvalidInput, match="BTC-USD-SWAP"):
        snapshot_of(harness, symbols=["BTC-USD-SWAP"])
    with pytest.raises(InvalidInput, match="BTC-USDT-SWAP"):
        snapshot_of(harness, category="inverse", symbols=["BTC-USDT-SWAP"])


def test_an_unknown_contract_type_fails_the_read(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.set_position("BTC-USDT-SWAP", "1", "43000")
    fake.inject(INSTRUMENTS, RowField("ctType", ""))
    with pytest.raises(ExchangeUnavailable, match="ctType"):
        snapshot_of(harness)


# fills


def test_fills_read_every_page_inside_the_window_with_posledgers_fee_sign(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    for hour in range(7):
        fake.add_fill(
            "BTC-USDT-SWAP", "buy", "3", "43000.1", fee="-0.0129", trade_id=f"t{hour}",
            at=ago(hours=hour),
        )  # fmt: skip
    fake.add_fill("BTC-USDT-SWAP", "sell", "1", "43000", fee="0.002", trade_id="rebate")
    fake.add_fill("BTC-USDT-SWAP", "buy", "1", "43000", trade_id="too old", at=ago(days=2))
    fills = fills_of(harness, ago(hours=6), ago(minutes=1))
    assert [f.exec_id for f in fills] == [f"t{hour}" for hour in reversed(range(1, 7))]
    assert {(f.qty, f.price, f.fee, f.kind) for f in fills} == {
        (Decimal("0.03"), Decimal("43000.1"), Decimal("0.0129"), ExecKind.TRADE)
    }
    assert len(fake.requests(FILLS)) == 4  # 2 + 2 + 2 rows in range, then the empty page
    (rebate,) = [f for f in fills_of(harness, ago(minutes=1)) if f.exec_id == "rebate"]
    assert rebate.fee == Decimal("-0.002")


def test_fill_kinds_follow_the_sub_type(harness: CcxtHarness, fake: FakeOkx) -> None:
    for sub_type, minutes in (("104", 4), ("127", 3), ("112", 2), ("5", 1)):
        at = ago(minutes=minutes)
        fake.add_fill("BTC-USDT-SWAP", "sell", "1", "43000", sub_type=sub_type, at=at)
    kinds = [f.kind for f in fills_of(harness, ago(hours=1))]
    assert kinds == [ExecKind.LIQUIDATION, ExecKind.ADL, ExecKind.DELIVERY, ExecKind.TRADE]


POSITION_MOVING_SUB_TYPES = {
    **dict.fromkeys(("204", "205", "206", "207", "208", "209"), ExecKind.BLOCK_TRADE),
    **dict.fromkeys(("270", "271", "272", "273", "274", "275"), ExecKind.SPREAD_TRADE),
    **dict.fromkeys(("324", "325", "326", "327", "328", "329"), ExecKind.MOVE_POSITION),
}


def test_block_spread_and_move_fills_move_positions(harness: CcxtHarness, fake: FakeOkx) -> None:
    for n, sub_type in enumerate(POSITION_MOVING_SUB_TYPES):
        ord_id = "" if sub_type.startswith("20") else None  # block trades have no order
        fake.add_fill(
            "BTC-USDT-SWAP", "buy", "2", "43000", sub_type=sub_type, trade_id=sub_type,
            ord_id=ord_id, at=ago(minutes=30 - n),
        )  # fmt: skip
    fills = fills_of(harness, ago(hours=1))
    assert {f.exec_id: f.kind for f in fills} == POSITION_MOVING_SUB_TYPES
    assert {(f.side, f.qty, f.venue_type == f.exec_id) for f in fills} == {
        (Side.BUY, Decimal("0.02"), True)
    }
    assert {f.order_id for f in fills if f.kind is ExecKind.BLOCK_TRADE} == {""}


def test_an_unknown_sub_type_is_an_unknown_fill_with_its_raw_type(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    fake.add_fill("BTC-USDT-SWAP", "sell", "1", "43000", sub_type="999", at=ago(minutes=2))
    fake.add_fill("BTC-USDT-SWAP", "buy", "1", "43000", sub_type="3", at=ago(minutes=1))
    odd, trade = fills_of(harness, ago(hours=1))
    assert (odd.kind, odd.venue_type, odd.side, odd.qty) == (
        ExecKind.UNKNOWN,
        "999",
        Side.SELL,
        Decimal("0.01"),
    )
    assert (trade.kind, trade.venue_type) == (ExecKind.TRADE, "3")


NOT_POSITION_FILLS = ("110", "111", "118", "119", "212", "213", "236", "237", "376", "377", "410")


def test_documented_sub_types_that_move_no_position_are_not_fills(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    for n, sub_type in enumerate(NOT_POSITION_FILLS):
        fake.add_fill(
            "BTC-USDT-SWAP", "buy", "1", "43000", sub_type=sub_type, at=ago(minutes=30 - n)
        )
    fake.add_fill("BTC-USDT-SWAP", "buy", "1", "43000", trade_id="real", at=ago(minutes=1))
    assert [f.exec_id for f in fills_of(harness, ago(hours=1))] == ["real"]


def test_a_trade_id_is_unique_per_instrument_only(harness: CcxtHarness, fake: FakeOkx) -> None:
    fake.add_fill("BTC-USDT-SWAP", "buy", "1", "43000", trade_id="77", at=ago(minutes=2))
    fake.add_fill("ETH-USDT-SWAP", "buy", "1", "3000", trade_id="77", at=ago(minutes=1))
    fills = fills_of(harness, ago(hours=1))
    assert [(f.symbol, f.exec_id) for f in fills] == [
        ("BTC-USDT-SWAP", "77"),
        ("ETH-USDT-SWAP", "77"),
    ]


def test_a_read_older_than_fills_history_serves_is_refused(
    harness: CcxtHarness, fake: FakeOkx
) -> None:
    with pytest.raises(ExchangeUnavailable, match="90 days"):
        fills_of(harness, ago(days=91))
    assert fake.requests(FILLS) == []


# failures


FAILED_READS: list[tuple[str, str, Fault, int]] = [
    ("positions 502", POSITIONS, HttpError(502), 0),
    ("503 maintenance", POSITIONS, HttpError(503), 0),
    ("rate limited", POSITIONS, ErrorCode("50011", "Too Many Requests", 429), 0),
    ("system busy", POSITIONS, ErrorCode("50013", "Systems are busy"), 0),
    ("no code", POSITIONS, NoCode(), 0),
    ("html body", POSITIONS, NotJson(), 0),
    ("truncated json", POSITIONS, TruncatedJson(), 0),
    ("no data", POSITIONS, NoData(), 0),
    ("timeout", POSITIONS, Slow(4.0), 0),
    ("dropped connection", POSITIONS, DropConnection(), 0),
    ("cut mid-body", POSITIONS, DropConnection(mid_body=True), 0),
    ("pos not a number", POSITIONS, RowField("pos", "1,5"), 0),
    ("pos a JSON float", POSITIONS, RowField("pos", 3.5), 0),
    ("unknown posSide", POSITIONS, RowField("posSide", "both"), 0),
    ("no instId", POSITIONS, RowField("instId", remove=True), 0),
    ("orders 502 on page 2", OPEN_ORDERS, HttpError(502), 1),
    ("orders no data on page 3", OPEN_ORDERS, NoData(), 2),
    ("orders ignore after", OPEN_ORDERS, IgnoredAfter(), 1),
    ("orders ordId missing", OPEN_ORDERS, RowField("ordId", remove=True), 0),
    ("instruments no data", INSTRUMENTS, NoData(), 0),
    ("instruments bad ctVal", INSTRUMENTS, RowField("ctVal", ""), 0),
    ("instrument not listed", INSTRUMENTS, RowField("instId", "SOL-USDT-SWAP"), 0),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "after"),
    [case[1:] for case in FAILED_READS],
    ids=[case[0] for case in FAILED_READS],
)
def test_every_failed_read_raises_and_returns_nothing(
    fake: FakeOkx, endpoint: str, fault: Fault, after: int
) -> None:
    fake.set_position("BTC-USDT-SWAP", "-3", "43000")
    fake.set_position("ETH-USDT-SWAP", "5", "3000")
    for _ in range(5):
        fake.add_open_order("ETH-USDT-SWAP", "sell", "1", "3100")
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, timeout_ms=1000) as harness:
            times = None if isinstance(fault, IgnoredAfter | DropConnection) else 1
            fake.inject(endpoint, fault, after=after, times=times)
            assert_a_failed_snapshot_heals(harness, venue(harness), positions=2)


@pytest.mark.parametrize(
    ("fault", "code", "ccxt_error"),
    [
        (ErrorCode("50011", "Too Many Requests", 429), "50011", ccxt.RateLimitExceeded),
        (ErrorCode("50013", "Systems are busy"), "50013", ccxt.ExchangeNotAvailable),
    ],
    ids=["rate limit", "busy"],
)
def test_an_error_code_is_a_rejection_with_its_code_and_ccxts_error_as_cause(
    harness: CcxtHarness, fake: FakeOkx, fault: Fault, code: str, ccxt_error: Any
) -> None:
    fake.inject(POSITIONS, fault)
    with pytest.raises(ExchangeRejected) as raised:
        snapshot_of(harness)
    assert raised.value.code == code
    assert isinstance(raised.value.__cause__, ccxt_error)


@pytest.mark.parametrize(
    ("fault", "ccxt_error"),
    [
        (HttpError(502), ccxt.ExchangeNotAvailable),
        (DropConnection(), ccxt.NetworkError),
        (Slow(4.0), ccxt.RequestTimeout),
        (NoCode(), ccxt.ExchangeError),
    ],
    ids=["502", "dropped", "timeout", "no code"],
)
def test_ccxt_errors_are_chained_as_the_cause(fake: FakeOkx, fault: Fault, ccxt_error: Any) -> None:
    assert_unavailable_because_of(fake, POSITIONS, fault, ccxt_error, venue)


@pytest.mark.parametrize(
    ("config", "code"),
    [({"secret": "wrong"}, "50113"), ({"password": "wrong"}, "50105")],
    ids=["secret", "passphrase"],
)
def test_wrong_credentials_are_an_authentication_rejection(
    fake: FakeOkx, config: dict[str, str], code: str
) -> None:
    for flavour in FLAVOURS:
        with CcxtHarness(flavour, fake, **config) as harness:
            with pytest.raises(ExchangeAuthFailed) as raised:
                snapshot_of(harness)
            assert raised.value.code == code
            assert isinstance(raised.value.__cause__, ccxt.AuthenticationError)


@pytest.mark.parametrize("code", sorted(AUTH_CODES))
def test_a_code_refusing_the_credentials_is_an_authentication_failure(
    harness: CcxtHarness, fake: FakeOkx, code: str
) -> None:
    fake.inject(POSITIONS, ErrorCode(code, "refused", 401))
    with pytest.raises(ExchangeAuthFailed) as raised:
        snapshot_of(harness)
    assert raised.value.code == code
    with pytest.raises(ExchangeAuthFailed):
        checked_reply("positions", {"code": code, "msg": "refused", "data": []})


@pytest.mark.parametrize("code", ["1", "50011", "50013", "50102", "50112"])
def test_other_codes_are_rejections_only(code: str) -> None:
    """Among them the clock's (50102, 50112): a clock comes back in step, a key does not."""
    with pytest.raises(ExchangeRejected) as raised:
        checked_reply("positions", {"code": code, "msg": "no", "data": []})
    assert not isinstance(raised.value, ExchangeAuthFailed) and raised.value.code == code


@pytest.mark.parametrize(
    "fault",
    [HttpError(502), NoData(), TruncatedJson(), RowField("fillSz", "abc"), IgnoredAfter()],
    ids=["502", "no data", "truncated", "bad size", "ignored after"],
)
def test_a_failure_on_a_later_fills_page_returns_nothing(
    harness: CcxtHarness, fake: FakeOkx, fault: Fault
) -> None:
    for hour in range(7):
        fake.add_fill("BTC-USDT-SWAP", "buy", "1", "43000", at=ago(hours=hour))
    fake.inject(FILLS, fault, after=2, times=None if isinstance(fault, IgnoredAfter) else 1)
    with pytest.raises(ExchangeUnavailable):
        fills_of(harness, ago(days=1))


# construction


def test_the_venues_satisfy_the_protocols() -> None:
    assert isinstance(CcxtVenue(ccxt.okx(), account="a", category="swap"), Venue)
    assert isinstance(AsyncCcxtVenue(accxt.okx(), account="a", category="swap"), AsyncVenue)


@pytest.mark.parametrize(
    "options",
    [{"category": "linear"}, {"category": "spot"}, {"category": "swap", "hedge_mode": True}],
    ids=["linear", "spot", "hedge_mode"],
)
def test_settings_okx_cannot_honour_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        CcxtVenue(ccxt.okx(), account="main", **options)


@pytest.mark.parametrize("exchange_id", ["binanceusdm", "bitget", "gate"])
def test_other_exchanges_are_still_refused_by_name(exchange_id: str) -> None:
    with pytest.raises(InvalidInput, match=exchange_id):
        CcxtVenue(getattr(ccxt, exchange_id)(), account="main", category="swap")


# docs


def test_the_okx_example_of_the_ccxt_page_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "ccxt.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    (example,) = [block for block in blocks if "FakeOkx" in block]
    exec(compile(example, "ccxt.md", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.splitlines() == ["BTC-USDT-SWAP 0 sell 0.03"]


def test_loading_swap_markets_only_reads_swap_instruments(fake: FakeOkx) -> None:
    exchange = ccxt.okx(fake.ccxt_config(options={"fetchMarkets": {"types": ["swap"]}}))
    exchange.load_markets()
    assert [r.params for r in fake.requests(INSTRUMENTS)] == [{"instType": "SWAP"}]
