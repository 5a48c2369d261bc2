"""Books end to end: two strategies ("alpha", "beta") trading ETHUSDT on one Bybit account, kept
in step with the fake Bybit by the Synchronizer over real pybit and real ccxt (blocking and
asyncio), on every store (docs/books.md).

Each book's bot requests its orders in its book and records the fills it hears of; the
exchange knows only the account. A round must put what the bots missed into the book whose
order it was, allocate what no book ordered by the ledger's policy, and judge the account on
the sum of its books.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import AllocationPolicy, Correction, Fill, Outcome, PositionKey
from posledger.core.events import Allocated
from posledger.testing.fake_bybit import FakeBybit
from posledger.venues.bybit import BybitVenue
from tests.ccxt_harness import FLAVOURS, NOW, CcxtHarness, Clock, Rig, ago
from tests.drivers.books_worker import START_TIMEOUT_S, Trade, trade_book

VENUES = ("pybit", *(f"ccxt-{flavour}" for flavour in FLAVOURS))
ACCOUNT = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT")
ALPHA, BETA = ACCOUNT.in_book("alpha"), ACCOUNT.in_book("beta")
PRICE = "3000"


class PybitHarness:
    """The pybit venue behind the interface of :class:`CcxtHarness`, so a :class:`Rig` drives
    it: a real ``pybit.unified_trading.HTTP`` session on the fake, calls made blocking."""

    flavour = "sync"

    def __init__(self, fake: FakeBybit) -> None:
        self.fake = fake

    def venue(self, **options: Any) -> BybitVenue:
        return BybitVenue(
            self.fake.session(timeout=2), account="main", category="linear", **options
        )

    def run(self, outcome: Any) -> Any:
        return outcome


@pytest.fixture(params=VENUES)
def harness(request: pytest.FixtureRequest, fake: FakeBybit) -> Iterator[Any]:
    if request.param == "pybit":
        yield PybitHarness(fake)
        return
    with CcxtHarness(request.param.removeprefix("ccxt-"), fake, timeout_ms=2000) as opened:
        yield opened


def rig_for(harness: Any, url: str, clock: Clock, **allocation: Any) -> Rig:
    """A ledger (with ``allocation``, if any) and a synchronizer over the harness's venue."""
    policy = AllocationPolicy(**allocation) if allocation else None
    return Rig(harness, url, clock=clock, settle_coin="USDT", allocation=policy)


@pytest.fixture
def rig(harness: Any, ledger_url: str, clock: Clock) -> Iterator[Rig]:
    with rig_for(harness, ledger_url, clock) as made:
        yield made


def order(
    rig: Rig,
    fake: FakeBybit,
    book: PositionKey,
    side: str,
    qty: str,
    at: datetime,
    *,
    exit: bool = False,
) -> str:
    """An order the book's bot places and requests in its book (an exit is reduce-only);
    returns its id."""
    order_id = fake.add_open_order(
        book.symbol, side, qty, PRICE, idx=book.idx, reduce_only=exit, at=at
    )
    if exit:
        rig.request_exit(book, order_id=order_id, qty=qty, side=side, at=at)
    else:
        rig.request_open(book, order_id=order_id, side=side, qty=qty, at=at)
    return order_id


def fill(
    rig: Rig,
    fake: FakeBybit,
    book: PositionKey,
    order_id: str,
    qty: str,
    price: str,
    at: datetime,
    *,
    fee: str = "0",
    heard: bool = True,
) -> str:
    """The order fills ``qty`` at ``price`` on the exchange; its bot records the fill in its
    book unless it never ``heard`` of it. Returns the exec_id."""
    done = fake.partial_fill(order_id, qty, price=price, fee=fee, at=at)
    if heard:
        rig.record_fill(
            book,
            Fill(exec_id=done.exec_id, order_id=order_id, side=done.side, qty=qty, price=price,
                 fee=fee, exec_time=at, seq=done.seq),
        )  # fmt: skip
    return done.exec_id


