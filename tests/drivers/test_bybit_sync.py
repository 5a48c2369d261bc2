"""The Synchronizer over BybitVenue, real pybit and the fake Bybit server: the seed incidents end
to end.

Seed 000: a failed read of any kind raises ExchangeUnavailable and leaves the ledger exactly as it
was; positions closed on the exchange are closed in the ledger by the fills history explains, and
as phantoms (after the confirmations) where it explains nothing. Seed 002: missed partial exit
fills come back as the executions they were, not as corrections.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import (
    Correction,
    ExchangeUnavailable,
    ExecKind,
    Fill,
    Ledger,
    Outcome,
    PositionKey,
    Side,
)
from posledger.drivers.sync import Synchronizer
from posledger.testing.fake_bybit import (
    EXECUTIONS,
    OPEN_ORDERS,
    POSITIONS,
    DropConnection,
    FakeBybit,
    Fault,
    HttpError,
    NoList,
    NoRetCode,
    NotJson,
    RetCode,
    Slow,
)
from posledger.venues.bybit import BybitVenue
from tests.drivers.conftest import Clock
from tests.helpers import event_names, last_event


def key(symbol: str, idx: int = 0) -> PositionKey:
    return PositionKey(venue="bybit", account="main", category="linear", symbol=symbol, idx=idx)


def all_keys(ledger: Ledger) -> list[PositionKey]:
    return [state.key for state in ledger.positions()]


def synchronizer(ledger: Ledger, fake: FakeBybit, clock: Clock, **session: Any) -> Synchronizer:
    settings = {"timeout": 0.5, **session}
    venue = BybitVenue(
        fake.session(**settings),
        account="main",
        category="linear",
        settle_coin="USDT",
        clock=clock,
    )
    return Synchronizer(ledger, venue, clock=clock)


def open_with_exit(
    fake: FakeBybit, ledger: Ledger, clock: Clock, symbol: str, side: str, size: str
) -> str:
    """A position both sides know (its opening fill recorded), and a reduce-only exit order the
    bot recorded before sending it; returns the exit's order id."""
    k = key(symbol)
    opening = fake.add_open_order(symbol, side, size, "1.5", at=clock.ago(hours=3))
    opened = fake.partial_fill(opening, size, at=clock.ago(hours=3))
    ledger.request_open(k, order_id=opening, side=side, qty=size, at=clock.ago(hours=3))
    ledger.record_fill(
        k,
        fill_of(opened.exec_id, opening, side, size, "1.5", clock.ago(hours=3), opened.seq),
    )
    exit_side = "Buy" if side == "Sell" else "Sell"
    exit_id = fake.add_open_order(
        symbol, exit_side, size, "1.4", reduce_only=True, at=clock.ago(hours=2)
    )
    ledger.request_exit(k, order_id=exit_id, qty=size, price="1.4", at=clock.ago(hours=2))
    return exit_id


def fill_of(
    exec_id: str, order_id: str, side: str, qty: str, price: str, at: datetime, seq: int
) -> Fill:
    return Fill(
        exec_id=exec_id, order_id=order_id, side=side, qty=qty, price=price, exec_time=at, seq=seq
    )


# seed 002: missed partial exits


