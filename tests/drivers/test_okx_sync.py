"""Synchronizer + CcxtVenue and AsyncSynchronizer + AsyncCcxtVenue over ``ccxt.okx`` against the
fake OKX server: missed fills come back as real fills (contracts × face value), phantoms clear
after the policy's confirmations, and a failed read changes nothing.

Each scenario runs on blocking ccxt with a Ledger and on ``ccxt.async_support`` with an
AsyncLedger, on every store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from posledger import Correction, ExchangeUnavailable, Fill, Outcome, PositionKey, Side
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
    NoData,
    TruncatedJson,
)
from tests.ccxt_harness import FLAVOURS, NOW, CcxtHarness, Rig, ago, okx_with_swaps


def key(symbol: str, idx: int = 0) -> PositionKey:
    return PositionKey(venue="okx", account="main", category="swap", symbol=symbol, idx=idx)


@pytest.fixture
def fake() -> Iterator[FakeOkx]:
    with okx_with_swaps() as server:
        yield server


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, fake: FakeOkx) -> Iterator[CcxtHarness]:
    with CcxtHarness(request.param, fake) as opened:
        yield opened


@pytest.fixture
def rig(harness: CcxtHarness, ledger_url: str) -> Iterator[Rig]:
    with Rig(harness, ledger_url) as made:
        yield made


def opened(
    rig: Rig,
    fake: FakeOkx,
    position: PositionKey,
    side: str,
    contracts: str,
    qty: str,
    at: datetime,
) -> str:
    """An order the bot placed (``contracts``, as ccxt's amount) and recorded (``qty``, in
    base units), filled on the exchange and recorded too."""
    pos_side = {0: "net", 1: "long", 2: "short"}[position.idx]
    order_id = fake.add_open_order(
        position.symbol, side, contracts, "3000", pos_side=pos_side, at=at
    )
    filled = fake.partial_fill(order_id, contracts, at=at)
    rig.request_open(position, order_id=order_id, side=side, qty=qty, at=at)
    fill = Fill(
        exec_id=filled.trade_id, order_id=order_id, side=side, qty=qty, price="3000", exec_time=at
    )
    rig.record_fill(position, fill)
    return order_id


# a missed partial exit fill


def test_a_missed_partial_exit_is_recovered_as_a_real_fill(rig: Rig, fake: FakeOkx) -> None:
    btc = key("BTC-USDT-SWAP")
    opened(rig, fake, btc, "sell", "3", "0.03", ago(hours=3))
    exit_id = fake.add_open_order(
        "BTC-USDT-SWAP", "buy", "3", "2900", reduce_only=True, at=ago(hours=2)
    )
    rig.request_exit(btc, order_id=exit_id, qty="0.03", at=ago(hours=2))
    fake.partial_fill(exit_id, "1", fee="-0.0029", at=ago(hours=1))  # the bot never hears of it
    report = rig.run_once(NOW)
    assert report.recovered == {btc: 1}
    outcome = report.reconcile.outcome(btc)
    assert outcome is not None and outcome.outcome is Outcome.AGREES
    position = rig.position(btc)
    assert (position.side, position.size, position.fees) == (
        Side.SELL,
        Decimal("0.02"),
        Decimal("0.0029"),
    )
    assert rig.names(btc)[-1] == "PartiallyFilled"
    assert "Reconciled" not in rig.names(btc)
    assert rig.run_once(NOW + timedelta(minutes=1)).reconcile.events_written == 0


# execution types beyond trades


def test_a_move_and_an_unknown_sub_type_are_recovered_beside_other_keys(
    rig: Rig, fake: FakeOkx
) -> None:
    """A position moved in (subType 326) and a fill of a subType posledger does not know are
    recovered as fills that move size; the unknown one is in the round's report, and the other
    key's missed fill is recovered in the same round."""
    btc, eth = key("BTC-USDT-SWAP"), key("ETH-USDT-SWAP")
    opened(rig, fake, btc, "sell", "3", "0.03", ago(hours=3))
    exit_id = fake.add_open_order(
        "BTC-USDT-SWAP", "buy", "3", "2900", reduce_only=True, at=ago(hours=2)
    )
    rig.request_exit(btc, order_id=exit_id, qty="0.03", at=ago(hours=2))
    fake.partial_fill(exit_id, "1", at=ago(hours=1))
    opened(rig, fake, eth, "buy", "5", "0.5", ago(hours=3))
    fake.add_fill(
        "ETH-USDT-SWAP",
        "buy",
        "2",
        "3100",
        sub_type="326",
        trade_id="moved",
        ord_id="",
        at=ago(minutes=30),
    )
    fake.add_fill(
        "ETH-USDT-SWAP", "sell", "1", "3200", sub_type="999", trade_id="odd", at=ago(minutes=20)
    )
    fake.set_position("ETH-USDT-SWAP", "6", "3000")
    report = rig.run_once(NOW)
    assert report.recovered == {btc: 1, eth: 2}
    assert [(u.key, u.exec_id, u.venue_type) for u in report.unknown_executions] == [
        (eth, "odd", "999")
    ]
    assert {o.key: o.outcome for o in report.outcomes} == {btc: Outcome.AGREES, eth: Outcome.AGREES}
    assert (rig.position(btc).size, rig.position(eth).size) == (Decimal("0.02"), Decimal("0.6"))
    kinds = [e.kind for e in rig.history(eth) if hasattr(e, "kind")][-2:]
    assert kinds == ["move_position", "unknown"]


