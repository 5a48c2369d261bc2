"""Inverse (coin-margined) contracts: the same position rules as linear, with inverse arithmetic
(docs/design.md#inverse). Literal inputs first, then random histories against an independent
oracle that works in exact fractions from the average entry price, not from a running cost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posledger import Fill, PositionKey, PositionState, Side
from posledger.core.decide import decide_fills, register
from posledger.core.events import Closed, PositionEvent, Reconciled
from posledger.core.position import evolve, project
from posledger.testing.strategies import decimals_qty, fees, prices

T0 = datetime(2025, 11, 12, 9, 0, tzinfo=UTC)
INVERSE = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
LINEAR = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT")
OKX_COIN = PositionKey(venue="okx", account="main", category="inverse", symbol="BTC-USD-SWAP")
BUY, SELL = Side.BUY, Side.SELL
Trade = tuple[Side, str, str] | tuple[Side, str, str, str]
TWENTY_EIGHT = Context(prec=28)


def replay(key: PositionKey, trades: Sequence[Trade]) -> tuple[PositionState, list[PositionEvent]]:
    state = evolve(None, register(key, T0))
    written: list[PositionEvent] = []
    for n, (side, qty, price, *fee) in enumerate(trades):
        fill = Fill(
            exec_id=f"e{n}",
            order_id="",
            side=side,
            qty=Decimal(qty),
            price=Decimal(price),
            fee=Decimal(fee[0]) if fee else Decimal(0),
            exec_time=T0 + timedelta(seconds=n + 1),
            seq=n + 1,
        )
        events = decide_fills(state, [fill])
        after = project(state, events)
        assert after is not None
        state, written = after, written + events
    return state, written


def exact(value: Fraction) -> Decimal:
    """A fraction to 28 significant digits, the precision a figure is stored with."""
    return TWENTY_EIGHT.divide(Decimal(value.numerator), Decimal(value.denominator))


WORKED = [(BUY, "100", "20000"), (BUY, "100", "30000"), (SELL, "200", "25000")]


@pytest.mark.parametrize("key", [INVERSE, OKX_COIN], ids=["bybit inverse", "okx coin-margined"])
def test_the_worked_example_averages_harmonically_and_realizes_coin(key: PositionKey) -> None:
    held, _ = replay(key, WORKED[:2])
    assert held.avg_entry_price == Decimal(24000)
    closed, events = replay(key, WORKED)
    expected = exact(200 * (Fraction(1, 24000) - Fraction(1, 25000)))
    assert expected == Decimal("0.0003333333333333333333333333333")
    assert closed.realized_pnl == expected
    assert [e.realized_pnl for e in events if isinstance(e, Closed)] == [expected]
    assert closed.size == 0 and closed.avg_entry_price is None


def test_a_linear_key_reads_the_same_fills_arithmetically() -> None:
    held, _ = replay(LINEAR, WORKED[:2])
    closed, _ = replay(LINEAR, WORKED)
    assert (held.avg_entry_price, closed.realized_pnl) == (Decimal(25000), Decimal(0))


def test_a_short_loses_coin_when_the_price_rises() -> None:
    short = [(SELL, "100", "20000"), (SELL, "100", "30000"), (BUY, "200", "25000")]
    state, _ = replay(INVERSE, short)
    assert state.realized_pnl == -Decimal("0.0003333333333333333333333333333")


def test_partial_closes_add_up_to_the_whole_close() -> None:
    state, events = replay(
        INVERSE, [(BUY, "200", "24000"), (SELL, "50", "25000"), (SELL, "150", "30000")]
    )
    whole = 50 * (Fraction(1, 24000) - Fraction(1, 25000)) + 150 * (
        Fraction(1, 24000) - Fraction(1, 30000)
    )
    assert state.realized_pnl == exact(whole)
    assert [e.realized_pnl for e in events if isinstance(e, Closed)] == [exact(whole)]


def test_a_flip_closes_in_coin_and_opens_the_rest_at_the_fill_price() -> None:
    state, events = replay(INVERSE, [(BUY, "100", "20000"), (SELL, "300", "25000")])
    assert [e.realized_pnl for e in events if isinstance(e, Closed)] == [Decimal("0.001")]
    assert (state.side, state.size, state.avg_entry_price) == (SELL, Decimal(200), Decimal(25000))
    assert state.cost_basis == Decimal("0.008")


def test_fees_and_funding_are_coin_amounts_kept_apart_from_trading_pnl() -> None:
    state, _ = replay(
        INVERSE, [(BUY, "100", "20000", "0.0000025"), (SELL, "100", "25000", "-1E-7")]
    )
    assert state.fees == Decimal("0.0000024")
    assert state.realized_pnl == Decimal("0.001")


def test_a_correction_adopts_the_exchange_average_as_an_inverse_cost() -> None:
    state = evolve(None, register(INVERSE, T0))
    reconciled = Reconciled(
        originator_id=INVERSE.stream_id,
        originator_version=2,
        timestamp=T0,
        kind="stale_quantity",
        before_side=None,
        before_size=Decimal(0),
        after_side="buy",
        after_size=Decimal(100),
        after_avg_price=Decimal(20000),
        snapshot_taken_at=T0,
        snapshot_seq=None,
        snapshot_avg_price=Decimal(20000),
        confirmations=2,
        cleared_orders=[],
    )
    state = evolve(state, reconciled)
    assert state.cost_basis == Decimal("0.005")
    fill = Fill(
        exec_id="close",
        order_id="",
        side=SELL,
        qty=Decimal(100),
        price=Decimal(25000),
        exec_time=T0 + timedelta(minutes=1),
    )
    after = project(state, decide_fills(state, [fill]))
    assert after is not None and after.realized_pnl == Decimal("0.001")


# --- random histories against an oracle --------------------------------------------------------


def oracle(
    inverse: bool, trades: Sequence[tuple[Side, Decimal, Decimal]]
) -> tuple[Fraction, Fraction | None, Fraction]:
    """Signed size, average entry and realized PnL in exact fractions, from the textbook
    formulas: a linear average is the qty-weighted mean price and closing realizes
    (exit − avg) × qty; an inverse average is the qty-weighted harmonic mean and closing realizes
    (1/avg − 1/exit) × qty; the long side's sign in both."""
    size, avg, pnl = Fraction(0), None, Fraction(0)
    for side, qty_, price_ in trades:
        qty, price, sign = Fraction(qty_), Fraction(price_), side.sign
        if size * sign < 0:
            closing = min(qty, abs(size))
            assert avg is not None
            held = 1 if size > 0 else -1
            gain = (1 / avg - 1 / price) if inverse else (price - avg)
            pnl += gain * closing * held
            size += closing * sign
            qty -= closing
            if size == 0:
                avg = None
        if qty > 0:
            if avg is None:
                avg = price
            elif inverse:
                avg = (abs(size) + qty) / (abs(size) / avg + qty / price)
            else:
                avg = (avg * abs(size) + price * qty) / (abs(size) + qty)
            size += qty * sign
    return size, avg, pnl


