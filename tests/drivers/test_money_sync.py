"""The Synchronizer's money check (docs/design.md#money) through real pybit against the fake
Bybit, whose closed-pnl records come from its own books.

Seed 002 with the missed exit fill older than the recovery lookback: history cannot bring it
back, so two snapshots correct the size (``stale_quantity``); once the bot's own close has
settled, the money check adopts what the missed fill realized from the exchange's record, and
the lifecycle's booked PnL equals the exchange's closedPnl exactly. A funding row the bot never
heard of is recovered as the real event first; a lifecycle is checked once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import Fill, InvalidInput, Ledger, Outcome
from posledger.core.events import FundingSettled, MoneyReconciled
from posledger.drivers.money import MoneyChecks
from posledger.drivers.sync import Synchronizer
from posledger.testing.fake_bybit import (
    CLOSED_PNL,
    FakeBybit,
    Fault,
    HttpError,
    NotYetBooked,
    RetCode,
    TruncatedJson,
)
from posledger.venues.bybit import BybitVenue
from tests.drivers.conftest import Clock
from tests.drivers.test_bybit_sync import key

AGI = key("AGIUSDT")


def synchronizer(ledger: Ledger, fake: FakeBybit, clock: Clock, **money: Any) -> Synchronizer:
    venue = BybitVenue(
        fake.session(timeout=5), account="main", category="linear", settle_coin="USDT", clock=clock
    )
    return Synchronizer(ledger, venue, clock=clock, money=MoneyChecks(**money))


def recorded(ledger: Ledger, fill: Any, order_id: str, side: str) -> None:
    ledger.record_fill(
        AGI,
        Fill(
            exec_id=fill.exec_id,
            order_id=order_id,
            side=side,
            qty=fill.exec_qty,
            price=fill.exec_price,
            fee=fill.exec_fee,
            exec_time=fill.exec_time,
            seq=fill.seq,
        ),
    )


def traded(
    fake: FakeBybit,
    ledger: Ledger,
    clock: Clock,
    side: str,
    price: str,
    fee: str,
    hours: float,
    recorded_fee: str | None = None,
) -> None:
    """1000 AGIUSDT ``hours`` ago: the bot requests it, the exchange fills it at ``fee``, the
    bot records the fill (with ``recorded_fee`` instead, when it got the fee wrong)."""
    at = clock.ago(hours=hours)
    order = fake.add_open_order("AGIUSDT", side, "1000", price, at=at)
    ledger.request_open(AGI, order_id=order, side=side.lower(), qty="1000", at=at)
    done = fake.partial_fill(order, "1000", fee=fee, at=at)
    ledger.record_fill(
        AGI,
        Fill(exec_id=done.exec_id, order_id=order, side=side.lower(), qty="1000", price=price,
             fee=recorded_fee or fee, exec_time=done.exec_time, seq=done.seq),
    )  # fmt: skip


def seed_002_past_the_lookback(fake: FakeBybit, ledger: Ledger, clock: Clock) -> str:
    """Short 4160 @ 0.04701 (fee 0.11) ten days ago; its exit fills 1000 @ 0.04784 (fee 0.026)
    nine days ago, unseen. Returns the exit's id."""
    opening = fake.add_open_order("AGIUSDT", "Sell", "4160", "0.04701", at=clock.ago(days=10))
    ledger.request_open(AGI, order_id=opening, side="sell", qty="4160", at=clock.ago(days=10))
    recorded(
        ledger,
        fake.partial_fill(opening, "4160", fee="0.11", at=clock.ago(days=10)),
        opening,
        "sell",
    )
    exit_id = fake.add_open_order(
        "AGIUSDT", "Buy", "4160", "0.04784", reduce_only=True, at=clock.ago(days=9, hours=12)
    )
    ledger.request_exit(AGI, order_id=exit_id, qty="4160", at=clock.ago(days=9, hours=12))
    fake.partial_fill(exit_id, "1000", fee="0.026", at=clock.ago(days=9))
    return exit_id


def corrected_and_closed(fake: FakeBybit, ledger: Ledger, clock: Clock, sync: Synchronizer) -> None:
    exit_id = seed_002_past_the_lookback(fake, ledger, clock)
    outcomes = []
    for _ in range(2):
        outcomes.append(sync.run_once().reconcile.outcome(AGI).outcome)  # type: ignore[union-attr]
        clock.advance(minutes=1)
    assert outcomes == [Outcome.SUSPECT, Outcome.CORRECTED]
    close = fake.partial_fill(exit_id, "3160", price="0.04809", fee="0.08", at=clock())
    recorded(ledger, close, exit_id, "buy")


