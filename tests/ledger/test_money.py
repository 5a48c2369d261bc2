"""``Ledger.check_money`` on SQLite and PostgreSQL (docs/design.md#money): seed 002's missed
exit fill is adopted from the exchange's record, a rebate nobody explains is one explicit event,
a checked window is not checked twice, and the store still verifies clean."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from posledger import InvalidInput, Ledger
from posledger.audit import history_rows, verify
from posledger.core.events import MoneyReconciled
from posledger.core.money import MoneyPolicy, MoneyRecord
from tests.conftest import T0, key
from tests.helpers import fill, row, snapshot

AGI = key("AGIUSDT")
SINCE, UNTIL = T0, T0 + timedelta(days=1)


def at(minutes: int) -> object:
    return T0 + timedelta(minutes=minutes)


def record(record_id: str, size: str, trading: str, fees: str, minutes: int) -> MoneyRecord:
    return MoneyRecord(
        key=AGI,
        record_id=record_id,
        closed_at=at(minutes),
        closed_size=size,
        trading_pnl=trading,
        fees=fees,
        net_pnl=Decimal(trading) - Decimal(fees),
    )


UNSEEN = record("exit-1000", "1000", "2.16", "0.02", 10)
SEEN = record("exit-3160", "3160", "6.8256", "0.07", 40)


def seed_002(ledger: Ledger) -> None:
    """Short 4160; the exchange fills 1000 of the exit unseen; corrected to 3160; closed."""
    ledger.record_fill(AGI, fill("open", "sell", "4160", "0.05", exec_time=at(1)))
    for minutes in (20, 21):
        shown = snapshot(at(minutes), [row("AGIUSDT", "Sell", "3160", avg_price=Decimal("0.05"))])
        ledger.reconcile(shown, now=at(minutes))
    close = fill("close", "buy", "3160", "0.04784", fee=Decimal("0.07"), exec_time=at(40))
    ledger.record_fill(AGI, close)


def test_the_missed_fills_pnl_is_adopted_and_the_books_equal_the_exchange(
    durable_url: str,
) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        seed_002(ledger)
        result = ledger.check_money(AGI, [UNSEEN, SEEN], since=SINCE, until=UNTIL, at=at(60))
        assert not result.agrees and result.difference == Decimal("2.14")
    with Ledger.open(durable_url, clock=lambda: T0) as again:
        state = again.position(AGI)
        assert state is not None
        assert (state.adopted_pnl, state.unexplained_pnl) == (Decimal("2.14"), 0)
        assert state.booked_pnl == UNSEEN.net_pnl + SEEN.net_pnl == Decimal("8.8956")
        (event,) = [e for e in again.history(AGI) if isinstance(e, MoneyReconciled)]
        assert (event.records, event.adopted) == (["exit-1000", "exit-3160"], True)
        rows = history_rows(again, AGI)
        assert rows[-1].event == "MoneyReconciled"
        repeat = again.check_money(AGI, [UNSEEN, SEEN], since=SINCE, until=UNTIL, at=at(70))
        assert repeat.agrees and repeat.events == ()
        assert len(again.history(AGI)) == len(rows)
    report = verify(durable_url)
    assert report.ok, report.problems


def test_a_rebate_nobody_explains_is_one_event_and_agreement_writes_nothing(
    durable_url: str,
) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        ledger.record_fill(AGI, fill("o", "buy", "10", "1", fee=Decimal("0.01"), exec_time=at(1)))
        ledger.record_fill(AGI, fill("c", "sell", "10", "2", fee=Decimal("0.01"), exec_time=at(5)))
        same = record("r", "10", "10", "0.02", 5)
        tolerant = MoneyPolicy(per_coin={"USDT": "0.01"})
        before = len(ledger.history(AGI))
        assert ledger.check_money(AGI, [same], since=SINCE, until=UNTIL).agrees
        rebate = record("r", "10", "10", "0.01", 5)
        assert ledger.check_money(AGI, [rebate], since=SINCE, until=UNTIL, policy=tolerant).agrees
        assert len(ledger.history(AGI)) == before
        result = ledger.check_money(AGI, [rebate], since=SINCE, until=UNTIL)
        (event,) = result.events
        assert isinstance(event, MoneyReconciled) and not event.adopted
        state = ledger.position(AGI)
        assert state is not None and state.unexplained_pnl == Decimal("0.01")


def test_bad_windows_and_records_are_invalid_input_and_write_nothing(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        ledger.record_fill(AGI, fill("o", "buy", "1", "1", exec_time=at(1)))
        before = ledger.history(AGI)
        with pytest.raises(InvalidInput, match="before"):
            ledger.check_money(AGI, [], since=UNTIL, until=SINCE)
        with pytest.raises(InvalidInput, match="MoneyRecord"):
            ledger.check_money(AGI, [{"record_id": "x"}], since=SINCE, until=UNTIL)  # type: ignore[list-item]
        assert ledger.history(AGI) == before


def test_a_check_that_only_reports_writes_nothing(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        seed_002(ledger)
        before = ledger.history(AGI)
        dry = ledger.check_money(AGI, [UNSEEN, SEEN], since=SINCE, until=UNTIL, record=False)
        assert (dry.agrees, dry.difference, dry.events, dry.adopted) == (
            False,
            Decimal("2.14"),
            (),
            True,
        )
        assert ledger.history(AGI) == before