def trade(
    rig: Rig,
    fake: FakeBybit,
    book: PositionKey,
    side: str,
    qty: str,
    price: str,
    at: datetime,
    *,
    exit: bool = False,
    heard: bool = True,
) -> str:
    """An order of the book filled at once; returns its id."""
    order_id = order(rig, fake, book, side, qty, at, exit=exit)
    fill(rig, fake, book, order_id, qty, price, at, heard=heard)
    return order_id


def two_books(rig: Rig, fake: FakeBybit, at: datetime, alpha: str = "2", beta: str = "1") -> None:
    """alpha long ``alpha`` @ 3000, beta long ``beta`` @ 3100, both recorded."""
    trade(rig, fake, ALPHA, "Buy", alpha, "3000", at)
    trade(rig, fake, BETA, "Buy", beta, "3100", at)


def sizes(rig: Rig, account: PositionKey = ACCOUNT) -> dict[str, Decimal]:
    return {state.key.book: state.signed_size for state in rig.books(account)}


def agrees(report: Any) -> bool:
    return {o.outcome for o in report.outcomes} == {Outcome.AGREES}


def allocations(rig: Rig, book: PositionKey) -> list[tuple[str, str, Decimal, list[str]]]:
    found = [e for e in rig.history(book) if isinstance(e, Allocated)]
    return [(a.cause, a.rule, a.share, a.books) for a in found]


# 1. independent books, one account


def test_each_book_keeps_its_average_and_pnl_and_the_account_agrees(
    rig: Rig, fake: FakeBybit
) -> None:
    two_books(rig, fake, ago(hours=3))
    trade(rig, fake, ALPHA, "Sell", "1", "3200", ago(hours=2), exit=True)
    trade(rig, fake, BETA, "Buy", "1", "3300", ago(hours=1))
    alpha, beta = rig.position(ALPHA), rig.position(BETA)
    assert (alpha.size, alpha.avg_entry_price, alpha.realized_pnl) == (1, 3000, 200)
    assert (beta.size, beta.avg_entry_price, beta.realized_pnl) == (2, 3200, 0)
    account = rig.account_position(ACCOUNT)
    assert (account.size, account.realized_pnl) == (3, 200)
    assert round(account.avg_entry_price, 2) == Decimal("3133.33")  # (3000 + 2 * 3200) / 3
    assert fake.position("ETHUSDT").size == account.size
    report = rig.run_once(NOW)
    assert report.recovered == {}
    assert [(o.key, o.outcome) for o in report.outcomes] == [(ACCOUNT, Outcome.AGREES)]
    assert sizes(rig) == {"alpha": 1, "beta": 2}
    assert all("Reconciled" not in rig.names(book) for book in (ALPHA, BETA))


# 2. missed fills recovered into their books


def test_missed_fills_are_recovered_into_the_books_that_ordered_them(
    rig: Rig, fake: FakeBybit
) -> None:
    """alpha's exit filled and beta's exit partly filled then was cancelled: alpha's bot heard
    of nothing, beta's heard only of the cancel (its order ended before the round)."""
    two_books(rig, fake, ago(hours=3))
    alpha_exit = order(rig, fake, ALPHA, "Sell", "1.5", ago(hours=2), exit=True)
    beta_exit = order(rig, fake, BETA, "Sell", "1", ago(hours=2), exit=True)
    fill(rig, fake, ALPHA, alpha_exit, "1.5", "3050", ago(minutes=50), heard=False)
    fill(rig, fake, BETA, beta_exit, "0.4", "3150", ago(minutes=40), heard=False)
    fake.cancel_order(beta_exit, at=ago(minutes=30))
    rig.record_order_end(BETA, order_id=beta_exit, status="PartiallyFilledCanceled",
                         at=ago(minutes=30))  # fmt: skip
    report = rig.run_once(NOW)
    assert report.recovered == {ACCOUNT: 2}
    assert sizes(rig) == {"alpha": Decimal("0.5"), "beta": Decimal("0.6")}
    assert rig.position(ALPHA).realized_pnl == Decimal(75)
    assert rig.position(BETA).realized_pnl == Decimal(20)
    assert agrees(report)
    assert (rig.names(ALPHA)[-1], rig.names(BETA)[-1]) == ("Filled", "PartiallyFilled")
    assert all("Reconciled" not in rig.names(book) for book in (ALPHA, BETA))
    assert allocations(rig, ALPHA) == allocations(rig, BETA) == []
    assert rig.run_once(NOW + timedelta(minutes=1)).recovered == {}


