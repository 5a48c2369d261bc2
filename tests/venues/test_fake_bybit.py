"""The fake Bybit V5 server, driven by a real pybit session: signatures, shapes, paging, faults."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError  # type: ignore[import-untyped]

from posledger.testing.fake_bybit import (
    EXECUTIONS,
    OPEN_ORDERS,
    ORDER_HISTORY,
    POSITIONS,
    WEEK_MS,
    DropConnection,
    FakeBybit,
    HttpError,
    NoList,
    NoRetCode,
    NotJson,
    RetCode,
    RowField,
    Slow,
    StuckCursor,
    TruncatedJson,
    to_ms,
)
from tests.conftest import T0

NOW = T0 + timedelta(days=30)


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(clock=lambda: NOW) as server:
        yield server


@pytest.fixture
def http(fake: FakeBybit) -> Any:
    return fake.session()


def every_page(read: Any, **query: Any) -> tuple[list[dict[str, Any]], int]:
    """All rows of a listing and how many requests it took."""
    rows: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        result = read(**query, cursor=cursor)["result"]
        rows.extend(result["list"])
        pages += 1
        cursor = result["nextPageCursor"]
        if not cursor:
            return rows, pages


def signed_get(fake: FakeBybit, query: str, *, stamp: int | None = None) -> dict[str, Any]:
    """A request signed by hand from Bybit's documented recipe, without pybit."""
    timestamp = str(int(time.time() * 1000) if stamp is None else stamp)
    origin = timestamp + fake.api_key + "5000" + query
    signature = hmac.new(fake.api_secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"{fake.url}{POSITIONS}?{query}",
        headers={
            "X-BAPI-API-KEY": fake.api_key,
            "X-BAPI-TIMESTAMP": timestamp,
            "X-BAPI-RECV-WINDOW": "5000",
            "X-BAPI-SIGN": signature,
        },
    )
    with urllib.request.urlopen(request, timeout=2) as reply:
        answer: dict[str, Any] = json.load(reply)
        return answer


# signatures


def test_a_hand_signed_request_matches_bybits_recipe(fake: FakeBybit) -> None:
    fake.set_position("BTCUSDT", "Buy", "0.004", "43000.5")
    answer = signed_get(fake, "category=linear&settleCoin=USDT")
    assert answer["retCode"] == 0
    assert answer["result"]["list"][0]["size"] == "0.004"


def test_a_stale_timestamp_is_refused_with_10002(fake: FakeBybit) -> None:
    stale = int(time.time() * 1000) - 60_000
    answer = signed_get(fake, "category=linear&settleCoin=USDT", stamp=stale)
    assert answer["retCode"] == 10002


def test_a_wrong_secret_is_refused_with_10004_and_a_wrong_key_with_10003(
    fake: FakeBybit,
) -> None:
    with pytest.raises(InvalidRequestError) as wrong_secret:
        fake.session(api_secret="not-the-secret").get_positions(category="linear", symbol="X")
    with pytest.raises(InvalidRequestError) as wrong_key:
        fake.session(api_key="not-the-key").get_positions(category="linear", symbol="X")
    assert (wrong_secret.value.status_code, wrong_key.value.status_code) == (10004, 10003)
    assert [r.authenticated for r in fake.requests(POSITIONS)] == [False, False]


def test_post_bodies_are_signed_too(fake: FakeBybit, http: Any) -> None:
    order = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market"}
    with pytest.raises(InvalidRequestError) as forged:
        fake.session(api_secret="forged").place_order(**order, qty="1")
    with pytest.raises(FailedRequestError) as unknown_route:
        http.place_order(**order, qty="1")
    assert forged.value.status_code == 10004
    assert unknown_route.value.status_code == 404  # signed correctly; order entry is not modelled