def test_sizes_recorded_with_ccxts_contract_size_agree_whatever_ctmult(
    harness: CcxtHarness, fake: FakeOkx, ledger_url: str
) -> None:
    """A bot following docs/ccxt.md records ccxt's amount × contractSize (OKX's ctVal). On an
    instrument whose ctMult is not 1 the venue's sizes are the same, so nothing is corrected."""
    fake.add_instrument("LTC-USDT-SWAP", ct_val="0.1", ct_mult="10")
    ltc = key("LTC-USDT-SWAP")
    with Rig(harness, ledger_url) as rig:
        harness.call(harness.exchange, "load_markets")
        market = harness.exchange.market("LTC/USDT:USDT")
        qty = Decimal("3") * Decimal(str(market["contractSize"]))
        opened(rig, fake, ltc, "buy", "3", str(qty), ago(hours=3))
        for minutes in (0, 1):
            report = rig.run_once(NOW + timedelta(minutes=minutes))
            assert {o.key: o.outcome for o in report.outcomes} == {ltc: Outcome.AGREES}
        assert rig.position(ltc).size == Decimal("0.3")


# phantoms


def test_a_phantom_is_cleared_after_the_policys_confirmations(rig: Rig, fake: FakeOkx) -> None:
    eth = key("ETH-USDT-SWAP")
    opened(rig, fake, eth, "buy", "5", "0.5", ago(days=10))
    take_profit = fake.add_open_order("ETH-USDT-SWAP", "sell", "5", "3480", reduce_only=True)
    fake.partial_fill(take_profit, "5", at=ago(days=8))  # older than the 7-day lookback
    first = rig.run_once(NOW)
    assert {o.key: o.outcome for o in first.outcomes} == {eth: Outcome.SUSPECT}
    assert [p.key for p in rig.open_positions()] == [eth]
    second = rig.run_once(NOW + timedelta(minutes=1))
    assert {o.key: o.correction for o in second.reconcile.corrections} == {eth: Correction.PHANTOM}
    assert rig.open_positions() == []
    assert rig.names(eth)[-2:] == ["Reconciled", "Closed"]


def test_a_failed_position_read_never_stands_for_no_positions(rig: Rig, fake: FakeOkx) -> None:
    """However many rounds fail, no position-less snapshot is made from them: the key is never
    suspected, let alone closed."""
    eth = key("ETH-USDT-SWAP")
    opened(rig, fake, eth, "buy", "5", "0.5", ago(days=10))
    before = rig.history(eth)
    fake.inject(POSITIONS, NoData(), times=None)
    for minute in range(4):
        with pytest.raises(ExchangeUnavailable):
            rig.run_once(NOW + timedelta(minutes=minute))
    assert rig.history(eth) == before
    fake.clear_faults()
    report = rig.run_once(NOW + timedelta(minutes=5))
    outcome = report.reconcile.outcome(eth)
    assert outcome is not None and outcome.outcome is Outcome.AGREES


# hedge legs


def test_long_and_short_legs_are_recovered_and_judged_apart(rig: Rig, fake: FakeOkx) -> None:
    long_leg, short_leg = key("ETH-USDT-SWAP", 1), key("ETH-USDT-SWAP", 2)
    opened(rig, fake, long_leg, "buy", "20", "2", ago(hours=4))
    opened(rig, fake, short_leg, "sell", "7", "0.7", ago(hours=4))
    closing = fake.add_open_order(
        "ETH-USDT-SWAP", "buy", "7", "2900", pos_side="short", reduce_only=True
    )
    fake.partial_fill(closing, "7", at=ago(hours=1))  # missed: the short leg is closed
    report = rig.run_once(NOW)
    assert report.recovered == {short_leg: 1}
    assert rig.position(long_leg).size == Decimal(2)
    assert rig.position(short_leg).size == Decimal(0)
    assert [p.key for p in rig.open_positions()] == [long_leg]


# failures change nothing


FAILURES: list[tuple[str, str, Fault, int]] = [
    ("positions 502", POSITIONS, HttpError(502), 0),
    ("positions cut", POSITIONS, DropConnection(mid_body=True), 0),
    ("positions no data", POSITIONS, NoData(), 0),
    ("orders second page truncated", OPEN_ORDERS, TruncatedJson(), 1),
    ("instruments busy", INSTRUMENTS, ErrorCode("50013", "Systems are busy"), 0),
    ("fills 502", FILLS, HttpError(502), 0),
    ("fills no data", FILLS, NoData(), 0),
    ("fills rate limited", FILLS, ErrorCode("50011", "Too Many Requests", 429), 0),
]


@pytest.mark.parametrize(
    ("endpoint", "fault", "after"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_failed_read_raises_and_leaves_the_ledger_unchanged(
    fake: FakeOkx, durable_url: str, flavour: str, endpoint: str, fault: Fault, after: int
) -> None:
    with CcxtHarness(flavour, fake) as harness, Rig(harness, durable_url) as rig:
        eth, btc = key("ETH-USDT-SWAP", 1), key("BTC-USDT-SWAP")
        opening = fake.add_open_order(
            "ETH-USDT-SWAP", "buy", "20", "3000", pos_side="long", at=ago(hours=4)
        )
        rig.request_open(eth, order_id=opening, side="buy", qty="2", at=ago(hours=4))
        fake.partial_fill(opening, "20", at=ago(hours=3))  # missed: recovery must fetch it
        opened(rig, fake, btc, "sell", "3", "0.03", ago(days=10))
        for _ in range(3):
            fake.add_open_order("BTC-USDT-SWAP", "buy", "1", "40000", reduce_only=True)
        before = [rig.history(k) for k in (eth, btc)]
        fake.inject(endpoint, fault, after=after, times=None)
        with pytest.raises(ExchangeUnavailable):
            rig.run_once(NOW)
        assert [rig.history(k) for k in (eth, btc)] == before
        fake.clear_faults()
        report = rig.run_once(NOW)
        assert report.recovered == {eth: 1}
        assert rig.position(eth).size == Decimal(2)
