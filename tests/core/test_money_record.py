"""``MoneyRecord``: the exchange's record of one close, validated like every other input."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from posledger import InvalidInput
from posledger.core.money import MoneyRecord
from tests.conftest import T0, key

FIELDS: dict[str, object] = {
    "key": key("BTCUSDT"),
    "record_id": "o-1",
    "closed_at": T0,
    "closed_size": "1.5",
    "trading_pnl": "12.5",
    "fees": "-0.01",
    "net_pnl": "12.51",
}


def test_amounts_are_exact_decimals_and_funding_may_be_unknown() -> None:
    record = MoneyRecord(**FIELDS)  # type: ignore[arg-type]
    assert (record.closed_size, record.fees, record.funding, record.penalty) == (
        Decimal("1.5"),
        Decimal("-0.01"),
        None,
        Decimal(0),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", "BTCUSDT"),
        ("record_id", ""),
        ("closed_at", datetime(2025, 1, 1)),
        ("closed_size", "0"),
        ("trading_pnl", 1.5),
        ("fees", "NaN"),
        ("net_pnl", None),
        ("funding", "x"),
        ("penalty", "1e999999"),
    ],
)
def test_bad_input_is_invalid_input_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(InvalidInput, match="PositionKey" if field == "key" else field):
        MoneyRecord(**{**FIELDS, field: value})  # type: ignore[arg-type]