def test_server_time_needs_no_signature(fake: FakeBybit) -> None:
    answer = fake.session(api_key=None, api_secret=None).get_server_time()
    assert answer["result"]["timeSecond"] == str(to_ms(NOW) // 1000)


# positions


def test_settle_coin_lists_held_legs_only_and_symbol_lists_flat_ones(
    fake: FakeBybit, http: Any
) -> None:
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    fake.set_position("SCAUSDT", "", "0")
    by_coin = http.get_positions(category="linear", settleCoin="USDT")["result"]["list"]
    by_symbol = http.get_positions(category="linear", symbol="SCAUSDT")["result"]["list"]
    never = http.get_positions(category="linear", symbol="NEWUSDT")["result"]["list"]
    assert [(r["symbol"], r["side"], r["size"]) for r in by_coin] == [("AGIUSDT", "Sell", "4160")]
    assert [(r["side"], r["size"], r["positionIdx"]) for r in by_symbol] == [("", "0", 0)]
    assert never[0]["seq"] == -1  # Bybit's seq for a never-traded symbol


def test_a_hedge_symbol_lists_both_legs(fake: FakeBybit, http: Any) -> None:
    fake.set_position("ETHUSDT", "Buy", "2", "3000", idx=1)
    rows = http.get_positions(category="linear", symbol="ETHUSDT")["result"]["list"]
    assert [(r["positionIdx"], r["side"], r["size"]) for r in rows] == [
        (1, "Buy", "2"),
        (2, "", "0"),
    ]


def test_linear_positions_need_a_symbol_or_a_settle_coin(http: Any) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        http.get_positions(category="linear")
    assert refused.value.status_code == 10001


def test_hedge_legs_hold_only_their_own_side(fake: FakeBybit) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        fake.set_position("ETHUSDT", "Sell", "1", "3000", idx=1)
    fake.set_position("ETHUSDT", "Sell", "1", "3000")  # the refused leg switched nothing
    with pytest.raises(ValueError, match="one-way position"):
        fake.set_position("ETHUSDT", "Buy", "1", "3000", idx=1)
    fake.set_position("ETHUSDT", "", "0")
    fake.set_position("ETHUSDT", "Sell", "1", "3000", idx=2)
    with pytest.raises(ValueError, match="hedge mode"):
        fake.set_position("ETHUSDT", "Buy", "1", "3000")
    with pytest.raises(ValueError, match="only while flat"):
        fake.set_hedge_mode("ETHUSDT", False)


def test_positions_page_by_cursor(fake: FakeBybit, http: Any) -> None:
    symbols = [f"C{n}USDT" for n in range(7)]
    for symbol in symbols:
        fake.set_position(symbol, "Buy", "1", "10")
    fake.page_size = 3
    rows, pages = every_page(http.get_positions, category="linear", settleCoin="USDT")
    assert [r["symbol"] for r in rows] == symbols
    assert pages == 3
    cursors = [r.params.get("cursor") for r in fake.requests(POSITIONS)]
    assert cursors == [None, "page_token=3&", "page_token=6&"]


def test_a_limit_outside_bybits_range_is_refused(http: Any) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        http.get_positions(category="linear", settleCoin="USDT", limit=201)
    assert refused.value.status_code == 10001


# orders and executions


def test_open_orders_page_and_an_order_id_finds_closed_orders_too(
    fake: FakeBybit, http: Any
) -> None:
    ids = [fake.add_open_order("BTCUSDT", "Buy", "1", str(100 + n)) for n in range(5)]
    fake.cancel_order(ids[0])
    fake.page_size = 2
    rows, pages = every_page(http.get_open_orders, category="linear", settleCoin="USDT")
    closed = http.get_open_orders(category="linear", symbol="BTCUSDT", orderId=ids[0])["result"][
        "list"
    ]
    assert sorted(r["orderId"] for r in rows) == sorted(ids[1:])
    assert pages == 2
    assert [(r["orderId"], r["orderStatus"]) for r in closed] == [(ids[0], "Cancelled")]


def test_partial_fill_moves_the_position_and_records_the_execution(
    fake: FakeBybit, http: Any
) -> None:
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    exit_order = fake.add_open_order("AGIUSDT", "Buy", "4160", "0.24", reduce_only=True)
    fake.partial_fill(exit_order, "1000", fee="0.12")
    position = http.get_positions(category="linear", symbol="AGIUSDT")["result"]["list"][0]
    execution = http.get_executions(category="linear")["result"]["list"][0]
    order = http.get_open_orders(category="linear", symbol="AGIUSDT")["result"]["list"][0]
    assert (position["side"], position["size"], position["avgPrice"]) == ("Sell", "3160", "0.25")
    assert execution["execQty"] == "1000"
    assert execution["leavesQty"] == "3160"
    assert execution["closedSize"] == "1000"
    assert execution["seq"] == position["seq"]
    assert (order["orderStatus"], order["leavesQty"]) == ("PartiallyFilled", "3160")


def test_a_fill_that_completes_the_order_moves_it_to_the_history(
    fake: FakeBybit, http: Any
) -> None:
    order_id = fake.add_open_order("HNTUSDT", "Buy", "60", "5")
    fake.partial_fill(order_id, "59.88")
    fake.partial_fill(order_id, "0.12")
    history = http.get_order_history(category="linear")["result"]["list"]
    assert [(r["orderId"], r["orderStatus"]) for r in history] == [(order_id, "Filled")]
    assert fake.order(order_id).cum_exec_qty == Decimal("60.00")
    assert fake.position("HNTUSDT").size == Decimal("60.00")


def test_funding_carries_the_position_size_and_leaves_it_alone(fake: FakeBybit, http: Any) -> None:
    fake.set_position("SCAUSDT", "Buy", "2136.9", "0.5")
    fake.settle_funding("SCAUSDT", fee="0.0534", price="0.5")
    execution = http.get_executions(category="linear", execType="Funding")["result"]["list"][0]
    assert (execution["execType"], execution["execQty"], execution["side"]) == (
        "Funding",
        "2136.9",
        "Buy",
    )
    assert fake.position("SCAUSDT").size == Decimal("2136.9")


def test_executions_come_newest_first_and_page(fake: FakeBybit, http: Any) -> None:
    for minute in range(5):
        fake.add_execution("BTCUSDT", "Buy", "1", "100", at=NOW - timedelta(minutes=minute))
    fake.page_size = 2
    rows, pages = every_page(http.get_executions, category="linear")
    times = [int(r["execTime"]) for r in rows]
    assert times == sorted(times, reverse=True)
    assert (len(rows), pages) == (5, 3)


def test_an_execution_window_longer_than_seven_days_is_refused(http: Any) -> None:
    end = to_ms(NOW)
    week = 7 * 24 * 3600 * 1000
    assert http.get_executions(category="linear", startTime=end - week, endTime=end)
    with pytest.raises(InvalidRequestError) as refused:
        http.get_executions(category="linear", startTime=end - week - 1, endTime=end)
    assert refused.value.status_code == 10001


def test_executions_outside_the_window_are_not_listed(fake: FakeBybit, http: Any) -> None:
    fake.add_execution("BTCUSDT", "Buy", "1", "100", at=NOW - timedelta(days=8))
    fake.add_execution("BTCUSDT", "Buy", "2", "100", at=NOW - timedelta(days=1))
    rows = http.get_executions(category="linear")["result"]["list"]  # default: the last 7 days
    assert [r["execQty"] for r in rows] == ["2"]


def test_order_history_lists_closed_orders_with_their_position_idx(
    fake: FakeBybit, http: Any
) -> None:
    fake.add_execution("ETHUSDT", "Sell", "1", "3000", idx=2, order_id="short-1")
    resting = fake.add_open_order("ETHUSDT", "Buy", "1", "2900", idx=1)
    history = http.get_order_history(category="linear", symbol="ETHUSDT")["result"]["list"]
    by_id = http.get_order_history(category="linear", orderId="short-1")["result"]["list"]
    assert [(r["orderId"], r["positionIdx"]) for r in history] == [("short-1", 2)]
    assert by_id == history
    assert resting not in {r["orderId"] for r in history}


# faults


def test_faults_fire_after_the_skipped_calls_and_only_as_often_as_armed(
    fake: FakeBybit, http: Any
) -> None:
    fake.inject(POSITIONS, HttpError(502), times=2, after=1)
    assert http.get_positions(category="linear", symbol="X")["retCode"] == 0
    for _ in range(2):
        with pytest.raises(FailedRequestError):
            http.get_positions(category="linear", symbol="X")
    assert http.get_positions(category="linear", symbol="X")["retCode"] == 0


def test_a_fault_armed_for_good_stays_until_cleared(fake: FakeBybit, http: Any) -> None:
    fake.inject(None, NoRetCode(), times=None)
    for _ in range(3):
        assert "retCode" not in http.get_executions(category="linear")
    fake.clear_faults()
    assert http.get_executions(category="linear")["retCode"] == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (HttpError(502), FailedRequestError),
        (HttpError(503, "Service Unavailable"), FailedRequestError),
        (RetCode(10001, "params error"), InvalidRequestError),
        (NotJson(), FailedRequestError),
        (TruncatedJson(), FailedRequestError),
        (DropConnection(), requests.ConnectionError),
        (DropConnection(mid_body=True), requests.exceptions.ChunkedEncodingError),
        (Slow(2.5), requests.exceptions.ReadTimeout),
    ],
    ids=["502", "503", "retCode", "html", "truncated", "dropped", "cut-mid-body", "slow"],
)
def test_each_transport_fault_reaches_pybit_as_its_own_failure(
    fake: FakeBybit, fault: Any, error: type[Exception]
) -> None:
    fake.inject(OPEN_ORDERS, fault)
    with pytest.raises(error):
        fake.session(timeout=1.0).get_open_orders(category="linear", settleCoin="USDT")