def test_a_fill_heard_after_the_round_recovered_it_is_a_duplicate(
    rig: Rig, fake: FakeBybit
) -> None:
    """beta's bot hears of its exit's fill late, after the round put it into beta."""
    two_books(rig, fake, ago(hours=3))
    beta_exit = order(rig, fake, BETA, "Sell", "1", ago(hours=2), exit=True)
    exec_id = fill(rig, fake, BETA, beta_exit, "1", "3150", ago(minutes=30), heard=False)
    assert rig.run_once(NOW).recovered == {ACCOUNT: 1}
    late = Fill(exec_id=exec_id, order_id=beta_exit, side="Sell", qty="1", price="3150",
                exec_time=ago(minutes=30), seq=fake.position("ETHUSDT").seq)  # fmt: skip
    assert rig.record_fill(BETA, late).duplicate
    assert sizes(rig) == {"alpha": 2, "beta": 0}
    assert agrees(rig.run_once(NOW + timedelta(minutes=1)))


# 3. an ADL shared pro rata


def test_an_adl_is_shared_pro_rata_with_the_remainder_placed_by_rule(
    harness: Any, fake: FakeBybit, ledger_url: str, clock: Clock
) -> None:
    """alpha long 2, beta long 1; an ADL sells 0.004 (fee 7e-8). Exact shares are 0.002666...
    and 0.001333...: 2 and 1 units of 0.001, the unit left to the larger remainder (alpha).
    The fee's shares (3:1 of 7 units) are 5.25 and 1.75 units: 5 and 1, the unit left to
    beta."""
    with rig_for(harness, ledger_url, clock, pro_rata={"adl"}) as rig:
        two_books(rig, fake, ago(hours=3))
        fake.add_execution(
            "ETHUSDT", "Sell", "0.004", "2900", exec_type="AdlTrade", fee="0.00000007",
            exec_id="adl-1", at=ago(minutes=30),
        )  # fmt: skip
        fake.set_position("ETHUSDT", "Buy", "2.996", "3033.33", at=ago(minutes=30))
        report = rig.run_once(NOW)
        assert report.recovered == {ACCOUNT: 1}
        assert sizes(rig) == {"alpha": Decimal("1.997"), "beta": Decimal("0.999")}
        fees = {state.key.book: state.fees for state in rig.books(ACCOUNT)}
        assert fees == {"alpha": Decimal("0.00000005"), "beta": Decimal("0.00000002")}
        assert sum(fees.values()) == Decimal("0.00000007")
        assert allocations(rig, ALPHA) == [
            ("adl", "pro_rata", Decimal("-0.003"), ["alpha", "beta"])
        ]
        assert allocations(rig, BETA) == [("adl", "pro_rata", Decimal("-0.001"), ["alpha", "beta"])]
        assert rig.position(ALPHA).realized_pnl == Decimal("-0.3")
        assert agrees(report)


