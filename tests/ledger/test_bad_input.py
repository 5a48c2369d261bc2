"""Every refusal of docs/design.md#refusals: InvalidInput (a ValueError), and nothing written."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import (
    ExchangePosition,
    Fill,
    InvalidInput,
    Ledger,
    PositionKey,
    ReconcilePolicy,
    Side,
    Snapshot,
)
from tests.conftest import T0, key

K = key()


def fill(**overrides: Any) -> Fill:
    fields: dict[str, Any] = {
        "exec_id": "e-1",
        "order_id": "o-1",
        "side": Side.BUY,
        "qty": Decimal("0.010"),
        "price": Decimal("43000.5"),
        "exec_time": T0,
    }
    fields.update(overrides)
    return Fill(**fields)


def test_invalid_input_is_a_value_error() -> None:
    assert issubclass(InvalidInput, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("qty", 0.01),
        ("qty", Decimal(0)),
        ("qty", Decimal("-1")),
        ("qty", Decimal("NaN")),
        ("qty", Decimal("Infinity")),
        ("qty", "abc"),
        ("qty", True),
        ("price", 43000.5),
        ("price", Decimal(0)),
        ("price", Decimal("-5")),
        ("price", Decimal("sNaN")),
        ("price", Decimal("-Infinity")),
        ("fee", 0.01),
        ("fee", Decimal("NaN")),
        ("fee", Decimal("Infinity")),
        ("exec_time", datetime(2025, 1, 1)),
        ("side", "long"),
        ("side", None),
        ("kind", "bonus"),
        ("exec_id", ""),
        ("seq", 1.0),
        ("leaves_qty", Decimal("-1")),
        ("idx", 3),
    ],
)
def test_fill_refuses(field: str, value: object) -> None:
    with pytest.raises(InvalidInput):
        fill(**{field: value})


def test_fill_accepts_str_int_and_maker_rebate() -> None:
    converted = fill(qty="0.010", price=43000, fee=Decimal("-0.002"), side="Buy")
    assert converted.qty == Decimal("0.010") and isinstance(converted.qty, Decimal)
    assert converted.price == Decimal(43000)
    assert converted.fee == Decimal("-0.002")
    assert converted.side is Side.BUY


def test_times_are_normalised_to_utc() -> None:
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    assert fill(exec_time=datetime(2025, 1, 1, 12, tzinfo=plus_two)).exec_time == datetime(
        2025, 1, 1, 10, tzinfo=T0.tzinfo
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"venue": ""},
        {"symbol": "  "},
        {"idx": 3},
        {"idx": True},
        {"account": None},
    ],
)
def test_position_key_refuses(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "venue": "bybit",
        "account": "main",
        "category": "linear",
        "symbol": "BTCUSDT",
        "idx": 0,
    }
    base.update(fields)
    with pytest.raises(InvalidInput):
        PositionKey(**base)


def test_exchange_position_and_snapshot_refuse_nonsense() -> None:
    with pytest.raises(InvalidInput):
        ExchangePosition(symbol="BTCUSDT", idx=0, side=None, size=Decimal(1))
    with pytest.raises(InvalidInput):
        ExchangePosition(symbol="BTCUSDT", idx=0, side="buy", size=1.5)
    row = ExchangePosition(symbol="BTCUSDT", idx=0, side="buy", size=Decimal(1))
    with pytest.raises(InvalidInput, match="twice"):
        Snapshot(venue="bybit", account="a", category="linear", taken_at=T0, positions=[row, row])
    with pytest.raises(InvalidInput, match="outside"):
        Snapshot(
            venue="bybit",
            account="a",
            category="linear",
            taken_at=T0,
            positions=[row],
            symbols=["ETHUSDT"],
        )
    with pytest.raises(InvalidInput):
        Snapshot(venue="bybit", account="a", category="linear", taken_at=datetime(2025, 1, 1))
    with pytest.raises(InvalidInput):
        ReconcilePolicy(confirmations=0)
    with pytest.raises(InvalidInput):
        ReconcilePolicy(tolerance=0.1)


def test_flat_row_drops_a_side_given_with_zero_size() -> None:
    assert ExchangePosition(symbol="X", idx=0, side="Buy", size="0").side is None
    assert ExchangePosition(symbol="X", idx=0, side="", size="0").side is None


@pytest.mark.parametrize(
    "command",
    [
        lambda L: L.request_open(K, order_id="o", side="buy", qty=0.5, at=T0),
        lambda L: L.request_open(K, order_id="o", side="buy", qty=Decimal(0), at=T0),
        lambda L: L.request_open(K, order_id="o", side="buy", qty=Decimal("NaN"), at=T0),
        lambda L: L.request_open(K, order_id="o", side="up", qty=Decimal(1), at=T0),
        lambda L: L.request_open(K, order_id="o", side="buy", qty=1, at=datetime(2025, 1, 1)),
        lambda L: L.request_open(K, order_id="o", side="buy", qty=Decimal(1), at=T0, price=-1),
        lambda L: L.request_open(K, order_id="", side="buy", qty=Decimal(1), at=T0),
        lambda L: L.request_exit(K, order_id="x", qty=Decimal(1), at=T0),
        lambda L: L.request_open(key(idx=1), order_id="o", side="sell", qty=Decimal(1), at=T0),
        lambda L: L.record_fill(K, fill(symbol="ETHUSDT")),
        lambda L: L.record_fill(K, fill(idx=2)),
        lambda L: L.record_fill(("bybit", "BTCUSDT"), fill()),
        lambda L: L.record_fills(K, []),
        lambda L: L.record_order_end(K, order_id="o", status="Cancelled", at=datetime(2025, 1, 1)),
        lambda L: L.reconcile("not a snapshot", now=T0),
        lambda L: L.position(K, version=2, at=T0),
    ],
)
def test_commands_refuse_bad_input_and_write_nothing(ledger: Ledger, command: Any) -> None:
    with pytest.raises(InvalidInput):
        command(ledger)
    assert ledger.keys() == []
    assert ledger.history(K) == []


def test_a_refused_fill_leaves_an_existing_position_untouched(ledger: Ledger) -> None:
    ledger.record_fill(K, fill())
    before = ledger.history(K)
    with pytest.raises(InvalidInput):
        ledger.record_fills(K, [fill(exec_id="e-2"), fill(exec_id="e-3", symbol="ETHUSDT")])
    assert ledger.history(K) == before


def test_exit_side_must_oppose_the_position(ledger: Ledger) -> None:
    ledger.record_fill(K, fill())
    with pytest.raises(InvalidInput, match="must"):
        ledger.request_exit(K, order_id="x", qty=Decimal(1), side="buy", at=T0)
    state = ledger.request_exit(K, order_id="x", qty=Decimal(1), at=T0)
    assert state.pending_orders[0].side is Side.SELL


# --- issue 16: what an adversarial run found accepted, or refused with the wrong error ---------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", None),
        ("order_id", 7),
        ("qty", Decimal("1e999999")),
        ("qty", Decimal("1e-31")),
        ("price", "1e31"),
        ("fee", Decimal("-1e40")),
        ("leaves_qty", Decimal("1E+999999")),
        ("exec_id", "e\udc80"),
        ("exec_id", "bybit\x1fmain"),
        ("order_id", "o\x00"),
        ("symbol", "BTC\ud800USDT"),
    ],
)
def test_fill_refuses_what_could_not_be_kept_exactly(field: str, value: object) -> None:
    with pytest.raises(InvalidInput, match=field):
        fill(**{field: value})


def test_decimals_within_the_range_are_accepted() -> None:
    assert fill(qty=Decimal("1e-30"), price="9.99e29").qty == Decimal("1e-30")
    assert fill(fee=Decimal(0), order_id="").fee == 0


@pytest.mark.parametrize("field", ["venue", "account", "category", "symbol"])
@pytest.mark.parametrize("bad", ["a\x1fb", "a\nb", "a\x7fb", "a\x85b", "\udc00"])
def test_key_fields_refuse_control_characters_and_surrogates(field: str, bad: str) -> None:
    base: dict[str, Any] = {"venue": "bybit", "account": "main", "category": "linear"}
    base["symbol"] = "BTCUSDT"
    base[field] = bad
    with pytest.raises(InvalidInput, match=field):
        PositionKey(**base)


def test_keys_that_joined_to_the_same_stream_are_refused_not_merged() -> None:
    """PositionKey(v, a, "c\\x1fS", X) and PositionKey(v, "a\\x1fc", S, X) were one stream."""
    with pytest.raises(InvalidInput):
        PositionKey(venue="bybit", account="main", category="linear\x1fBTCUSDT", symbol="X")
    with pytest.raises(InvalidInput):
        PositionKey(venue="bybit", account="main\x1flinear", category="BTCUSDT", symbol="X")


def test_stream_ids_of_valid_keys_are_unchanged() -> None:
    assert str(K.stream_id) == "32258c54-6f34-59cf-8bdb-2cba5aa1a652"  # as be93bd9 named it


@pytest.mark.parametrize("status", [123, None, [], "", "  ", "Can\x00celled"])
def test_an_order_end_needs_a_status(ledger: Ledger, status: object) -> None:
    ledger.request_open(K, order_id="o", side="buy", qty=Decimal(1), at=T0)
    before = ledger.history(K)
    with pytest.raises(InvalidInput, match="status"):
        ledger.record_order_end(K, order_id="o", status=status, at=T0)  # type: ignore[arg-type]
    assert ledger.history(K) == before


@pytest.mark.parametrize("order_id", [None, 5, "", "o\x1f1"])
def test_requests_and_order_ends_refuse_bad_order_ids(ledger: Ledger, order_id: object) -> None:
    with pytest.raises(InvalidInput, match="order_id"):
        ledger.request_open(K, order_id=order_id, side="buy", qty=1, at=T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="order_id"):
        ledger.record_order_end(K, order_id=order_id, status="Cancelled", at=T0)  # type: ignore[arg-type]
    assert ledger.history(K) == []


@pytest.mark.parametrize("version", [-1, 0, "2", 2.0, True])
def test_position_refuses_a_version_that_is_not_a_positive_int(
    ledger: Ledger, version: object
) -> None:
    ledger.record_fill(K, fill())
    with pytest.raises(InvalidInput, match="version"):
        ledger.position(K, version=version)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [float("nan"), 0, -1, float("inf"), "5", True])
def test_open_refuses_a_timeout_that_is_not_positive_seconds(timeout: object) -> None:
    with pytest.raises(InvalidInput, match="timeout"):
        Ledger.open("memory://", timeout=timeout)  # type: ignore[arg-type]


def test_a_huge_request_is_refused_before_any_arithmetic(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput, match="qty"):
        ledger.request_open(K, order_id="o", side="buy", qty=Decimal("1e999999"), at=T0)
    assert ledger.history(K) == []