def test_pybit_returns_silent_faults_as_if_they_had_succeeded(fake: FakeBybit, http: Any) -> None:
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    fake.inject(POSITIONS, NoRetCode())
    fake.inject(POSITIONS, NoList(), after=1)
    fake.inject(POSITIONS, RowField("size", 4160.0), after=2)
    fake.inject(POSITIONS, StuckCursor(), after=3)
    query = {"category": "linear", "settleCoin": "USDT"}
    assert "retCode" not in http.get_positions(**query)
    assert "list" not in http.get_positions(**query)["result"]
    assert http.get_positions(**query)["result"]["list"][0]["size"] == 4160.0
    assert http.get_positions(**query)["result"]["nextPageCursor"] == "page_token%3D0%26"


def test_pybit_retries_a_rate_limit_after_the_reset_header(fake: FakeBybit, http: Any) -> None:
    fake.inject(EXECUTIONS, RetCode(10006, "Too many visits!", reset_after_ms=100))
    started = time.monotonic()
    assert http.get_executions(category="linear")["retCode"] == 0
    assert time.monotonic() - started < 1.5
    assert len(fake.requests(EXECUTIONS)) == 2


def test_the_fake_refuses_linear_open_orders_by_id_alone(fake: FakeBybit, http: Any) -> None:
    order_id = fake.add_open_order("BTCUSDT", "Buy", "1", "100")
    with pytest.raises(InvalidRequestError, match="10001"):
        http.get_open_orders(category="linear", orderId=order_id)
    (row,) = http.get_open_orders(category="linear", symbol="BTCUSDT", orderId=order_id)["result"][
        "list"
    ]
    assert row["orderId"] == order_id


