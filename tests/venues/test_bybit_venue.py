"""BybitVenue over a real pybit session and the fake Bybit server: complete reads, or an exception.

Every way a read can fail must raise ExchangeUnavailable (ExchangeRejected for a retCode), never
return None or part of the data: that confusion kept seed 000's phantom positions alive.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pybit.exceptions import FailedRequestError, InvalidRequestError  # type: ignore[import-untyped]

from posledger import (
    ExchangeAuthFailed,
    ExchangeMalformed,
    ExchangeRejected,
    ExchangeTruncated,
    ExchangeUnavailable,
    ExecKind,
    Fill,
    Ledger,
    PositionKey,
    Side,
)
from posledger.drivers.sync import Synchronizer
from posledger.testing.fake_bybit import (
    EXECUTIONS,
    INSTRUMENTS,
    OPEN_ORDERS,
    ORDER_HISTORY,
    POSITIONS,
    WEEK_MS,
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
from posledger.venues.base import Venue
from posledger.venues.bybit import AUTH_CODES, BybitVenue, checked_result, reply_time
from posledger.venues.common import to_ms, unreadable
from tests.conftest import T0

NOW = T0 + timedelta(days=30)


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(clock=lambda: NOW, page_size=2) as server:
        yield server


def venue_for(fake: FakeBybit, session: Any = None, **options: Any) -> BybitVenue:
    settings: dict[str, Any] = {
        "account": "main",
        "category": "linear",
        "settle_coin": "USDT",
        "clock": lambda: NOW,
    }
    return BybitVenue(session or fake.session(timeout=5.0), **{**settings, **options})


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def exit_partially(fake: FakeBybit, symbol: str, side: str, size: str, filled: str) -> str:
    """Seed 002: a position, a reduce-only exit order, and one partial fill of it."""
    fake.set_position(symbol, side, size, "1.5", at=ago(hours=2))
    exit_side = "Buy" if side == "Sell" else "Sell"
    order_id = fake.add_open_order(
        symbol, exit_side, size, "1.4", reduce_only=True, at=ago(hours=1)
    )
    fake.partial_fill(order_id, filled, fee="0.01", at=ago(minutes=30))
    return order_id


# snapshots


def test_a_snapshot_reads_every_page_with_exact_decimals(fake: FakeBybit) -> None:
    exit_partially(fake, "AGIUSDT", "Sell", "4160", "1000")
    exit_partially(fake, "SCAUSDT", "Buy", "2136.9", "100.9")
    exit_partially(fake, "HNTUSDT", "Buy", "60", "0.12")
    fake.set_position("BTCUSDT", "Buy", "0.004", "43000.5")
    fake.set_position("ETHUSDT", "Sell", "0.5", "3000")
    snapshot = venue_for(fake).fetch_snapshot()
    sizes = {(p.symbol, p.idx): (p.side, p.size) for p in snapshot.positions}
    assert sizes == {
        ("AGIUSDT", 0): (Side.SELL, Decimal("3160")),
        ("SCAUSDT", 0): (Side.BUY, Decimal("2036.0")),
        ("HNTUSDT", 0): (Side.BUY, Decimal("59.88")),
        ("BTCUSDT", 0): (Side.BUY, Decimal("0.004")),
        ("ETHUSDT", 0): (Side.SELL, Decimal("0.5")),
    }
    assert all(type(p.size) is Decimal and type(p.avg_price) is Decimal for p in snapshot.positions)
    assert len(fake.requests(POSITIONS)) == 3
    assert len(snapshot.open_order_ids or ()) == 3
    assert len(fake.requests(OPEN_ORDERS)) == 2
    assert snapshot.taken_at == NOW
    assert snapshot.symbols == {"AGIUSDT", "SCAUSDT", "HNTUSDT", "BTCUSDT", "ETHUSDT"}


def test_a_snapshot_keeps_seq_and_update_time(fake: FakeBybit) -> None:
    fake.set_position("BTCUSDT", "Buy", "0.004", "43000.5", seq=7788, at=ago(minutes=5))
    (position,) = venue_for(fake).fetch_snapshot().positions
    assert (position.seq, position.updated_at, position.avg_price) == (
        7788,
        ago(minutes=5),
        Decimal("43000.5"),
    )


def test_taken_at_is_read_before_the_first_request(fake: FakeBybit) -> None:
    requests_seen_by_clock: list[int] = []

    def clock() -> datetime:
        requests_seen_by_clock.append(len(fake.requests()))
        return NOW

    venue_for(fake, clock=clock).fetch_snapshot()
    assert requests_seen_by_clock == [0]


def test_listed_symbols_keep_flat_rows_as_flat_positions(fake: FakeBybit) -> None:
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
    snapshot = venue_for(fake, symbols=["SCAUSDT", "AGIUSDT"]).fetch_snapshot()
    flat = snapshot.position(snapshot.key("SCAUSDT"))
    assert flat is not None
    assert (flat.side, flat.size, flat.seq) == (None, Decimal(0), -1)
    assert snapshot.symbols == frozenset({"AGIUSDT", "SCAUSDT"})
    assert [r.params["symbol"] for r in fake.requests(POSITIONS)] == ["AGIUSDT", "SCAUSDT"]


def test_hedge_legs_are_kept_apart(fake: FakeBybit) -> None:
    fake.set_position("ETHUSDT", "Buy", "2", "3000", idx=1)
    fake.set_position("ETHUSDT", "Sell", "0.7", "3100", idx=2)
    snapshot = venue_for(fake).fetch_snapshot()
    long_leg = snapshot.position(snapshot.key("ETHUSDT", 1))
    short_leg = snapshot.position(snapshot.key("ETHUSDT", 2))
    assert long_leg is not None and short_leg is not None
    assert (long_leg.side, long_leg.size) == (Side.BUY, Decimal("2"))
    assert (short_leg.side, short_leg.size) == (Side.SELL, Decimal("0.7"))
    assert snapshot.position(snapshot.key("ETHUSDT", 0)) is None


# settle-coin coverage


def usdc_and_usdt_book(fake: FakeBybit) -> None:
    for n in range(3):
        fake.add_instrument(f"U{n}USDT")
        fake.add_instrument(f"C{n}PERP")
    fake.add_instrument("OLDUSDT", status="Closed")
    fake.set_position("BTCPERP", "Buy", "0.1", "43000")
    fake.set_position("AGIUSDT", "Sell", "4160", "0.25")


def test_a_settle_coin_snapshot_covers_only_the_symbols_settling_in_it(fake: FakeBybit) -> None:
    usdc_and_usdt_book(fake)
    snapshot = venue_for(fake).fetch_snapshot()
    assert snapshot.symbols == {"AGIUSDT", "OLDUSDT", "U0USDT", "U1USDT", "U2USDT"}
    assert [p.symbol for p in snapshot.positions] == ["AGIUSDT"]
    usdc = venue_for(fake, settle_coin="USDC").fetch_snapshot()
    assert usdc.symbols == {"BTCPERP", "C0PERP", "C1PERP", "C2PERP"}
    statuses = {r.params.get("status") for r in fake.requests(INSTRUMENTS)}
    assert statuses == {"Trading", "PreLaunch", "Delivering", "Closed"}
    assert len(fake.requests(INSTRUMENTS)) > 8  # every page of every status, for each venue


def test_a_usdt_snapshot_leaves_a_usdc_key_alone_and_clears_a_usdt_phantom() -> None:
    btc = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCPERP")
    eth = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT")
    taken = [ago(minutes=2)]  # Bybit's clock, which stamps the snapshots
    with (
        FakeBybit(clock=lambda: taken[-1], page_size=2) as fake,
        Ledger.open("memory://", clock=lambda: NOW) as ledger,
    ):
        usdc_and_usdt_book(fake)
        fake.add_instrument("ETHUSDT")
        venue = venue_for(fake)
        for key in (btc, eth):
            opening = Fill(
                exec_id=f"open-{key.symbol}",
                order_id="",
                side="buy",
                qty="0.1",
                price="100",
                exec_time=ago(hours=5),
            )
            ledger.record_fill(key, opening)
        for minutes in (2, 1):
            taken.append(ago(minutes=minutes))
            ledger.reconcile(venue.fetch_snapshot(), now=ago(minutes=minutes))
        assert {p.key.symbol for p in ledger.open_positions()} == {"BTCPERP", "AGIUSDT"}
        assert [type(e).__name__ for e in ledger.history(btc)] == ["KeyRegistered", "Filled"]
        assert [type(e).__name__ for e in ledger.history(eth)][-2:] == ["Reconciled", "Closed"]


def test_the_instrument_list_is_cached_and_read_again_for_a_new_symbol(fake: FakeBybit) -> None:
    usdc_and_usdt_book(fake)
    venue = venue_for(fake)
    venue.fetch_snapshot()
    reads = len(fake.requests(INSTRUMENTS))
    venue.fetch_snapshot()
    assert len(fake.requests(INSTRUMENTS)) == reads
    fake.set_position("NEWUSDT", "Buy", "5", "1")
    snapshot = venue.fetch_snapshot()
    assert "NEWUSDT" in (snapshot.symbols or ())
    assert len(fake.requests(INSTRUMENTS)) > reads


def test_a_usdt_position_the_instrument_list_does_not_know_is_unavailable(
    fake: FakeBybit,
) -> None:
    fake.add_instrument("MYSTUSDT", settle_coin="USDC")
    fake.set_position("MYSTUSDT", "Buy", "5", "1")
    with pytest.raises(ExchangeUnavailable, match="MYSTUSDT"):
        venue_for(fake).fetch_snapshot()


def test_a_failed_instrument_read_is_a_failed_snapshot(fake: FakeBybit) -> None:
    usdc_and_usdt_book(fake)
    fake.inject(INSTRUMENTS, NoList(), after=3)
    with pytest.raises(ExchangeUnavailable):
        venue_for(fake).fetch_snapshot()


@pytest.mark.parametrize(
    ("after", "code"), [(0, 10001), (2, 10016)], ids=["Trading refused", "server error"]
)
def test_only_a_refused_undocumented_status_filter_is_done_without(
    fake: FakeBybit, after: int, code: int
) -> None:
    """A refused Trading filter, or a rejection that is not about the parameters (here on the
    Delivering read), still fails the snapshot."""
    usdc_and_usdt_book(fake)
    fake.inject(INSTRUMENTS, RetCode(code, "refused"), after=after)
    with pytest.raises(ExchangeRejected) as refused:
        venue_for(fake, settle_coin="BTC", category="inverse").fetch_snapshot()
    assert refused.value.code == code


def test_a_reply_time_is_bybits_milliseconds_or_nothing() -> None:
    assert reply_time("positions", {"time": to_ms(NOW)}) == NOW
    assert reply_time("positions", {}) is None
    for malformed in ("1700000000000", -5, True, 1.5):
        with pytest.raises(ExchangeUnavailable, match="reply time"):
            reply_time("positions", {"time": malformed})


def test_the_venue_satisfies_the_venue_protocol(fake: FakeBybit) -> None:
    assert isinstance(venue_for(fake), Venue)


# failed snapshots


FAILED_READS: list[tuple[str, str, Fault, int, int | None]] = [
    ("502 on the first page", POSITIONS, HttpError(502), 0, None),
    ("502 on the last page", POSITIONS, HttpError(502), 2, None),
    ("retCode 10001", POSITIONS, RetCode(10001, "params error"), 1, 10001),
    ("no retCode", POSITIONS, NoRetCode(), 1, None),
    ("html body", POSITIONS, NotJson(), 0, None),
    ("truncated json", POSITIONS, TruncatedJson(), 1, None),
    ("no result.list", POSITIONS, NoList(), 1, None),
    ("slow reply", POSITIONS, Slow(2.5), 1, None),
    ("dropped connection", POSITIONS, DropConnection(), 1, None),
    ("cut mid-body", POSITIONS, DropConnection(mid_body=True), 1, None),
    ("size not a number", POSITIONS, RowField("size", "1,5"), 1, None),
    ("size a JSON float", POSITIONS, RowField("size", 4160.5), 0, None),
    ("unknown side", POSITIONS, RowField("side", "Long"), 0, None),
    ("no positionIdx", POSITIONS, RowField("positionIdx", remove=True), 2, None),
    ("seq not a number", POSITIONS, RowField("seq", "abc"), 0, None),
    ("updatedTime not ms", POSITIONS, RowField("updatedTime", "2025-11-12"), 0, None),
    ("open orders 502", OPEN_ORDERS, HttpError(502), 1, None),
    ("open orders no list", OPEN_ORDERS, NoList(), 0, None),
    ("open order without id", OPEN_ORDERS, RowField("orderId", ""), 0, None),
    ("open orders rejected", OPEN_ORDERS, RetCode(10016, "server error"), 0, 10016),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "after", "code"),
    [case[1:] for case in FAILED_READS],
    ids=[case[0] for case in FAILED_READS],
)
def test_every_failed_read_raises_and_returns_nothing(
    fake: FakeBybit, endpoint: str, fault: Fault, after: int, code: int | None
) -> None:
    for n in range(5):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
    for n in range(3):
        fake.add_open_order(f"S{n}USDT", "Sell", "1", "11")
    fake.inject(endpoint, fault, after=after)
    venue = venue_for(fake, session=fake.session(timeout=1.0))
    with pytest.raises(ExchangeUnavailable) as raised:
        venue.fetch_snapshot()
    if code is not None:
        assert isinstance(raised.value, ExchangeRejected)
        assert raised.value.code == code
    else:
        assert not isinstance(raised.value, ExchangeRejected)
    fake.clear_faults()
    assert len(venue.fetch_snapshot().positions) == 5


FAILURE_TYPES: list[tuple[str, Fault, type[ExchangeUnavailable]]] = [
    ("502", HttpError(502), ExchangeUnavailable),
    ("slow reply", Slow(2.5), ExchangeUnavailable),
    ("dropped connection", DropConnection(), ExchangeUnavailable),
    ("retCode 10001", RetCode(10001, "params error"), ExchangeRejected),
    ("retCode 10003", RetCode(10003, "API key is invalid."), ExchangeAuthFailed),
    ("html body", NotJson(), ExchangeMalformed),
    ("no retCode", NoRetCode(), ExchangeMalformed),
    ("no result.list", NoList(), ExchangeMalformed),
    ("size not a number", RowField("size", "1,5"), ExchangeMalformed),
    ("truncated json", TruncatedJson(), ExchangeTruncated),
    ("stuck cursor", StuckCursor(), ExchangeTruncated),
]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [case[1:] for case in FAILURE_TYPES],
    ids=[case[0] for case in FAILURE_TYPES],
)
def test_a_failed_read_says_what_kind_of_failure_it_was(
    fake: FakeBybit, fault: Fault, expected: type[ExchangeUnavailable]
) -> None:
    """Its exact type, which metrics count failed reads by (docs/operations.md#metrics): a
    transport failure is a plain ExchangeUnavailable."""
    for n in range(3):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
    fake.inject(POSITIONS, fault, times=None)
    with pytest.raises(ExchangeUnavailable) as raised:
        venue_for(fake, session=fake.session(timeout=1.0)).fetch_snapshot()
    assert type(raised.value) is expected


def test_pybit_errors_are_chained_as_the_cause(fake: FakeBybit) -> None:
    fake.inject(POSITIONS, HttpError(502))
    fake.inject(POSITIONS, RetCode(10001, "params error"), after=1)
    venue = venue_for(fake)
    with pytest.raises(ExchangeUnavailable) as unavailable:
        venue.fetch_snapshot()
    with pytest.raises(ExchangeRejected) as rejected:
        venue.fetch_snapshot()
    assert isinstance(unavailable.value.__cause__, FailedRequestError)
    assert isinstance(rejected.value.__cause__, InvalidRequestError)


def test_a_cursor_that_comes_back_ends_the_read_instead_of_looping(fake: FakeBybit) -> None:
    for n in range(3):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
    fake.inject(POSITIONS, StuckCursor(), times=None)
    with pytest.raises(ExchangeUnavailable, match="came back"):
        venue_for(fake).fetch_snapshot()
    assert len(fake.requests(POSITIONS)) == 2


def test_a_rate_limit_pybit_retries_away_still_gives_a_complete_snapshot(
    fake: FakeBybit,
) -> None:
    for n in range(3):
        fake.set_position(f"S{n}USDT", "Buy", "1", "10")
    fake.inject(POSITIONS, RetCode(10006, "Too many visits!", reset_after_ms=100), after=1)
    snapshot = venue_for(fake).fetch_snapshot()
    assert len(snapshot.positions) == 3


def test_a_rate_limit_that_outlasts_pybits_retries_is_unavailable(fake: FakeBybit) -> None:
    fake.inject(POSITIONS, RetCode(10006, "Too many visits!", reset_after_ms=100), times=None)
    with pytest.raises(ExchangeUnavailable) as raised:
        venue_for(fake).fetch_snapshot()
    assert isinstance(raised.value.__cause__, FailedRequestError)


def test_a_rate_limit_pybit_does_not_retry_is_a_rejection_with_its_code(
    fake: FakeBybit,
) -> None:
    fake.inject(POSITIONS, RetCode(10006, "Too many visits!"))
    session = fake.session(retry_codes={10002})
    with pytest.raises(ExchangeRejected) as raised:
        venue_for(fake, session=session).fetch_snapshot()
    assert raised.value.code == 10006


def test_a_rate_limit_reset_in_the_past_crashes_pybit_but_not_the_venue(
    fake: FakeBybit,
) -> None:
    fake.inject(POSITIONS, RetCode(10006, "Too many visits!", reset_after_ms=-5_000))
    with pytest.raises(ExchangeUnavailable) as raised:
        venue_for(fake).fetch_snapshot()
    assert isinstance(raised.value.__cause__, ValueError)  # pybit's time.sleep(negative)


def test_a_code_pybit_ignores_is_still_a_rejection(fake: FakeBybit) -> None:
    fake.inject(POSITIONS, RetCode(10016, "server error"))
    session = fake.session(ignore_codes={10016})
    with pytest.raises(ExchangeRejected) as raised:
        venue_for(fake, session=session).fetch_snapshot()
    assert raised.value.code == 10016


def test_pybits_reply_tuples_are_unwrapped(fake: FakeBybit) -> None:
    fake.set_position("BTCUSDT", "Buy", "0.004", "43000.5")
    session = fake.session(return_response_headers=True)
    assert len(venue_for(fake, session=session).fetch_snapshot().positions) == 1


def test_a_wrong_signature_is_a_rejection(fake: FakeBybit) -> None:
    session = fake.session(api_secret="not-the-secret")
    with pytest.raises(ExchangeAuthFailed) as raised:
        venue_for(fake, session=session).fetch_snapshot()
    assert raised.value.code == 10004


def test_a_wrong_key_is_an_authentication_failure(fake: FakeBybit) -> None:
    session = fake.session(api_key="not-the-key")
    with pytest.raises(ExchangeAuthFailed) as raised:
        venue_for(fake, session=session).fetch_snapshot()
    assert raised.value.code == 10003 and "API key is invalid" in str(raised.value)


@pytest.mark.parametrize("code", sorted(AUTH_CODES))
def test_a_code_refusing_the_credentials_is_an_authentication_failure(
    fake: FakeBybit, code: int
) -> None:
    fake.inject(EXECUTIONS, RetCode(code, "refused"))
    with pytest.raises(ExchangeAuthFailed) as raised:
        venue_for(fake).fetch_executions(ago(hours=1))
    assert raised.value.code == code
    with pytest.raises(ExchangeAuthFailed):
        checked_result("position list", {"retCode": code, "retMsg": "refused", "result": {}})


@pytest.mark.parametrize("code", [10001, 10002, 10006, 10016, 110001])
def test_other_codes_are_rejections_only(code: int) -> None:
    with pytest.raises(ExchangeRejected) as raised:
        checked_result("position list", {"retCode": code, "retMsg": "no", "result": {}})
    assert not isinstance(raised.value, ExchangeAuthFailed) and raised.value.code == code


# executions


def test_a_twenty_day_range_is_read_in_week_windows(fake: FakeBybit) -> None:
    for day in range(20):
        fake.add_execution("BTCUSDT", "Buy", "0.001", "43000", exec_id=f"e{day}", at=ago(days=day))
    fills = venue_for(fake, hedge_mode=False).fetch_executions(ago(days=20), NOW)
    windows = {
        (int(r.params["startTime"]), int(r.params["endTime"])) for r in fake.requests(EXECUTIONS)
    }
    assert [f.exec_id for f in fills] == [f"e{day}" for day in reversed(range(20))]
    assert len(windows) >= 3
    assert all(end - start <= WEEK_MS for start, end in windows)
    assert len(fake.requests(EXECUTIONS)) > len(windows)  # several pages per window too


def test_executions_of_one_millisecond_come_back_in_seq_order() -> None:
    with FakeBybit(clock=lambda: NOW, page_size=2, unsorted_ties=True) as fake:
        for seq in (7, 5, 6):
            fake.add_execution("BTCUSDT", "Sell", "1", "43000", exec_id=f"s{seq}", seq=seq)
        fake.add_execution("BTCUSDT", "Buy", "1", "43000", exec_id="early", at=ago(seconds=1))
        fills = venue_for(fake, hedge_mode=False).fetch_executions(ago(hours=1))
    assert [f.exec_id for f in fills] == ["early", "s5", "s6", "s7"]


def test_executions_are_normalised_for_every_kind(fake: FakeBybit) -> None:
    kinds = {
        "Trade": ExecKind.TRADE,
        "AdlTrade": ExecKind.ADL,
        "BustTrade": ExecKind.LIQUIDATION,
        "Delivery": ExecKind.DELIVERY,
        "Settle": ExecKind.SETTLE,
        "Funding": ExecKind.FUNDING,
    }
    for minute, exec_type in enumerate(kinds):
        fake.add_execution(
            "BTCUSDT",
            "Sell",
            "0.004",
            "43000.5",
            exec_type=exec_type,
            exec_id=exec_type,
            fee="-0.0012",
            leaves_qty="0.006",
            at=ago(minutes=10 - minute),
        )
    fills = venue_for(fake).fetch_executions(ago(hours=1))
    assert [(f.exec_id, f.kind) for f in fills] == list(kinds.items())
    first = fills[0]
    assert (first.side, first.qty, first.price, first.fee) == (
        Side.SELL,
        Decimal("0.004"),
        Decimal("43000.5"),
        Decimal("-0.0012"),
    )
    assert (first.leaves_qty, first.symbol, first.idx) == (Decimal("0.006"), "BTCUSDT", 0)
    assert first.exec_time == ago(minutes=10)
    assert first.seq is not None


POSITION_MOVING_EXEC_TYPES = (
    ("BlockTrade", "block_trade"),
    ("MovePosition", "move_position"),
    ("FutureSpread", "spread_trade"),
    ("CorporateAction", "corporate_action"),
    ("ForwardSplitSettle", "corporate_action"),
    ("ReverseSplitSettle", "corporate_action"),
)


def test_every_position_moving_exec_type_is_a_fill_of_its_kind(fake: FakeBybit) -> None:
    for minute, (exec_type, _) in enumerate(POSITION_MOVING_EXEC_TYPES):
        at = ago(minutes=10 - minute)
        fake.add_execution(
            "BTCUSDT", "Buy", "0.5", "43000", exec_type=exec_type, exec_id=exec_type, at=at
        )
    fills = venue_for(fake).fetch_executions(ago(hours=1))
    assert [(f.exec_id, f.kind.value) for f in fills] == list(POSITION_MOVING_EXEC_TYPES)
    assert all(f.kind.changes_size and f.venue_type == f.exec_id for f in fills)
    assert {(f.side, f.qty, f.price) for f in fills} == {(Side.BUY, Decimal("0.5"), Decimal(43000))}


@pytest.mark.parametrize("exec_type", ["UNKNOWN", "Dividend", "SomeFutureType"])
def test_an_unknown_exec_type_is_an_unknown_fill_with_its_raw_type(
    fake: FakeBybit, exec_type: str
) -> None:
    fake.add_execution(
        "BTCUSDT", "Sell", "1", "100", exec_type=exec_type, exec_id="odd", at=ago(minutes=2)
    )
    fake.add_execution("BTCUSDT", "Buy", "2", "101", exec_id="trade", at=ago(minutes=1))
    odd, trade = venue_for(fake).fetch_executions(ago(hours=1))
    assert (odd.exec_id, odd.kind, odd.venue_type) == ("odd", ExecKind.UNKNOWN, exec_type)
    assert (odd.side, odd.qty, odd.price) == (Side.SELL, Decimal(1), Decimal(100))
    assert (trade.kind, trade.venue_type) == (ExecKind.TRADE, "Trade")


def test_funding_is_normalised_with_the_position_size(fake: FakeBybit) -> None:
    fake.set_position("SCAUSDT", "Buy", "2136.9", "0.5")
    fake.settle_funding("SCAUSDT", fee="0.0534", price="0.51", at=ago(minutes=1))
    (funding,) = venue_for(fake).fetch_executions(ago(hours=1))
    assert (funding.kind, funding.qty, funding.fee) == (
        ExecKind.FUNDING,
        Decimal("2136.9"),
        Decimal("0.0534"),
    )


def test_the_seed_partial_exits_come_back_as_fills(fake: FakeBybit) -> None:
    exit_partially(fake, "AGIUSDT", "Sell", "4160", "1000")
    exit_partially(fake, "SCAUSDT", "Buy", "2136.9", "100.9")
    exit_partially(fake, "HNTUSDT", "Buy", "60", "0.12")
    fills = venue_for(fake).fetch_executions(ago(hours=1))
    assert {f.symbol: (f.side, f.qty, f.leaves_qty) for f in fills} == {
        "AGIUSDT": (Side.BUY, Decimal("1000"), Decimal("3160")),
        "SCAUSDT": (Side.SELL, Decimal("100.9"), Decimal("2036.0")),
        "HNTUSDT": (Side.SELL, Decimal("0.12"), Decimal("59.88")),
    }


def test_a_missed_partial_exit_is_recovered_as_a_fill_not_a_correction(
    fake: FakeBybit,
) -> None:
    key = PositionKey(venue="bybit", account="main", category="linear", symbol="AGIUSDT")
    opening = fake.add_open_order("AGIUSDT", "Sell", "4160", "0.25", at=ago(hours=3))
    opened = fake.partial_fill(opening, "4160", at=ago(hours=3))
    exit_id = fake.add_open_order(
        "AGIUSDT", "Buy", "4160", "0.24", reduce_only=True, at=ago(hours=2)
    )
    with Ledger.open("memory://", clock=lambda: NOW) as ledger:
        ledger.request_open(key, order_id=opening, side="sell", qty="4160", at=ago(hours=3))
        ledger.record_fill(
            key,
            Fill(
                exec_id=opened.exec_id,
                order_id=opening,
                side="sell",
                qty="4160",
                price="0.25",
                exec_time=ago(hours=3),
                seq=opened.seq,
            ),
        )
        ledger.request_exit(key, order_id=exit_id, qty="4160", at=ago(hours=2))
        fake.partial_fill(exit_id, "1000", at=ago(hours=1))  # the bot never hears of it
        report = Synchronizer(ledger, venue_for(fake)).run_once(now=NOW)
        position = ledger.position(key)
    assert report.fills_recovered == 1
    assert position is not None
    assert (position.side, position.size) == (Side.SELL, Decimal("3160"))


def test_hedge_executions_take_their_leg_from_the_order(fake: FakeBybit) -> None:
    fake.set_hedge_mode("ETHUSDT")
    fake.add_execution("ETHUSDT", "Buy", "2", "3000", idx=1, exec_id="open-long", at=ago(hours=5))
    fake.add_execution("ETHUSDT", "Sell", "1", "3010", idx=2, exec_id="open-short", at=ago(hours=4))
    fake.add_execution("ETHUSDT", "Sell", "1", "3020", idx=1, exec_id="trim-long", at=ago(hours=3))
    fake.set_position("ETHUSDT", "Buy", "1", "3000", idx=1)
    fake.set_position("ETHUSDT", "Sell", "1", "3010", idx=2)
    fake.settle_funding(
        "ETHUSDT", fee="0.1", price="3015", idx=1, exec_id="fund-long", at=ago(hours=1)
    )
    fake.settle_funding(
        "ETHUSDT", fee="-0.1", price="3015", idx=2, exec_id="fund-short", at=ago(hours=1)
    )
    fills = venue_for(fake).fetch_executions(ago(days=1))
    assert {f.exec_id: f.idx for f in fills} == {
        "open-long": 1,
        "open-short": 2,
        "trim-long": 1,
        "fund-long": 1,
        "fund-short": 2,
    }


def test_orders_older_than_the_window_or_still_open_are_looked_up_by_id(
    fake: FakeBybit,
) -> None:
    fake.set_hedge_mode("ETHUSDT")
    resting = fake.add_open_order("ETHUSDT", "Sell", "5", "3100", idx=2, at=ago(days=10))
    fake.partial_fill(resting, "1", at=ago(hours=2))
    fake.add_execution("ETHUSDT", "Buy", "1", "3000", idx=1, order_id="old", at=ago(days=9))
    fake.add_execution("ETHUSDT", "Buy", "1", "3000", order_id="old", at=ago(hours=1))
    venue = venue_for(fake)
    fills = venue.fetch_executions(ago(days=1))
    assert [(f.order_id, f.idx) for f in fills] == [(resting, 2), ("old", 1)]
    by_id = [r.params.get("orderId") for r in fake.requests(ORDER_HISTORY)]
    assert {"old", resting} <= set(by_id)
    fake.clear_requests()
    venue.fetch_executions(ago(days=1))
    assert fake.requests(ORDER_HISTORY) == fake.requests(OPEN_ORDERS) == []


def test_a_leg_is_looked_up_in_the_order_history_of_the_week_before_its_fill(
    fake: FakeBybit,
) -> None:
    """A hedge order created eight days ago, filled six days ago, after a Bybit restart emptied
    the closed orders of /v5/order/realtime: only the order history knows it, and only in a
    window that reaches back from the fill (its default is the last seven days)."""
    fake.set_hedge_mode("ETHUSDT")
    fake.add_execution("ETHUSDT", "Sell", "1", "3000", idx=2, order_id="aged", at=ago(days=8))
    fake.add_execution("ETHUSDT", "Sell", "1", "3000", order_id="aged", at=ago(days=6))
    fake.realtime_keeps_closed = False
    fills = venue_for(fake).fetch_executions(ago(days=7))
    assert [(f.order_id, f.idx) for f in fills] == [("aged", 2)]
    (lookup,) = [r for r in fake.requests(ORDER_HISTORY) if r.params.get("orderId") == "aged"]
    end = int(lookup.params["endTime"])
    assert end == to_ms(ago(days=6))
    assert int(lookup.params["startTime"]) == end - WEEK_MS


def test_an_open_order_is_looked_up_with_its_symbol(fake: FakeBybit) -> None:
    """Bybit refuses /v5/order/realtime for linear without symbol, baseCoin or settleCoin (the
    fake too, with retCode 10001): the lookup names the fill's symbol."""
    fake.set_hedge_mode("ETHUSDT")
    resting = fake.add_open_order("ETHUSDT", "Buy", "5", "2900", idx=1, at=ago(days=9))
    fake.partial_fill(resting, "1", at=ago(minutes=5))
    (fill,) = venue_for(fake).fetch_executions(ago(hours=1))
    assert fill.idx == 1
    (lookup,) = fake.requests(OPEN_ORDERS)[-1:]
    assert lookup.params["symbol"] == "ETHUSDT"


def test_a_hedge_trade_whose_order_cannot_be_found_is_refused(fake: FakeBybit) -> None:
    fake.set_hedge_mode("ETHUSDT")
    fake.add_execution("ETHUSDT", "Buy", "1", "3000", order_id="", at=ago(minutes=5))
    with pytest.raises(ExchangeUnavailable, match="leg is unknown"):
        venue_for(fake).fetch_executions(ago(hours=1))


def test_one_way_executions_get_idx_0_without_order_lookups(fake: FakeBybit) -> None:
    fake.add_execution("BTCUSDT", "Buy", "1", "100", at=ago(minutes=5))
    (auto,) = venue_for(fake).fetch_executions(ago(hours=1))
    (told,) = venue_for(fake, hedge_mode=False).fetch_executions(ago(hours=1))
    assert auto.idx == told.idx == 0
    assert fake.requests(ORDER_HISTORY) == []
    assert len(fake.requests(POSITIONS)) == 1  # only the auto venue asked for the mode


def test_executions_are_deduplicated_by_exec_id(fake: FakeBybit) -> None:
    for _ in range(2):
        fake.add_execution(
            "BTCUSDT", "Buy", "1", "100", exec_id="twice", order_id="o", at=ago(minutes=5)
        )
    assert [f.exec_id for f in venue_for(fake).fetch_executions(ago(hours=1))] == ["twice"]


def test_one_exec_id_with_two_payloads_is_an_inconsistent_read(fake: FakeBybit) -> None:
    fake.add_execution(
        "BTCUSDT", "Buy", "1", "100", exec_id="twice", order_id="o", at=ago(minutes=5)
    )
    fake.add_execution(
        "BTCUSDT", "Buy", "2", "100", exec_id="twice", order_id="o", at=ago(minutes=4)
    )
    with pytest.raises(ExchangeUnavailable, match="twice"):
        venue_for(fake).fetch_executions(ago(hours=1))


@pytest.mark.parametrize(
    "fault",
    [HttpError(502), NoRetCode(), NoList(), RowField("execQty", "abc"), RowField("execTime", "")],
    ids=["502", "no retCode", "no list", "bad qty", "no time"],
)
def test_a_failure_in_a_later_window_returns_nothing(fake: FakeBybit, fault: Fault) -> None:
    for day in range(20):
        fake.add_execution("BTCUSDT", "Buy", "1", "100", at=ago(days=day))
    fake.inject(EXECUTIONS, fault, after=7)
    with pytest.raises(ExchangeUnavailable):
        venue_for(fake, hedge_mode=False).fetch_executions(ago(days=20), NOW)


def test_an_empty_range_reads_nothing(fake: FakeBybit) -> None:
    assert venue_for(fake).fetch_executions(NOW, ago(days=1)) == []
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"retCode":0,"result":{"list":[{"symbol":"ETHUS', ExchangeTruncated),
        ('{"retCode":0,"result":{"list":[', ExchangeTruncated),
        ("<html><body>Service maintenance</body></html>", ExchangeMalformed),
        ('{"retCode":0,}', ExchangeMalformed),
    ],
)
def test_an_undecodable_body_is_truncated_only_where_its_json_ran_out(
    body: str, expected: type[ExchangeUnavailable]
) -> None:
    try:
        json.loads(body)
    except json.JSONDecodeError as decoding:
        try:
            raise OSError("Could not decode JSON.") from decoding
        except OSError as rewrapped:
            assert type(unreadable("Bybit positions", rewrapped)) is expected
    assert type(unreadable("Bybit positions", OSError("Connection refused"))) is (
        ExchangeUnavailable
    )