def test_a_liquidation_shared_pro_rata_closes_every_book(
    harness: Any, fake: FakeBybit, ledger_url: str, clock: Clock
) -> None:
    """The whole account (alpha 2, beta 1) is liquidated by one BustTrade: each book closes
    its own lifecycle with its own PnL, the fee shared 2:1."""
    with rig_for(harness, ledger_url, clock, pro_rata={"liquidation"}) as rig:
        two_books(rig, fake, ago(hours=3))
        fake.add_execution("ETHUSDT", "Sell", "3", "2500", exec_type="BustTrade", fee="0.3",
                           at=ago(minutes=30))  # fmt: skip
        fake.set_position("ETHUSDT", "", "0", at=ago(minutes=30))
        report = rig.run_once(NOW)
        assert report.recovered == {ACCOUNT: 1}
        assert sizes(rig) == {"alpha": 0, "beta": 0}
        alpha, beta = rig.position(ALPHA), rig.position(BETA)
        assert (alpha.realized_pnl, alpha.fees) == (Decimal(-1000), Decimal("0.2"))
        assert (beta.realized_pnl, beta.fees) == (Decimal(-600), Decimal("0.1"))
        assert rig.names(ALPHA)[-3:] == rig.names(BETA)[-3:] == ["Allocated", "Filled", "Closed"]
        assert rig.open_positions() == []
        assert agrees(report)


# 4. manual trades


@pytest.mark.parametrize("unassigned", ["", "manual"])
def test_a_manual_trade_lands_in_the_unassigned_book(
    harness: Any, fake: FakeBybit, ledger_url: str, clock: Clock, unassigned: str
) -> None:
    with rig_for(harness, ledger_url, clock, unassigned=unassigned) as rig:
        two_books(rig, fake, ago(hours=3))
        by_hand = fake.add_open_order("ETHUSDT", "Sell", "0.5", "3200", order_type="Market",
                                      at=ago(minutes=20))  # fmt: skip
        fake.partial_fill(by_hand, "0.5", at=ago(minutes=20))
        report = rig.run_once(NOW)
        assert report.recovered == {ACCOUNT: 1}
        assert sizes(rig) == {"alpha": 2, "beta": 1, unassigned: Decimal("-0.5")}
        manual = ACCOUNT.in_book(unassigned)
        assert allocations(rig, manual) == [("trade", "unassigned", Decimal("-0.5"), [unassigned])]
        assert rig.account_position(ACCOUNT).size == Decimal("2.5")
        assert agrees(report)


def test_a_default_book_orders_missed_fill_is_not_taken_for_a_manual_trade(
    harness: Any, fake: FakeBybit, ledger_url: str, clock: Clock
) -> None:
    """The default book trades beside alpha and beta, manual trades go to "manual": the
    default book's exit, partly filled (missed) then cancelled, still owns its fill."""
    with rig_for(harness, ledger_url, clock, unassigned="manual") as rig:
        two_books(rig, fake, ago(hours=3))
        trade(rig, fake, ACCOUNT, "Buy", "1", "3200", ago(hours=3))
        default_exit = order(rig, fake, ACCOUNT, "Sell", "1", ago(hours=2), exit=True)
        fill(rig, fake, ACCOUNT, default_exit, "0.3", "3300", ago(minutes=50), heard=False)
        fake.cancel_order(default_exit, at=ago(minutes=45))
        rig.record_order_end(ACCOUNT, order_id=default_exit, status="PartiallyFilledCanceled",
                             at=ago(minutes=45))  # fmt: skip
        report = rig.run_once(NOW)
        assert report.recovered == {ACCOUNT: 1}
        assert sizes(rig) == {"": Decimal("0.7"), "alpha": 2, "beta": 1}
        assert rig.position(ACCOUNT).realized_pnl == Decimal(30)
        assert agrees(report)


# 5. phantoms