def test_the_fake_order_history_serves_the_last_week_unless_given_a_window(
    fake: FakeBybit, http: Any
) -> None:
    fake.add_execution("BTCUSDT", "Buy", "1", "100", order_id="aged", at=NOW - timedelta(days=8))
    assert http.get_order_history(category="linear", orderId="aged")["result"]["list"] == []
    start = to_ms(NOW - timedelta(days=9))
    window = {"startTime": start, "endTime": start + WEEK_MS}
    (row,) = http.get_order_history(category="linear", orderId="aged", **window)["result"]["list"]
    assert row["orderId"] == "aged"


def test_requests_are_recorded_with_their_decoded_query(fake: FakeBybit, http: Any) -> None:
    http.get_order_history(category="linear", symbol="BTCUSDT", limit=5)
    (request,) = fake.requests(ORDER_HISTORY)
    assert request.params == {"category": "linear", "limit": "5", "symbol": "BTCUSDT"}
    assert request.authenticated
    fake.clear_requests()
    assert fake.requests() == []


def test_the_url_exists_only_while_the_server_runs() -> None:
    fake = FakeBybit()
    with fake:
        assert fake.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = fake.url


# an inverse book


def test_an_inverse_book_is_in_usd_contracts_with_coin_values_and_a_harmonic_average(
    fake: FakeBybit, http: Any
) -> None:
    """Bybit's BTCUSD: 100 contracts are 100 USD, a value is in BTC (qty / price), and the
    average entry is contracts over their BTC value (Bybit's help centre, "Profit & Loss
    calculations (Inverse Contracts)")."""
    for price in ("20000", "30000"):
        order = fake.add_open_order("BTCUSD", "Buy", "100", price, category="inverse")
        fake.partial_fill(order, "100", fee="0.00000375")
    (held,) = http.get_positions(category="inverse")["result"]["list"]
    assert (held["size"], held["avgPrice"], held["positionValue"]) == ("200", "24000", "0.00833333")
    executions = http.get_executions(category="inverse")["result"]["list"]
    assert [e["execValue"] for e in executions] == ["0.00333333", "0.00500000"]
    (flat,) = http.get_positions(category="inverse", symbol="ETHUSD")["result"]["list"]
    assert (flat["side"], flat["size"]) == ("None", "0")  # inverse flat legs read "None"