def test_the_missed_fills_pnl_is_adopted_and_the_lifecycle_equals_closed_pnl(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    sync = synchronizer(ledger, fake, clock)
    corrected_and_closed(fake, ledger, clock, sync)
    clock.advance(minutes=2)
    assert sync.run_once().money == ()  # the exchange's books are awaited for 5 minutes
    clock.advance(minutes=4)
    (first,) = sync.run_once().money  # seen once: not written until a fresh read confirms it
    assert (first.key, first.lifecycle, first.seen, first.check.events) == (AGI, 1, 1, ())
    assert first.check.difference == Decimal("-0.856")  # -0.83 and the unseen fill's 0.026
    assert not [e for e in ledger.history(AGI) if isinstance(e, MoneyReconciled)]
    clock.advance(minutes=1)
    (outcome,) = sync.run_once().money
    assert (outcome.seen, outcome.check.agrees, outcome.check.adopted) == (2, False, True)
    (event,) = [e for e in ledger.history(AGI) if isinstance(e, MoneyReconciled)]
    assert event.adopted and len(event.records) == 2
    state = ledger.position(AGI)
    assert state is not None and state.size == 0
    closed_pnl = sum((r.closed_pnl for r in fake.closed_pnl()), Decimal(0))
    assert state.booked_pnl == closed_pnl == Decimal("-4.4588")
    assert state.adopted_pnl == Decimal("-0.856") and state.unexplained_pnl == 0

    reads = len(fake.requests(CLOSED_PNL))
    clock.advance(minutes=10)
    restarted = synchronizer(ledger, fake, clock).run_once().money  # a restart checks again
    assert [(m.check.agrees, m.check.events) for m in restarted] == [(True, ())]
    assert sync.run_once().money == ()
    assert len(fake.requests(CLOSED_PNL)) == reads + 1
    assert len([e for e in ledger.history(AGI) if isinstance(e, MoneyReconciled)]) == 1


@pytest.mark.parametrize(
    "fault", [HttpError(502), TruncatedJson(), RetCode(10016, "server error")], ids=str
)
def test_a_failed_money_read_writes_nothing_and_is_tried_next_round(
    fake: FakeBybit, ledger: Ledger, clock: Clock, fault: Fault
) -> None:
    sync = synchronizer(ledger, fake, clock)
    corrected_and_closed(fake, ledger, clock, sync)
    clock.advance(minutes=6)
    before = ledger.history(AGI)
    fake.inject(CLOSED_PNL, fault)
    report = sync.run_once()
    assert report.money == () and report.money_failure
    assert ledger.history(AGI) == before
    (outcome,) = sync.run_once().money
    assert not outcome.check.agrees and outcome.check.difference == Decimal("-0.856")
    assert outcome.seen == 1 and ledger.history(AGI) == before


def test_a_difference_the_exchange_books_late_is_never_written(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    """The first check misses the close's record (the exchange has not booked it yet: the fake
    serves none), the next sees it and agrees: nothing is written."""
    sync = synchronizer(ledger, fake, clock)
    traded(fake, ledger, clock, "Sell", "0.05", "0.02", 9)
    traded(fake, ledger, clock, "Buy", "0.049", "0.01", 1)
    fake.inject(CLOSED_PNL, NotYetBooked())
    (late,) = sync.run_once().money
    assert (late.check.agrees, late.seen, late.check.events) == (False, 1, ())
    clock.advance(minutes=1)
    (booked,) = sync.run_once().money
    assert booked.check.agrees
    assert not [e for e in ledger.history(AGI) if isinstance(e, MoneyReconciled)]


def test_a_funding_row_the_bot_never_heard_of_is_recovered_and_then_agrees(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    traded(fake, ledger, clock, "Sell", "0.05", "0.02", 9)
    fake.settle_funding("AGIUSDT", fee="0.003", price="0.05", at=clock.ago(hours=8))
    traded(fake, ledger, clock, "Buy", "0.049", "-0.01", 1)
    report = synchronizer(ledger, fake, clock).run_once()
    (outcome,) = report.money
    assert outcome.check.agrees and outcome.check.events == ()
    (funding,) = [e for e in ledger.history(AGI) if isinstance(e, FundingSettled)]
    assert funding.fee == Decimal("0.003")
    state = ledger.position(AGI)
    assert state is not None and state.funding == Decimal("0.003")
    assert state.fees == Decimal("0.01")  # the maker rebate of the close counted as received


def test_a_venue_that_cannot_read_money_is_refused(ledger: Ledger) -> None:
    class Positions:
        venue, account, category = "bybit", "main", "linear"

        def fetch_snapshot(self) -> Any: ...

        def fetch_executions(self, since: datetime, until: datetime | None = None) -> Any: ...

    with pytest.raises(InvalidInput, match="fetch_money"):
        Synchronizer(ledger, Positions(), money=MoneyChecks())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="settle"):
        MoneyChecks(settle=timedelta(minutes=-1))
    with pytest.raises(InvalidInput, match="lookback"):
        MoneyChecks(lookback=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="confirmations"):
        MoneyChecks(confirmations=0)


def test_differences_are_counted_and_an_unexplained_one_alerts(
    fake: FakeBybit, ledger: Ledger, clock: Clock
) -> None:
    """The bot recorded its close's fee as paid (0.01); the exchange booked a rebate (-0.01)."""
    prometheus = pytest.importorskip("prometheus_client")
    from posledger.ops.alerts import AlertKind, Alerts
    from posledger.ops.metrics import Metrics

    registry = prometheus.CollectorRegistry()
    alerts, heard = Alerts(), []
    alerts.subscribe(heard.append)
    venue = BybitVenue(
        fake.session(timeout=5), account="main", category="linear", settle_coin="USDT", clock=clock
    )
    sync = Synchronizer(
        ledger, venue, clock=clock, money=MoneyChecks(), observers=[Metrics(registry), alerts]
    )
    traded(fake, ledger, clock, "Sell", "0.05", "0.02", 9)
    traded(fake, ledger, clock, "Buy", "0.049", "-0.01", 1, recorded_fee="0.01")
    assert sync.run_once().money[0].seen == 1
    clock.advance(minutes=1)
    (outcome,) = sync.run_once().money
    assert outcome.check.difference == Decimal("0.02") and not outcome.check.adopted
    labels = {"venue": "bybit", "account": "main", "category": "linear"}
    count = registry.get_sample_value(
        "posledger_money_differences_total", {**labels, "explained": "unexplained"}
    )
    assert count == 1
    (money,) = [a for a in heard if a.kind is AlertKind.MONEY]
    assert Decimal(money.fields["difference"]) == Decimal("0.02") and "unexplained" in money.text
