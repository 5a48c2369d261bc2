"""Sizes are exact for every quantity the validators accept (docs/design.md#numbers).

The default decimal context keeps 28 significant digits: 1000 then 1e-28, then selling 1000,
used to leave 0E-24 (flat) where the exchange holds 1e-28. An independent oracle (Fraction)
checks random histories of buys and sells of any accepted magnitude.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from posledger import Fill, PositionKey, Side, Status
from posledger.core.decide import decide_fills, decide_request, register
from posledger.core.position import PositionState, evolve, project

T0 = datetime(2025, 11, 12, 9, 0, tzinfo=UTC)
KEY = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT")


def fresh() -> PositionState:
    return evolve(None, register(KEY, T0))


def fill(n: int, side: Side, qty: Decimal) -> Fill:
    return Fill(exec_id=f"e{n}", order_id="", side=side, qty=qty, price=Decimal(100), exec_time=T0)


def apply(state: PositionState, *fills: Fill) -> PositionState:
    after = project(state, decide_fills(state, list(fills)))
    assert after is not None
    return after


def test_a_tiny_remainder_is_kept_not_rounded_to_flat() -> None:
    state = apply(
        fresh(),
        fill(1, Side.BUY, Decimal(1000)),
        fill(2, Side.BUY, Decimal("1e-28")),
        fill(3, Side.SELL, Decimal(1000)),
    )
    assert state.size == Decimal("1e-28")
    assert state.status is Status.OPEN and state.side is Side.BUY


def test_an_order_filled_in_parts_of_very_different_magnitude_is_complete() -> None:
    start = fresh()
    requested = project(
        start,
        decide_request(
            start,
            order_id="o",
            side=Side.BUY,
            qty=Decimal("1000.0000000000000000000000000001"),
            price=None,
            at=T0,
            reduce_only=False,
        ),
    )
    assert requested is not None
    parts = [
        Fill(exec_id="a", order_id="o", side=Side.BUY, qty=Decimal(1000), price=1, exec_time=T0),
        Fill(
            exec_id="b",
            order_id="o",
            side=Side.BUY,
            qty=Decimal("1e-28"),
            price=1,
            exec_time=T0,
        ),
    ]
    state = apply(requested, *parts)
    assert state.size == Decimal("1000.0000000000000000000000000001")
    assert state.pending_orders == ()


magnitudes = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent),
    st.integers(min_value=1, max_value=10**12),
    st.integers(min_value=-30, max_value=17),
)


@given(st.lists(st.tuples(st.sampled_from(Side), magnitudes), min_size=1, max_size=40))
def test_size_is_the_exact_signed_sum_of_fills(moves: list[tuple[Side, Decimal]]) -> None:
    state = fresh()
    held = Fraction(0)
    for n, (side, qty) in enumerate(moves):
        state = apply(state, fill(n, side, qty))
        held += Fraction(qty) * side.sign
        signed = Fraction(state.size) * (state.side.sign if state.side else 0)
        assert signed == held
        assert (state.size == 0) == (held == 0)