TRADES = st.lists(
    st.tuples(
        st.sampled_from((BUY, SELL)),
        decimals_qty(min_value="1", max_value="5000", places=0),
        prices(min_value="100", max_value="90000", places=1),
    ),
    max_size=30,
)


@given(inverse=st.booleans(), trades=TRADES)
def test_random_histories_agree_with_the_oracle(
    inverse: bool, trades: list[tuple[Side, Decimal, Decimal]]
) -> None:
    key = INVERSE if inverse else LINEAR
    state, _ = replay(key, [(side, str(qty), str(price)) for side, qty, price in trades])
    size, avg, pnl = oracle(inverse, trades)
    assert Fraction(state.signed_size) == size
    if avg is None:
        assert state.avg_entry_price is None
    else:
        assert state.avg_entry_price is not None
        assert abs(Fraction(state.avg_entry_price) - avg) <= avg * Fraction(1, 10**25)
    scale = sum(
        (Fraction(q) / Fraction(p) if inverse else Fraction(q) * Fraction(p)) for _, q, p in trades
    )
    assert abs(Fraction(state.realized_pnl) - pnl) <= (1 + scale) * Fraction(1, 10**24)


@given(trades=TRADES, fee=fees(min_value="-0.001", max_value="0.001", places=8))
def test_fees_add_up_in_coin_whatever_the_history(
    trades: list[tuple[Side, Decimal, Decimal]], fee: Decimal
) -> None:
    state, _ = replay(INVERSE, [(s, str(q), str(p), str(fee)) for s, q, p in trades])
    assert state.fees == fee * len(trades)


@pytest.mark.parametrize(
    ("venue", "category", "symbol"),
    [
        ("bybit", "linear", "FOOBAR"),
        ("bybit", "inverse", "USDBTC"),
        ("okx", "swap", "BTCUSDT"),
        ("okx", "swap", "BTC-USD_UM-SWAP"),
        ("okx", "swap", "BTC-USDT"),
        ("binance", "linear", "BTCUSDT"),
    ],
)
def test_a_symbol_of_no_documented_pattern_has_no_settle_coin(
    venue: str, category: str, symbol: str
) -> None:
    key = PositionKey(venue=venue, account="main", category=category, symbol=symbol)
    assert key.settle_coin is None


@pytest.mark.parametrize(
    ("venue", "category", "symbol", "coin"),
    [
        ("bybit", "inverse", "BTCUSD", "BTC"),
        ("bybit", "inverse", "ETHUSDH26", "ETH"),
        ("bybit", "linear", "BTCUSDT", "USDT"),
        ("bybit", "linear", "BTCUSDT-26DEC25", "USDT"),
        ("bybit", "linear", "BTCPERP", "USDC"),
        ("bybit", "linear", "ETHUSDC", "USDC"),
        ("bybit", "linear", "ETH-26DEC25", "USDC"),
        ("okx", "swap", "BTC-USDT-SWAP", "USDT"),
        ("okx", "futures", "BTC-USDC-251226", "USDC"),
        ("okx", "inverse", "BTC-USD-SWAP", "BTC"),
        ("okx", "inverse", "ETH-USD-251226", "ETH"),
    ],
)
def test_settle_coins_follow_the_venues_symbol_naming(
    venue: str, category: str, symbol: str, coin: str
) -> None:
    key = PositionKey(venue=venue, account="main", category=category, symbol=symbol)
    assert key.settle_coin == coin