def test_inverse_instruments_settle_in_their_base_coin_and_quarterlies_deliver(
    fake: FakeBybit, http: Any
) -> None:
    fake.add_instrument("BTCUSD", category="inverse")
    fake.add_instrument("BTCUSDH26", category="inverse")
    listed = http.get_instruments_info(category="inverse")["result"]["list"]
    rows = {i["symbol"]: i for i in listed}
    assert {s: (i["baseCoin"], i["settleCoin"]) for s, i in rows.items()} == {
        "BTCUSD": ("BTC", "BTC"),
        "BTCUSDH26": ("BTC", "BTC"),
    }
    assert (rows["BTCUSD"]["contractType"], rows["BTCUSD"]["deliveryTime"]) == (
        "InversePerpetual",
        "0",
    )
    delivery = datetime(2026, 3, 27, 8, tzinfo=UTC)  # the last Friday of March 2026
    assert rows["BTCUSDH26"]["contractType"] == "InverseFutures"
    assert rows["BTCUSDH26"]["deliveryTime"] == str(to_ms(delivery))
    assert rows["BTCUSD"]["lotSizeFilter"]["qtyStep"] == "1"  # one USD contract


def test_settle_coin_filters_linear_reads_and_not_inverse_ones(fake: FakeBybit, http: Any) -> None:
    """Bybit documents settleCoin as a filter of linear reads; inverse reads are documented by
    category alone, so the fake ignores the filter there and a venue must not rely on it."""
    fake.set_position("BTCUSD", "Buy", "100", "20000", category="inverse")
    fake.set_position("ETHUSD", "Sell", "50", "3000", category="inverse")
    fake.add_open_order("ETHUSD", "Buy", "50", "2900", category="inverse")
    fake.set_position("BTCPERP", "Buy", "0.1", "43000")
    listed = http.get_positions(category="inverse", settleCoin="BTC")["result"]["list"]
    assert sorted(p["symbol"] for p in listed) == ["BTCUSD", "ETHUSD"]
    orders = http.get_open_orders(category="inverse", settleCoin="BTC")["result"]["list"]
    assert [o["symbol"] for o in orders] == ["ETHUSD"]
    assert http.get_positions(category="linear", settleCoin="USDT")["result"]["list"] == []
