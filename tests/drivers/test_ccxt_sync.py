"""Synchronizer + CcxtVenue and AsyncSynchronizer + AsyncCcxtVenue against the fake Bybit server:
the seed incidents end the way posledger promises, and a failed read changes nothing.

Each scenario runs on blocking ccxt with a Ledger and on ``ccxt.async_support`` with an
AsyncLedger, on every store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from posledger import Correction, ExchangeUnavailable, Fill, Outcome, PositionKey, Side
from posledger.drivers.money import MoneyChecks
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
    RetCode,
    TruncatedJson,
)
from tests.ccxt_harness import FLAVOURS, NOW, CcxtHarness, Clock, Rig, ago


def key(symbol: str, idx: int = 0) -> PositionKey:
    return PositionKey(venue="bybit", account="main", category="linear", symbol=symbol, idx=idx)


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, fake: FakeBybit) -> Iterator[CcxtHarness]:
    with CcxtHarness(request.param, fake, timeout_ms=2000) as opened:
        yield opened


@pytest.fixture
def rig(harness: CcxtHarness, ledger_url: str, clock: Clock) -> Iterator[Rig]:
    with Rig(harness, ledger_url, clock=clock, settle_coin="USDT") as made:
        yield made


def opened(rig: Rig, fake: FakeBybit, symbol: str, side: str, qty: str, at: datetime) -> str:
    """An order the bot placed and recorded, filled on the exchange and recorded too."""
    order_id = fake.add_open_order(symbol, side, qty, "1.5", at=at)
    execution = fake.partial_fill(order_id, qty, at=at)
    rig.request_open(key(symbol), order_id=order_id, side=side, qty=qty, at=at)
    fill = Fill(
        exec_id=execution.exec_id,
        order_id=order_id,
        side=side,
        qty=qty,
        price="1.5",
        exec_time=at,
        seq=execution.seq,
    )
    rig.record_fill(key(symbol), fill)
    return order_id


# seed 002: a missed partial exit fill


def test_seed_002_missed_partial_exit_is_recovered_as_a_real_fill(
    rig: Rig, fake: FakeBybit
) -> None:
    agi = key("AGIUSDT")
    opened(rig, fake, "AGIUSDT", "Sell", "4160", ago(hours=3))
    exit_id = fake.add_open_order(
        "AGIUSDT", "Buy", "4160", "1.4", reduce_only=True, at=ago(hours=2)
    )
    rig.request_exit(agi, order_id=exit_id, qty="4160", at=ago(hours=2))
    fake.partial_fill(exit_id, "1000", fee="0.077", at=ago(hours=1))  # the bot never hears of it
    report = rig.run_once(NOW)
    assert report.recovered == {agi: 1}
    outcome = report.reconcile.outcome(agi)
    assert outcome is not None and outcome.outcome is Outcome.AGREES
    position = rig.position(agi)
    assert (position.side, position.size, position.fees) == (
        Side.SELL,
        Decimal(3160),
        Decimal("0.077"),
    )
    assert rig.names(agi)[-1] == "PartiallyFilled"
    assert "Reconciled" not in rig.names(agi)
    assert rig.run_once(NOW + timedelta(minutes=1)).reconcile.events_written == 0


# seed 000: phantoms and a failed open


def test_seed_000_phantoms_are_cleared_after_two_confirmations(rig: Rig, fake: FakeBybit) -> None:
    eth, sol, btc = key("ETHUSDT"), key("SOLUSDT"), key("BTCUSDT")
    fake.add_instrument("BTCUSDT")
    opened(rig, fake, "ETHUSDT", "Buy", "0.5", ago(days=10))
    opened(rig, fake, "SOLUSDT", "Sell", "10", ago(days=10))
    # Take-profit and stop-loss closed both 8 days ago: older than the 7-day lookback.
    fake.add_execution("ETHUSDT", "Sell", "0.5", "3480", at=ago(days=8))
    fake.add_execution("SOLUSDT", "Buy", "10", "150", at=ago(days=8))
    fake.set_position("ETHUSDT", "", "0")
    fake.set_position("SOLUSDT", "", "0")
    rig.request_open(btc, order_id="never-worked", side="buy", qty="0.01", at=ago(minutes=10))
    assert len(rig.open_positions()) == 2

    first = rig.run_once(NOW)
    assert {o.key: o.outcome for o in first.outcomes} == {
        eth: Outcome.SUSPECT,
        sol: Outcome.SUSPECT,
        btc: Outcome.SUSPECT,
    }
    assert len(rig.open_positions()) == 2
    second = rig.run_once(NOW + timedelta(minutes=1))
    assert {o.key: o.correction for o in second.reconcile.corrections} == {
        eth: Correction.PHANTOM,
        sol: Correction.PHANTOM,
        btc: Correction.UNFILLED_OPEN,
    }
    assert rig.open_positions() == []
    assert rig.names(eth)[-2:] == ["Reconciled", "Closed"]


def test_phantoms_whose_exits_are_in_history_close_as_real_fills(rig: Rig, fake: FakeBybit) -> None:
    eth = key("ETHUSDT")
    opened(rig, fake, "ETHUSDT", "Buy", "0.5", ago(hours=5))
    take_profit = fake.add_open_order("ETHUSDT", "Sell", "0.5", "3480", reduce_only=True)
    fake.partial_fill(take_profit, "0.5", at=ago(hours=1))
    report = rig.run_once(NOW)
    assert report.recovered == {eth: 1}
    assert rig.open_positions() == []
    assert rig.names(eth)[-2:] == ["Filled", "Closed"]
    assert "Reconciled" not in rig.names(eth)


# hedge legs


def test_hedge_legs_are_recovered_and_judged_apart(rig: Rig, fake: FakeBybit) -> None:
    long_leg, short_leg = key("ETHUSDT", 1), key("ETHUSDT", 2)
    fake.set_hedge_mode("ETHUSDT")
    for leg, side, qty in ((long_leg, "Buy", "2"), (short_leg, "Sell", "0.7")):
        order = fake.add_open_order("ETHUSDT", side, qty, "3000", idx=leg.idx, at=ago(hours=4))
        execution = fake.partial_fill(order, qty, at=ago(hours=4))
        rig.record_fill(
            leg,
            Fill(
                exec_id=execution.exec_id,
                order_id=order,
                side=side,
                qty=qty,
                price="3000",
                exec_time=ago(hours=4),
                seq=execution.seq,
            ),
        )
    closing = fake.add_open_order("ETHUSDT", "Buy", "0.7", "2900", idx=2, reduce_only=True)
    fake.partial_fill(closing, "0.7", at=ago(hours=1))  # missed: the short leg is closed
    report = rig.run_once(NOW)
    assert report.recovered == {short_leg: 1}
    assert rig.position(long_leg).size == Decimal(2)
    assert rig.position(short_leg).size == Decimal(0)
    assert [p.key for p in rig.open_positions()] == [long_leg]


# settle coins


def test_a_usdt_sync_leaves_usdc_keys_alone(rig: Rig, fake: FakeBybit) -> None:
    btc_usdc, eth = key("BTCPERP"), key("ETHUSDT")
    fake.add_instrument("ETHUSDT")
    fake.set_position("BTCPERP", "Buy", "0.1", "43000", at=ago(days=20))
    for position in (btc_usdc, eth):
        rig.record_fill(
            position,
            Fill(
                exec_id=f"old-{position.symbol}",
                order_id="",
                side="buy",
                qty="0.1",
                price="100",
                exec_time=ago(days=20),
            ),
        )
    rig.run_once(NOW)
    rig.run_once(NOW + timedelta(minutes=1))
    assert [p.key for p in rig.open_positions()] == [btc_usdc]
    assert rig.names(btc_usdc) == ["KeyRegistered", "Filled"]
    assert rig.names(eth)[-2:] == ["Reconciled", "Closed"]


# failures change nothing


FAILURES: list[tuple[str, str, Fault, int]] = [
    ("positions 502", POSITIONS, HttpError(502), 0),
    ("positions cut", POSITIONS, DropConnection(mid_body=True), 0),
    ("positions second page no list", POSITIONS, NoList(), 1),
    ("open orders truncated", OPEN_ORDERS, TruncatedJson(), 0),
    ("instruments rejected", INSTRUMENTS, RetCode(10016, "server error"), 0),
    ("executions 502", EXECUTIONS, HttpError(502), 0),
    ("executions no list", EXECUTIONS, NoList(), 0),
    ("order history 502", ORDER_HISTORY, HttpError(502), 0),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "after"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failed_read_raises_and_leaves_the_ledger_unchanged(
    fake: FakeBybit, durable_url: str, flavour: str, endpoint: str, fault: Fault, after: int
) -> None:
    fake.set_hedge_mode("ETHUSDT")  # so recovery reads order history for the leg
    with (
        CcxtHarness(flavour, fake, timeout_ms=2000) as harness,
        Rig(harness, durable_url, settle_coin="USDT") as rig,
    ):
        eth = key("ETHUSDT", 1)
        opening = fake.add_open_order("ETHUSDT", "Buy", "2", "3000", idx=1, at=ago(hours=4))
        rig.request_open(eth, order_id=opening, side="buy", qty="2", at=ago(hours=4))
        fake.partial_fill(opening, "2", at=ago(hours=3))  # missed: recovery must fetch it
        for n in range(3):
            fake.set_position(f"S{n}USDT", "Buy", "1", "10")
        keys = [eth, key("S0USDT")]
        before = [rig.history(k) for k in keys]
        fake.inject(endpoint, fault, after=after, times=None)
        with pytest.raises(ExchangeUnavailable):
            rig.run_once(NOW)
        assert [rig.history(k) for k in keys] == before
        fake.clear_faults()
        report = rig.run_once(NOW)
        assert report.recovered == {eth: 1}
        assert rig.position(eth).size == Decimal(2)


# the money check through ccxt, blocking and asyncio


def test_a_closed_lifecycle_is_money_checked_through_ccxt(
    harness: CcxtHarness, fake: FakeBybit, ledger_url: str, clock: Clock
) -> None:
    """Opened and closed with the fills the exchange booked, except the close's fee: the bot
    recorded it as paid (0.01), the exchange booked a maker rebate (-0.01)."""
    agi = key("AGIUSDT")
    with Rig(harness, ledger_url, clock=clock, settle_coin="USDT", money=MoneyChecks()) as rig:
        for side, price, fee, recorded_fee, at in (
            ("Sell", "0.05", "0.02", "0.02", ago(hours=9)),
            ("Buy", "0.049", "-0.01", "0.01", ago(hours=1)),
        ):
            order_id = fake.add_open_order("AGIUSDT", side, "1000", price, at=at)
            done = fake.partial_fill(order_id, "1000", fee=fee, at=at)
            rig.request_open(agi, order_id=order_id, side=side, qty="1000", at=at)
            rig.record_fill(
                agi,
                Fill(exec_id=done.exec_id, order_id=order_id, side=side, qty="1000",
                     price=price, fee=recorded_fee, exec_time=at, seq=done.seq),
            )  # fmt: skip
        assert rig.run_once(NOW).money[0].seen == 1
        (checked,) = rig.run_once(NOW + timedelta(minutes=1)).money
        assert (checked.key, checked.lifecycle, checked.check.agrees) == (agi, 1, False)
        assert checked.check.difference == Decimal("0.02") and not checked.check.adopted
        assert rig.run_once(NOW + timedelta(minutes=2)).money == ()
        assert rig.names(agi)[-1] == "MoneyReconciled"