@pytest.mark.parametrize(
    ("allocation", "after"),
    [
        ({}, {"": Decimal(-3), "alpha": Decimal(2), "beta": Decimal(1)}),
        ({"pro_rata": {"phantom"}}, {"alpha": Decimal(0), "beta": Decimal(0)}),
    ],
    ids=["unassigned", "pro rata"],
)
def test_a_phantom_with_two_books_is_confirmed_then_corrected_by_the_policy(
    harness: Any,
    fake: FakeBybit,
    ledger_url: str,
    clock: Clock,
    allocation: dict[str, Any],
    after: dict[str, Decimal],
) -> None:
    """Both books were closed 8 days ago, by executions older than the 7-day lookback."""
    with rig_for(harness, ledger_url, clock, **allocation) as rig:
        two_books(rig, fake, ago(days=10))
        fake.add_execution("ETHUSDT", "Sell", "3", "3480", at=ago(days=8))
        fake.set_position("ETHUSDT", "", "0", at=ago(days=8))
        first = rig.run_once(NOW)
        assert [(o.key, o.outcome) for o in first.outcomes] == [(ACCOUNT, Outcome.SUSPECT)]
        assert sizes(rig) == {"alpha": 2, "beta": 1}
        second = rig.run_once(NOW + timedelta(minutes=1))
        assert [(o.key, o.correction) for o in second.reconcile.corrections] == [
            (ACCOUNT, Correction.PHANTOM)
        ]
        assert sizes(rig) == after
        assert rig.account_position(ACCOUNT).size == 0
        assert agrees(rig.run_once(NOW + timedelta(minutes=2)))


# 6. funding


def test_funding_in_the_history_is_split_exactly_between_the_books(
    rig: Rig, fake: FakeBybit
) -> None:
    """The funding execution is fetched with a missed fill after it, and split on the books'
    sizes at its time (2:1): 0.01000001 as 0.00666667 and 0.00333334."""
    two_books(rig, fake, ago(hours=3))
    alpha_exit = order(rig, fake, ALPHA, "Sell", "1", ago(hours=2), exit=True)
    fake.settle_funding("ETHUSDT", fee="0.01000001", price="3050", at=ago(minutes=90))
    fill(rig, fake, ALPHA, alpha_exit, "1", "3100", ago(minutes=30), heard=False)
    report = rig.run_once(NOW)
    assert report.recovered == {ACCOUNT: 2}
    funding = {state.key.book: state.funding for state in rig.books(ACCOUNT)}
    assert funding == {"alpha": Decimal("0.00666667"), "beta": Decimal("0.00333334")}
    assert sum(funding.values()) == Decimal("0.01000001")
    assert sizes(rig) == {"alpha": 1, "beta": 1}
    assert [a[:2] for a in allocations(rig, ALPHA)] == [("funding", "pro_rata")]
    assert agrees(report)


# 7. hedge mode


def test_books_on_both_hedge_legs_are_recovered_each_on_its_leg(rig: Rig, fake: FakeBybit) -> None:
    fake.set_hedge_mode("ETHUSDT")
    legs = {idx: PositionKey(venue="bybit", account="main", category="linear",
                             symbol="ETHUSDT", idx=idx) for idx in (1, 2)}  # fmt: skip
    trade(rig, fake, legs[1].in_book("alpha"), "Buy", "2", "3000", ago(hours=3))
    trade(rig, fake, legs[1].in_book("beta"), "Buy", "1", "3100", ago(hours=3))
    trade(rig, fake, legs[2].in_book("alpha"), "Sell", "1", "3050", ago(hours=3))
    beta_short = order(rig, fake, legs[2].in_book("beta"), "Sell", "0.5", ago(hours=2))
    alpha_trim = order(rig, fake, legs[1].in_book("alpha"), "Sell", "0.5", ago(hours=2), exit=True)
    fill(rig, fake, legs[2].in_book("beta"), beta_short, "0.5", "3000", ago(minutes=40),
         heard=False)  # fmt: skip
    fill(rig, fake, legs[1].in_book("alpha"), alpha_trim, "0.5", "3200", ago(minutes=30),
         heard=False)  # fmt: skip
    report = rig.run_once(NOW)
    assert report.recovered == {legs[1]: 1, legs[2]: 1}
    assert sizes(rig, legs[1]) == {"alpha": Decimal("1.5"), "beta": Decimal(1)}
    assert sizes(rig, legs[2]) == {"alpha": Decimal(-1), "beta": Decimal("-0.5")}
    assert rig.position(legs[1].in_book("alpha")).realized_pnl == Decimal(100)
    assert {o.key: o.outcome for o in report.outcomes} == {
        legs[1]: Outcome.AGREES,
        legs[2]: Outcome.AGREES,
    }


