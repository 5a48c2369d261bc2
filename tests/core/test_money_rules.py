"""Money reconciliation (docs/design.md#money), each rule a pure function on literal states:
``ledger_money`` folds a key's history over a window, ``decide_money`` compares it with the
exchange's records.

M1  Within tolerance on each of trading PnL, fees and funding: agreement, nothing written (the
    boundary agrees).
M2  A difference with no correction in the window is one unexplained ``MoneyReconciled``:
    both sides' figures, the records, the net difference, the tolerance; ``unexplained_pnl``
    grows by it and ``booked_pnl`` then equals the exchange's net.
M3  After a correction in the window the difference is adopted: the missed fills' PnL comes in
    from the exchange's record, and the lifecycle's booked PnL equals the exchange's exactly
    (seed 002: AGIUSDT's exit fill of 1000 the bot never heard of).
M4  Funding is compared only where every record states it; a penalty counts in the net.
M5  Only the key's records closed inside the window count; a window already checked writes
    nothing again.
M6  ``ledger_money`` sums what the window's events changed (fills, funding, fees) and says
    whether a correction happened in it.
M7  ``MoneyPolicy`` tolerates per settle coin and refuses a negative tolerance; an inverse key
    is checked in its coin.
M8  For random long histories whose closing fills the ledger partly never hears of (a
    correction then sets the size), the booked PnL after the check equals the exchange's net,
    and the adopted difference is exactly the withheld fills' PnL net of their fees.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posledger import InvalidInput, PositionKey, PositionState
from posledger.core.decide import decide_fills
from posledger.core.events import MoneyReconciled, PositionEvent, Reconciled
from posledger.core.money import LedgerMoney, MoneyPolicy, MoneyRecord, decide_money, ledger_money
from posledger.core.position import evolve
from tests.conftest import T0, key
from tests.core.literals import d, fresh, judge
from tests.helpers import fill, row, snapshot

AGI = key("AGIUSDT")
WINDOW = (T0, T0 + timedelta(days=1))
LATER = T0 + timedelta(days=2)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def record(
    record_id: str,
    trading: str,
    fees: str = "0",
    *,
    k: PositionKey = AGI,
    when: datetime | None = None,
    size: str = "1",
    funding: str | None = None,
    penalty: str = "0",
) -> MoneyRecord:
    net = Decimal(trading) - Decimal(fees) - Decimal(funding or 0) - Decimal(penalty)
    return MoneyRecord(
        key=k,
        record_id=record_id,
        closed_at=when or at(30),
        closed_size=size,
        trading_pnl=trading,
        fees=fees,
        net_pnl=net,
        funding=funding,
        penalty=penalty,
    )


def history_of(state: PositionState, *fills: object) -> tuple[PositionState, list[PositionEvent]]:
    """``state`` (fresh: its KeyRegistered is the history's first event) after the fills."""
    from posledger.core.decide import register

    events: list[PositionEvent] = [register(state.key, T0)]
    for item in fills:
        new = decide_fills(state, [item])  # type: ignore[list-item]
        for event in new:
            state = evolve(state, event)
        events += new
    return state, events


def check(state: PositionState, events: list[PositionEvent], *records: MoneyRecord, **policy):  # type: ignore[no-untyped-def]
    return decide_money(
        state,
        ledger_money(events, *WINDOW),
        records,
        window=WINDOW,
        policy=MoneyPolicy(**policy),
        at=LATER,
    )


def long_then_closed(fee: str = "0") -> tuple[PositionState, list[PositionEvent]]:
    """Long 2 @ 100, closed at 110: trading PnL 20, fees 2 × fee."""
    return history_of(
        fresh(AGI),
        fill("o", "buy", "2", "100", fee=d(fee), exec_time=at(1)),
        fill("c", "sell", "2", "110", fee=d(fee), exec_time=at(30)),
    )


@pytest.mark.parametrize(("exchange_fees", "agrees"), [("0.2", True), ("0.21", False)])
def test_m1_within_tolerance_on_each_figure_agrees(exchange_fees: str, agrees: bool) -> None:
    state, events = long_then_closed(fee="0.1")
    result = check(state, events, record("r1", "20", exchange_fees), tolerance="0")
    assert result.agrees is agrees
    assert bool(result.events) is not agrees
    tolerant = check(state, events, record("r1", "20.01", "0.21"), tolerance="0.01")
    assert tolerant.agrees and tolerant.events == ()


def test_m2_an_unexplained_difference_is_one_explicit_event() -> None:
    state, events = long_then_closed(fee="0.1")
    result = check(state, events, record("r1", "20", "-0.3"))  # the exchange paid a rebate
    assert not result.agrees and result.difference == d("0.5")
    (event,) = result.events
    assert isinstance(event, MoneyReconciled)
    assert (event.ledger_trading_pnl, event.ledger_fees) == (d(20), d("0.2"))
    assert (event.exchange_trading_pnl, event.exchange_fees) == (d(20), d("-0.3"))
    assert (event.records, event.adopted, event.difference) == (["r1"], False, d("0.5"))
    after = evolve(state, event)
    assert (after.unexplained_pnl, after.adopted_pnl) == (d("0.5"), 0)
    assert after.booked_pnl == d("20.3") == record("r1", "20", "-0.3").net_pnl
    assert after.money_checked_until == WINDOW[1]


def test_m3_after_a_correction_the_missed_fills_pnl_is_adopted_from_the_exchange() -> None:
    """Seed 002: short 4160 @ 0.05; the exchange fills 1000 of the exit at 0.04784 unseen; two
    snapshots correct the ledger to 3160 (stale_quantity); the bot closes 3160 at 0.04784."""
    state, events = history_of(fresh(AGI), fill("o", "sell", "4160", "0.05", exec_time=at(1)))
    for minutes in (20, 21):
        shown = snapshot(at(minutes), [row("AGIUSDT", "Sell", "3160", avg_price=d("0.05"))])
        judged = judge(state, shown).events
        for event in judged:
            state = evolve(state, event)
        events += judged
    assert isinstance(events[-1], Reconciled) and events[-1].kind == "stale_quantity"
    bot_close = fill("x", "buy", "3160", "0.04784", fee=d("0.07"), exec_time=at(40))
    state, closing = history_of(state, bot_close)
    events += closing[1:]
    unseen = record("exit-1000", "2.16", "0.02", when=at(10), size="1000")
    seen = record("exit-3160", "6.8256", "0.07", when=at(40), size="3160")
    result = check(state, events, unseen, seen)
    (event,) = result.events
    assert isinstance(event, MoneyReconciled) and event.adopted
    assert event.difference == unseen.net_pnl == d("2.14")
    after = evolve(state, event)
    assert after.adopted_pnl == event.difference
    assert after.booked_pnl == unseen.net_pnl + seen.net_pnl


def test_m4_funding_is_compared_only_where_every_record_states_it() -> None:
    state, events = history_of(
        fresh(AGI),
        fill("o", "buy", "1", "100", exec_time=at(1)),
        fill("f", "buy", "1", "100", fee=d("0.5"), kind="funding", exec_time=at(10)),
        fill("c", "sell", "1", "100", exec_time=at(30)),
    )
    assert check(state, events, record("r", "0")).agrees  # funding not stated: not compared
    assert check(state, events, record("r", "0", funding="0.5")).agrees
    unseen = check(state, events, record("r", "0", funding="0.7"))
    assert not unseen.agrees and unseen.difference == d("-0.2")
    penalty = check(state, events, record("r", "0", funding="0.5", penalty="1"))
    assert not penalty.agrees and penalty.difference == d(-1)


def test_m5_only_the_keys_records_in_the_window_count_and_a_window_is_checked_once() -> None:
    state, events = long_then_closed()
    other = record("eth", "5", k=key("ETHUSDT"))
    late = record("late", "5", when=WINDOW[1] + timedelta(seconds=1))
    assert check(state, events, record("r1", "20"), other, late).agrees
    result = check(state, events, record("r1", "21"))
    (event,) = result.events
    after = evolve(state, event)
    again = check(after, events, record("r1", "21"))
    assert again.agrees and again.events == ()


def test_m6_ledger_money_sums_the_window_and_sees_corrections() -> None:
    _, events = long_then_closed(fee="0.1")
    assert ledger_money(events, *WINDOW) == LedgerMoney(d(20), d("0.2"), d(0), False)
    assert ledger_money(events, at(2), at(40)) == LedgerMoney(d(20), d("0.1"), d(0), False)
    assert ledger_money(events, at(31), at(40)) == LedgerMoney()


def test_m7_tolerance_per_settle_coin_and_inverse_keys_in_coin() -> None:
    inverse = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    state, events = history_of(
        fresh(inverse),
        fill("o", "buy", "100", "20000", exec_time=at(1)),
        fill("c", "sell", "100", "25000", exec_time=at(30)),
    )
    assert state.realized_pnl == d("0.001")
    near = record("r", "0.00100001", k=inverse)
    assert not check(state, events, near).agrees
    assert check(state, events, near, per_coin={"BTC": "0.0000001"}).agrees
    assert not check(state, events, near, tolerance="1", per_coin={"BTC": "0"}).agrees
    with pytest.raises(InvalidInput):
        MoneyPolicy(tolerance="-1")
    with pytest.raises(InvalidInput):
        MoneyPolicy(per_coin={"BTC": "-0.1"})


CLOSES = st.lists(
    st.tuples(st.integers(1, 5), st.integers(90, 130), st.booleans()), min_size=1, max_size=6
)


def closing_record(n: int, qty: int, price: int, minute: int) -> MoneyRecord:
    """Bybit-style: the closed part's trading PnL, its close fee and its share of the open fee
    (0.01 a unit each)."""
    return record(
        f"r{n}",
        str((price - 100) * qty),
        str(Decimal(2 * qty) / 100),
        when=at(minute),
        size=str(qty),
    )


@given(opened=st.integers(10, 40), closes=CLOSES, last=st.integers(90, 130))
def test_m8_withheld_closes_are_adopted_to_the_exchanges_net(
    opened: int, closes: list[tuple[int, int, bool]], last: int
) -> None:
    """Long ``opened`` @ 100, closes of (qty, price, withheld?) while the position lasts, a
    correction to the exchange's size, and a last close of the rest at ``last``; every fill
    pays 0.01 a unit. The exchange's records are computed here, independently of the ledger."""
    state, events = history_of(
        fresh(AGI), fill("o", "buy", str(opened), "100", fee=d("0.01") * opened, exec_time=at(1))
    )
    held, records, withheld = opened, [], Decimal(0)
    for n, (wanted, price, unseen) in enumerate(closes):
        qty = min(wanted, held)
        if qty == 0:
            break
        held -= qty
        records.append(closing_record(n, qty, price, 2 + n))
        if unseen:
            withheld += (price - 100) * qty - d("0.01") * qty  # the unseen fill and its fee
            continue
        close = fill(
            f"c{n}", "sell", str(qty), str(price), fee=d("0.01") * qty, exec_time=at(2 + n)
        )
        state, more = history_of(state, close)
        events += more[1:]
    if state.size != held:  # reconciliation sets the exchange's size (stale_quantity/phantom)
        shown = [row("AGIUSDT", "Buy", str(held), avg_price=d(100))] if held else []
        for minute in (20, 21):
            judged = judge(state, snapshot(at(minute), shown, symbols=["AGIUSDT"])).events
            for event in judged:
                state = evolve(state, event)
            events += judged
    if held:
        records.append(closing_record(99, held, last, 30))
        final = fill("last", "sell", str(held), str(last), fee=d("0.01") * held, exec_time=at(30))
        state, more = history_of(state, final)
        events += more[1:]
    result = check(state, events, *records)
    after = state
    for event in result.events:
        after = evolve(after, event)
    assert after.size == 0
    assert after.booked_pnl == sum((r.net_pnl for r in records), Decimal(0))
    if withheld:
        (event,) = result.events
        assert isinstance(event, MoneyReconciled) and event.adopted
        assert event.difference == withheld
    else:
        assert result.agrees and result.events == ()


def test_m5_the_window_includes_both_ends_for_records_and_events() -> None:
    state, events = long_then_closed()
    start, end = at(1), at(30)  # the opening and the closing fill's times exactly
    assert ledger_money(events, start, end).trading_pnl == d(20)
    assert ledger_money(events, start, end).fees == d(0)
    for when in (start, end):
        result = decide_money(
            state,
            ledger_money(events, start, end),
            [record("edge", "21", when=when)],
            window=(start, end),
            policy=MoneyPolicy(),
            at=LATER,
        )
        assert result.difference == d(1), when


def test_m2_the_event_records_every_figure_and_the_detail_says_why() -> None:
    state, events = long_then_closed(fee="0.1")
    result = check(state, events, record("r1", "19", "0.2", funding="0.5", penalty="0.25"))
    (event,) = result.events
    assert isinstance(event, MoneyReconciled)
    assert (event.timestamp, event.window_start, event.window_end) == (LATER, *WINDOW)
    assert (event.ledger_funding, event.exchange_funding) == (d(0), d("0.5"))
    assert (event.exchange_penalty, event.tolerance) == (d("0.25"), d(0))
    assert event.difference == d("-1.75") == result.difference
    assert result.detail == "-1.75 unexplained" and not result.adopted
    unknown = check(state, events, record("r1", "19", "0.2"))
    (without,) = unknown.events
    assert (without.ledger_funding, without.exchange_funding) == (None, None)  # type: ignore[attr-defined]


def test_m2_no_record_at_all_is_a_difference_in_exact_decimals() -> None:
    state, events = long_then_closed()
    result = check(state, events)
    (event,) = result.events
    assert isinstance(event, MoneyReconciled) and event.records == []
    figures = (event.exchange_trading_pnl, event.exchange_fees, event.exchange_penalty)
    assert figures == (0, 0, 0) and all(type(f) is Decimal for f in figures)
    assert event.difference == d(-20)


def test_m5_a_checked_window_says_so_and_differs_by_nothing() -> None:
    state, events = long_then_closed()
    (event,) = check(state, events, record("r1", "21")).events
    again = check(evolve(state, event), events, record("r1", "25"))
    assert (again.agrees, again.difference, again.events) == (True, d(0), ())
    assert again.detail == f"checked through {WINDOW[1].isoformat()}"


def test_m3_an_adopted_difference_says_so() -> None:
    state, _ = long_then_closed()
    corrected = LedgerMoney(d(20), d(0), d(0), corrected=True)
    result = decide_money(
        state, corrected, [record("r", "21")], window=WINDOW, policy=MoneyPolicy(), at=LATER
    )
    assert result.detail == "+1 adopted (a correction in the window)" and result.adopted


def test_m7_a_key_of_no_known_coin_takes_the_default_tolerance() -> None:
    odd = PositionKey(venue="bybit", account="main", category="linear", symbol="FOOBAR")
    assert odd.settle_coin is None
    assert MoneyPolicy(tolerance="0.5", per_coin={"USDT": "0.1"}).for_key(odd) == d("0.5")
    assert MoneyPolicy(tolerance="0.5", per_coin={"USDT": "0.1"}).for_key(AGI) == d("0.1")


def test_m4_a_funding_of_zero_stated_by_the_exchange_agrees_with_none_paid() -> None:
    state, events = long_then_closed()
    result = check(state, events, record("r1", "20", funding="0"))
    assert (result.agrees, result.difference) == (True, d(0))
    near = check(state, events, record("r1", "20.01"), tolerance="0.01")
    assert (near.agrees, near.difference) == (True, d("0.01"))


def test_m6_an_event_at_the_windows_start_counts() -> None:
    _, events = long_then_closed(fee="0.1")
    assert ledger_money(events, at(1), at(30)).fees == d("0.2")
    assert ledger_money(events, at(1), at(29)).fees == d("0.1")