def test_missed_partial_exit_fills_are_recovered_as_executions(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    exits = {
        "AGIUSDT": open_with_exit(fake, ledger, clock, "AGIUSDT", "Sell", "4160"),
        "SCAUSDT": open_with_exit(fake, ledger, clock, "SCAUSDT", "Buy", "2136.9"),
        "HNTUSDT": open_with_exit(fake, ledger, clock, "HNTUSDT", "Buy", "60"),
    }
    fake.partial_fill(exits["AGIUSDT"], "600", fee="0.01", at=clock.ago(minutes=50))
    fake.partial_fill(exits["AGIUSDT"], "400", fee="0.01", at=clock.ago(minutes=40))
    fake.partial_fill(exits["SCAUSDT"], "100.9", at=clock.ago(minutes=30))
    fake.partial_fill(exits["HNTUSDT"], "0.12", at=clock.ago(minutes=20))
    fake.clear_requests()
    report = synchronizer(ledger, fake, clock).run_once()
    assert report.recovered == {key("AGIUSDT"): 2, key("SCAUSDT"): 1, key("HNTUSDT"): 1}
    sizes = {k.symbol: ledger.position(k).size for k in all_keys(ledger)}  # type: ignore[union-attr]
    assert sizes == {
        "AGIUSDT": Decimal("3160"),
        "SCAUSDT": Decimal("2036.0"),
        "HNTUSDT": Decimal("59.88"),
    }
    assert {o.outcome for o in report.outcomes} == {Outcome.AGREES}
    assert event_names(ledger, key("AGIUSDT"))[-2:] == ["PartiallyFilled", "PartiallyFilled"]
    assert all("Reconciled" not in event_names(ledger, k) for k in all_keys(ledger))
    assert len(fake.requests(EXECUTIONS)) >= 2  # four executions, pages of two
    assert len(fake.requests(POSITIONS)) >= 2


def test_the_last_exit_fill_completes_the_order_and_closes_the_position(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    exit_id = open_with_exit(fake, ledger, clock, "AGIUSDT", "Sell", "4160")
    fake.partial_fill(exit_id, "1000", at=clock.ago(minutes=40))
    fake.partial_fill(exit_id, "3160", at=clock.ago(minutes=20))
    synchronizer(ledger, fake, clock).run_once()
    assert event_names(ledger, key("AGIUSDT"))[-3:] == ["PartiallyFilled", "Filled", "Closed"]
    assert last_event(ledger, key("AGIUSDT"), "Closed").reason == "filled"
    assert ledger.open_positions() == []


def test_funding_on_the_whole_position_leaves_its_size_alone(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    exit_id = open_with_exit(fake, ledger, clock, "SCAUSDT", "Buy", "2136.9")
    funding = fake.settle_funding("SCAUSDT", fee="0.0534", price="1.5", at=clock.ago(minutes=90))
    assert funding.exec_qty == Decimal("2136.9")
    fake.partial_fill(exit_id, "100.9", at=clock.ago(minutes=30))
    report = synchronizer(ledger, fake, clock).run_once()
    position = ledger.position(key("SCAUSDT"))
    assert report.recovered == {key("SCAUSDT"): 2}
    assert position is not None
    assert (position.size, position.funding) == (Decimal("2036.0"), Decimal("0.0534"))
    assert event_names(ledger, key("SCAUSDT"))[-2:] == ["FundingSettled", "PartiallyFilled"]
    assert last_event(ledger, key("SCAUSDT"), "FundingSettled").kind == ExecKind.FUNDING


def test_hedge_legs_are_recovered_each_on_its_own_leg(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    fake.set_hedge_mode("ETHUSDT")
    long_leg, short_leg = key("ETHUSDT", 1), key("ETHUSDT", 2)
    buy = fake.add_open_order("ETHUSDT", "Buy", "2", "3000", idx=1, at=clock.ago(hours=4))
    sell = fake.add_open_order("ETHUSDT", "Sell", "1", "3010", idx=2, at=clock.ago(hours=4))
    ledger.request_open(long_leg, order_id=buy, side="buy", qty="2", at=clock.ago(hours=4))
    ledger.request_open(short_leg, order_id=sell, side="sell", qty="1", at=clock.ago(hours=4))
    fake.partial_fill(buy, "2", at=clock.ago(hours=3))
    fake.partial_fill(sell, "1", at=clock.ago(hours=3))
    sync = synchronizer(ledger, fake, clock)
    assert sync.run_once().recovered == {long_leg: 1, short_leg: 1}
    trim = fake.add_open_order(
        "ETHUSDT", "Sell", "1", "3050", idx=1, reduce_only=True, at=clock.ago(hours=2)
    )
    ledger.request_exit(long_leg, order_id=trim, qty="1", at=clock.ago(hours=2))
    fake.partial_fill(trim, "0.5", at=clock.ago(minutes=30))
    clock.advance(minutes=1)
    assert sync.run_once().recovered == {long_leg: 1}
    legs = [ledger.position(k) for k in (long_leg, short_leg)]
    assert [(p.side, p.size) for p in legs if p] == [
        (Side.BUY, Decimal("1.5")),
        (Side.SELL, Decimal("1")),
    ]
    assert "Reconciled" not in event_names(ledger, long_leg) + event_names(ledger, short_leg)


# execution types beyond trades


def test_a_missed_block_trade_is_recovered_with_its_price_and_pnl(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    agi = key("AGIUSDT")
    open_with_exit(fake, ledger, clock, "AGIUSDT", "Sell", "4160")
    fake.add_execution(
        "AGIUSDT", "Buy", "1000", "1.2", exec_type="BlockTrade", exec_id="block",
        at=clock.ago(minutes=30),
    )  # fmt: skip
    fake.set_position("AGIUSDT", "Sell", "3160", "1.5")
    report = synchronizer(ledger, fake, clock).run_once()
    assert report.recovered == {agi: 1}
    assert report.unknown_executions == ()
    block = last_event(ledger, agi, "Filled")
    assert (block.exec_id, block.kind, block.venue_type) == ("block", "block_trade", "BlockTrade")
    position = ledger.position(agi)
    assert position is not None
    assert (position.size, position.realized_pnl) == (Decimal(3160), Decimal(300))
    assert "Reconciled" not in event_names(ledger, agi)


def open_long(fake: FakeBybit, ledger: Ledger, clock: Clock, symbol: str, size: str) -> None:
    """A long both sides know, its opening fill recorded."""
    opening = fake.add_open_order(symbol, "Buy", size, "3000", at=clock.ago(hours=3))
    opened = fake.partial_fill(opening, size, at=clock.ago(hours=3))
    ledger.request_open(key(symbol), order_id=opening, side="buy", qty=size, at=clock.ago(hours=3))
    fill = fill_of(opened.exec_id, opening, "Buy", size, "3000", clock.ago(hours=3), opened.seq)
    ledger.record_fill(key(symbol), fill)


def test_an_unknown_exec_type_blocks_no_key_and_is_reported(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    """An execution type posledger does not know moves its key by its signed quantity (here
    closing ETHUSDT, as the exchange confirms), is listed in the round's report, and the other
    keys' missed fills are recovered in the same round."""
    eth = key("ETHUSDT")
    exit_id = open_with_exit(fake, ledger, clock, "AGIUSDT", "Sell", "4160")
    fake.partial_fill(exit_id, "1000", at=clock.ago(minutes=40))
    open_long(fake, ledger, clock, "ETHUSDT", "1")
    fake.add_execution(
        "ETHUSDT", "Sell", "1", "3100", exec_type="Novel", exec_id="novel", at=clock.ago(minutes=20)
    )
    fake.set_position("ETHUSDT", "", "0")
    report = synchronizer(ledger, fake, clock).run_once()
    assert report.recovered == {key("AGIUSDT"): 1, eth: 1}
    (unknown,) = report.unknown_executions
    assert (unknown.key, unknown.exec_id, unknown.venue_type) == (eth, "novel", "Novel")
    assert {o.key: o.outcome for o in report.outcomes} == {
        key("AGIUSDT"): Outcome.AGREES,
        eth: Outcome.AGREES,
    }
    assert ledger.position(key("AGIUSDT")).size == Decimal(3160)  # type: ignore[union-attr]
    assert ledger.position(eth).size == 0  # type: ignore[union-attr]
    assert last_event(ledger, eth, "Filled").kind == "unknown"
    assert event_names(ledger, eth)[-2:] == ["Filled", "Closed"]


def test_an_unknown_exec_type_the_exchange_refutes_is_corrected(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    """An unknown execution that did not move the position on the exchange (the position's seq
    stays below its own) is refuted by the snapshots: they are not stale."""
    eth = key("ETHUSDT")
    open_long(fake, ledger, clock, "ETHUSDT", "1")
    novel = fake.add_execution(
        "ETHUSDT", "Sell", "1", "3100", exec_type="Novel", at=clock.ago(minutes=20)
    )  # the exchange's position stays long 1: the execution moved nothing
    streamed = Fill(
        exec_id=novel.exec_id, order_id=novel.order_id, side="sell", qty="1", price="3100",
        exec_time=novel.exec_time, seq=novel.seq, kind="unknown", venue_type="Novel",
    )  # fmt: skip
    ledger.record_fill(eth, streamed)  # as the stream would
    sync = synchronizer(ledger, fake, clock)
    assert [o.outcome for o in sync.run_once().outcomes] == [Outcome.SUSPECT]
    clock.advance(minutes=1)
    report = sync.run_once()
    assert {o.key: o.correction for o in report.reconcile.corrections} == {eth: Correction.ADOPTED}
    assert ledger.position(eth).size == 1  # type: ignore[union-attr]


def test_same_millisecond_fills_crossing_zero_replay_in_seq_order(
    ledger: Ledger, clock: Clock
) -> None:
    """A sell of 2 against a long of 1 fills twice in one millisecond: 1 at 102 closes the long
    (seq n), 1 at 98 opens a short (seq n+1). Bybit lists them out of order (its docs warn of
    it); replayed in seq order, the lifecycles split as the exchange split them."""
    with FakeBybit(clock=clock, page_size=2, unsorted_ties=True) as fake:
        k = key("ETHUSDT")
        opening = fake.add_open_order("ETHUSDT", "Buy", "1", "100", at=clock.ago(hours=1))
        opened = fake.partial_fill(opening, "1", at=clock.ago(hours=1))
        ledger.request_open(k, order_id=opening, side="buy", qty="1", at=clock.ago(hours=1))
        ledger.record_fill(
            k, fill_of(opened.exec_id, opening, "Buy", "1", "100", clock.ago(hours=1), opened.seq)
        )
        flip = fake.add_open_order("ETHUSDT", "Sell", "2", "98", at=clock.ago(minutes=5))
        closing = fake.partial_fill(flip, "1", price="102", at=clock.ago(minutes=5))
        opening_short = fake.partial_fill(flip, "1", price="98", at=clock.ago(minutes=5))
        report = synchronizer(ledger, fake, clock).run_once()
    assert report.recovered == {k: 2}
    fills = [e.exec_id for e in ledger.history(k) if hasattr(e, "exec_id")]
    assert fills[-2:] == [closing.exec_id, opening_short.exec_id]
    position = ledger.position(k)
    assert position is not None and position.last_closed is not None
    assert (position.side, position.size, position.avg_entry_price) == (
        Side.SELL,
        Decimal(1),
        Decimal(98),
    )
    assert position.last_closed.realized_pnl == Decimal(2)
    assert "Reconciled" not in event_names(ledger, k)


def test_a_refused_status_filter_is_reported_and_leaves_keys_outside_coverage_alone(
    ledger: Ledger, clock: Clock
) -> None:
    """Bybit refuses the status filters it does not document: the round still runs, says so,
    corrects a phantom on a Trading symbol, and never judges the ETHUSDT key (its symbol is
    being delivered, so no longer in the coverage)."""
    with FakeBybit(clock=clock, refuse_undocumented_statuses=True) as fake:
        fake.add_instrument("BTCUSDT")
        fake.add_instrument("ETHUSDT", status="Delivering")
        for symbol in ("BTCUSDT", "ETHUSDT"):
            ledger.record_fill(
                key(symbol),
                fill_of(f"open-{symbol}", "o", "Buy", "1", "100", clock.ago(hours=3), 1),
            )
        sync = synchronizer(ledger, fake, clock)
        first = sync.run_once()
        clock.advance(minutes=1)
        second = sync.run_once()
    assert first.caveats == second.caveats
    (caveat,) = first.caveats
    assert "Delivering, Closed" in caveat
    assert {o.key.symbol for o in first.outcomes + second.outcomes} == {"BTCUSDT"}
    assert [o.correction for o in second.outcomes] == [Correction.PHANTOM]
    assert [p.key.symbol for p in ledger.open_positions()] == ["ETHUSDT"]


def test_a_fast_host_clock_does_not_make_a_later_fill_look_absorbed(
    ledger: Ledger, clock: Clock
) -> None:
    """The bot's host runs 60 s fast, Bybit's clock is right. Snapshots are stamped with
    Bybit's reply time, so a liquidation 20 s after the correcting snapshot (recorded without
    a seq, as from ccxt's unified trades) is applied, not taken as already counted."""

    def fast() -> datetime:
        return clock() + timedelta(seconds=60)

    eth = key("ETHUSDT")
    with FakeBybit(clock=clock) as fake:
        fake.set_position("ETHUSDT", "Buy", "1", "3000", at=clock.ago(hours=1))
        venue = BybitVenue(
            fake.session(timeout=2), account="main", category="linear", settle_coin="USDT",
            clock=fast,
        )  # fmt: skip
        sync = Synchronizer(ledger, venue, clock=fast)
        sync.run_once()
        clock.advance(seconds=10)
        corrected = sync.run_once()
    assert [o.correction for o in corrected.reconcile.corrections] == [Correction.ADOPTED]
    assert last_event(ledger, eth, "Reconciled").snapshot_taken_at == clock()
    clock.advance(seconds=20)
    liquidation = Fill(
        exec_id="liq", order_id="", side="sell", qty="1", price="2900", exec_time=clock(),
        kind="liquidation",
    )  # fmt: skip
    ledger.record_fill(eth, liquidation)
    assert last_event(ledger, eth, "Filled").absorbed is False
    assert ledger.open_positions() == []


# seed 000: failed reads and phantoms


FAULTS: list[tuple[str, str, Fault]] = [
    ("positions 502", POSITIONS, HttpError(502)),
    ("positions retCode", POSITIONS, RetCode(10001, "params error")),
    ("positions without retCode", POSITIONS, NoRetCode()),
    ("positions not json", POSITIONS, NotJson()),
    ("positions without result.list", POSITIONS, NoList()),
    ("positions slower than the timeout", POSITIONS, Slow(1.0)),
    ("positions connection dropped", POSITIONS, DropConnection()),
    ("open orders 502", OPEN_ORDERS, HttpError(502)),
    ("open orders without retCode", OPEN_ORDERS, NoRetCode()),
    ("executions 502", EXECUTIONS, HttpError(502)),
    ("executions retCode", EXECUTIONS, RetCode(10016, "server error")),
    ("executions without retCode", EXECUTIONS, NoRetCode()),
    ("executions not json", EXECUTIONS, NotJson()),
    ("executions without result.list", EXECUTIONS, NoList()),
    ("executions slower than the timeout", EXECUTIONS, Slow(1.0)),
    ("executions connection dropped", EXECUTIONS, DropConnection()),
]


def seed_000(fake: FakeBybit, ledger: Ledger, clock: Clock) -> tuple[PositionKey, PositionKey]:
    """ETHUSDT closed on the exchange by a take-profit fill the bot never recorded; SOLUSDT
    closed too, by nothing the history still shows."""
    eth, sol = key("ETHUSDT"), key("SOLUSDT")
    fake.add_instrument("SOLUSDT")  # listed by Bybit, though nothing of it is left to show
    exit_id = open_with_exit(fake, ledger, clock, "ETHUSDT", "Buy", "0.5")
    ledger.record_fill(sol, fill_of("sol-open", "sol-1", "Buy", "10", "150", clock.ago(days=9), 7))
    fake.partial_fill(exit_id, "0.5", at=clock.ago(minutes=30))
    return eth, sol


@pytest.mark.parametrize(
    ("endpoint", "fault"), [case[1:] for case in FAULTS], ids=[case[0] for case in FAULTS]
)
def test_every_failed_read_raises_and_changes_nothing(
    fake: FakeBybit, clock: Clock, endpoint: str, fault: Fault
) -> None:
    with Ledger.open("memory://", clock=clock) as ledger:
        eth, sol = seed_000(fake, ledger, clock)
        sync = synchronizer(ledger, fake, clock, timeout=0.3, max_retries=1)
        before = {k: ledger.history(k) for k in all_keys(ledger)}
        fake.inject(endpoint, fault, times=None)
        for _ in range(3):
            clock.advance(minutes=1)
            with pytest.raises(ExchangeUnavailable):
                sync.run_once()
        assert {k: ledger.history(k) for k in all_keys(ledger)} == before
        assert {p.key for p in ledger.open_positions()} == {eth, sol}
        assert sync.last_good_snapshot_at is None or endpoint == EXECUTIONS


def test_after_the_outage_history_closes_one_and_confirmations_the_other(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    eth, sol = seed_000(fake, ledger, clock)
    sync = synchronizer(ledger, fake, clock)
    before = {k: ledger.history(k) for k in all_keys(ledger)}
    fake.inject(POSITIONS, HttpError(502), times=2)
    for _ in range(2):
        clock.advance(minutes=1)
        with pytest.raises(ExchangeUnavailable):
            sync.run_once()
    assert {k: ledger.history(k) for k in all_keys(ledger)} == before
    clock.advance(minutes=1)
    first = sync.run_once()
    assert first.recovered == {eth: 1}
    assert last_event(ledger, eth, "Closed").reason == "filled"
    assert first.reconcile.outcome(sol).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    assert [p.key for p in ledger.open_positions()] == [sol]
    clock.advance(minutes=1)
    second = sync.run_once()
    assert second.reconcile.outcome(sol).correction is Correction.PHANTOM  # type: ignore[union-attr]
    assert event_names(ledger, sol)[-2:] == ["Reconciled", "Closed"]
    assert ledger.open_positions() == []