def test_another_books_later_fill_does_not_hide_a_missed_fill(rig: Rig, fake: FakeBybit) -> None:
    """beta's exit partly filled (missed) and was cancelled; alpha's bot then recorded a fill of
    its own. alpha's fill says nothing of what beta's bot heard: beta's fill is still recovered
    into beta, not left to a correction in the unassigned book."""
    two_books(rig, fake, ago(hours=3))
    beta_exit = order(rig, fake, BETA, "Sell", "1", ago(hours=2), exit=True)
    fill(rig, fake, BETA, beta_exit, "0.4", "3150", ago(minutes=50), heard=False)
    fake.cancel_order(beta_exit, at=ago(minutes=45))
    rig.record_order_end(BETA, order_id=beta_exit, status="PartiallyFilledCanceled",
                         at=ago(minutes=45))  # fmt: skip
    trade(rig, fake, ALPHA, "Buy", "1", "3000", ago(minutes=10))
    report = rig.run_once(NOW)
    assert report.recovered == {ACCOUNT: 1}
    assert sizes(rig) == {"alpha": 3, "beta": Decimal("0.6")}
    assert agrees(report)


# 8. books written by separate processes


def test_books_written_by_two_processes_lose_and_double_nothing(
    harness: Any, fake: FakeBybit, durable_url: str, clock: Clock
) -> None:
    """alpha's bot buys 0.1 sixteen times and beta's sells 0.2 fourteen times, interleaved on
    the exchange; each bot runs in its own OS process on the same store and misses its last
    fill. One round recovers exactly those two; every execution is in its book once."""
    plans: dict[PositionKey, list[Trade]] = {ALPHA: [], BETA: []}
    for n in range(30):
        book, side, qty = (ALPHA, "Buy", "0.1") if n % 2 == 0 or n > 27 else (BETA, "Sell", "0.2")
        at = ago(minutes=60 - n)
        order_id = fake.add_open_order("ETHUSDT", side, qty, PRICE, at=at)
        done = fake.partial_fill(order_id, qty, at=at)
        plans[book].append((order_id, done.exec_id, side, qty, PRICE, at, done.seq, True))
    for trades in plans.values():
        trades[-1] = (*trades[-1][:-1], False)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(plans))
    bots = [
        context.Process(target=trade_book, args=(durable_url, book, trades, start))
        for book, trades in plans.items()
    ]
    for bot in bots:
        bot.start()
    for bot in bots:
        bot.join(timeout=2 * START_TIMEOUT_S)
        if bot.exitcode is None:
            bot.kill()
    assert [bot.exitcode for bot in bots] == [0, 0]
    with rig_for(harness, durable_url, clock) as rig:
        assert sizes(rig) == {"alpha": Decimal("1.5"), "beta": Decimal("-2.6")}
        report = rig.run_once(NOW)
        assert report.recovered == {ACCOUNT: 2}
        assert sizes(rig) == {"alpha": Decimal("1.6"), "beta": Decimal("-2.8")}
        for book, trades in plans.items():
            recorded = [e.exec_id for e in rig.history(book) if hasattr(e, "exec_id")]
            assert sorted(recorded) == sorted(trade[1] for trade in trades)
        assert agrees(report)
        assert fake.position("ETHUSDT").size == Decimal("1.2")
