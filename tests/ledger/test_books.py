"""Books on one account through the Ledger, on every backend (docs/books.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from posledger import (
    AllocationPolicy,
    ExchangePosition,
    Fill,
    InvalidInput,
    Ledger,
    PositionKey,
    ReconcilePolicy,
    Snapshot,
)
from posledger.core.events import Allocated, KeyRegistered, OrderBooked, Reconciled
from tests.conftest import key

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ACCOUNT = key()
ALPHA, BETA = ACCOUNT.in_book("alpha"), ACCOUNT.in_book("beta")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fill(
    exec_id: str, order_id: str, side: str, qty: str, price: str, t: float, **kw: object
) -> Fill:
    return Fill(
        exec_id=exec_id, order_id=order_id, side=side, qty=qty, price=price, exec_time=at(t), **kw
    )


def snapshot(t: float, *positions: ExchangePosition, orders: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(
        venue="bybit",
        account="main",
        category="linear",
        taken_at=at(t),
        positions=positions,
        open_order_ids=frozenset(orders),
    )


def long(size: str, avg: str = "100") -> ExchangePosition:
    return ExchangePosition(symbol="BTCUSDT", idx=0, side="Buy", size=size, avg_price=avg)


def two_books(ledger: Ledger) -> None:
    """alpha long 2 @ 100, beta long 1 @ 110: the account long 3."""
    ledger.request_open(ALPHA, order_id="a1", side="Buy", qty="2", at=at(0))
    ledger.request_open(BETA, order_id="b1", side="Buy", qty="1", at=at(0))
    ledger.record_fill(ALPHA, fill("e1", "a1", "Buy", "2", "100", 1))
    ledger.record_fill(BETA, fill("e2", "b1", "Buy", "1", "110", 2))


def sizes(ledger: Ledger) -> dict[str, Decimal]:
    return {s.key.book: s.signed_size for s in ledger.books(ACCOUNT)}


def test_each_book_keeps_its_own_average_and_the_account_sums_them(ledger: Ledger) -> None:
    two_books(ledger)
    ledger.request_exit(ALPHA, order_id="a2", qty="1", at=at(3))
    ledger.record_fill(ALPHA, fill("e3", "a2", "Sell", "1", "130", 4))
    alpha, beta = ledger.position(ALPHA), ledger.position(BETA)
    assert alpha is not None and beta is not None
    assert (alpha.size, alpha.avg_entry_price, alpha.realized_pnl) == (1, 100, 30)
    assert (beta.size, beta.avg_entry_price, beta.realized_pnl) == (1, 110, 0)
    account = ledger.account_position(ACCOUNT)
    assert account is not None and account.key == ACCOUNT
    assert (account.size, account.avg_entry_price, account.realized_pnl) == (2, 105, 30)
    assert [s.key.book for s in ledger.positions(book="beta")] == ["beta"]
    assert ledger.has_books(ACCOUNT) and ledger.has_books(ALPHA)


def test_an_account_with_one_book_stores_exactly_what_it_did_before_books(
    ledger: Ledger,
) -> None:
    ledger.request_open(ACCOUNT, order_id="o1", side="Buy", qty="1", at=at(0))
    registered = ledger.history(ACCOUNT)[0]
    assert isinstance(registered, KeyRegistered)
    assert "book" not in registered.__dict__  # the stored JSON has no book field
    assert (
        ACCOUNT.stream_id
        == PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT").stream_id
    )
    assert not ledger.has_books(ACCOUNT)
    assert ledger.account_position(ACCOUNT) == ledger.position(ACCOUNT)


def test_a_recovered_execution_of_a_known_order_goes_to_its_book(ledger: Ledger) -> None:
    two_books(ledger)
    ledger.request_exit(BETA, order_id="b2", qty="1", at=at(3))
    ledger.record_order_end(BETA, order_id="b2", status="Cancelled", at=at(4))
    # the exit's fill, missed while it was live, recovered from the account's history
    result = ledger.record_account_fills(ACCOUNT, [fill("e3", "b2", "Sell", "1", "120", 3.5)])
    assert result.fills[0].event == "Filled"
    assert sizes(ledger) == {"alpha": 2, "beta": 0}
    assert result.position.size == 2


def test_an_order_belongs_to_one_book(ledger: Ledger) -> None:
    ledger.request_open(ALPHA, order_id="x", side="Buy", qty="1", at=at(0))
    with pytest.raises(InvalidInput, match="belongs to one book"):
        ledger.request_open(BETA, order_id="x", side="Buy", qty="1", at=at(1))
    markers = list(ledger.application.events.get(_order_marker("x")))
    assert [(type(m), m.book) for m in markers] == [(OrderBooked, "alpha")]


def _order_marker(order_id: str) -> object:
    from posledger.core.events import order_marker_id

    return order_marker_id("bybit", "main", order_id)


def test_a_manual_trade_lands_in_the_unassigned_book(ledger_url: str) -> None:
    with Ledger.open(ledger_url, allocation=AllocationPolicy(unassigned="manual")) as ledger:
        two_books(ledger)
        ledger.record_account_fills(ACCOUNT, [fill("m1", "web-1", "Sell", "0.5", "120", 5)])
        assert sizes(ledger) == {"alpha": 2, "beta": 1, "manual": Decimal("-0.5")}
        allocated = [
            e for e in ledger.history(ACCOUNT.in_book("manual")) if isinstance(e, Allocated)
        ]
        assert [(a.cause, a.rule, a.share, a.books) for a in allocated] == [
            ("trade", "unassigned", Decimal("-0.5"), ["manual"])
        ]


def test_an_adl_is_shared_pro_rata_with_the_remainder_placed_by_rule(ledger_url: str) -> None:
    policy = AllocationPolicy(pro_rata={"adl"})
    with Ledger.open(ledger_url, allocation=policy) as ledger:
        two_books(ledger)
        ledger.request_open(ACCOUNT.in_book("gamma"), order_id="g1", side="Buy", qty="1", at=at(0))
        ledger.record_fill(ACCOUNT.in_book("gamma"), fill("e9", "g1", "Buy", "1", "100", 2))
        # account long 4 (alpha 2, beta 1, gamma 1); the ADL sells 0.003
        adl = fill("adl1", "", "Sell", "0.003", "90", 5, kind="adl", fee="0.0000001")
        ledger.record_account_fills(ACCOUNT, [adl])
        # exact shares 0.0015 / 0.00075 / 0.00075: 1, 0 and 0 units of 0.001, and the two units
        # left go to the largest remainders (0.75 each), so each book gives 0.001
        after = sizes(ledger)
        assert after == {
            "alpha": Decimal("1.999"),
            "beta": Decimal("0.999"),
            "gamma": Decimal("0.999"),
        }
        assert sum(after.values()) == Decimal("3.997")
        fees = {s.key.book: s.fees for s in ledger.books(ACCOUNT)}
        assert sum(fees.values()) == Decimal("0.0000001")


def test_funding_is_split_exactly_by_book_size(ledger: Ledger) -> None:
    two_books(ledger)
    funding = fill("f1", "", "Buy", "3", "100", 10, kind="funding", fee="0.01000001")
    ledger.record_account_fills(ACCOUNT, [funding])
    funding_by_book = {s.key.book: s.funding for s in ledger.books(ACCOUNT)}
    assert funding_by_book == {"alpha": Decimal("0.00666667"), "beta": Decimal("0.00333334")}
    assert sum(funding_by_book.values()) == Decimal("0.01000001")


def test_netting_books_with_a_flat_exchange_agree(ledger: Ledger) -> None:
    ledger.request_open(ALPHA, order_id="a1", side="Buy", qty="1", at=at(0))
    ledger.request_open(BETA, order_id="b1", side="Sell", qty="1", at=at(0))
    ledger.record_fill(ALPHA, fill("e1", "a1", "Buy", "1", "100", 1))
    ledger.record_fill(BETA, fill("e2", "b1", "Sell", "1", "101", 2))
    report = ledger.reconcile(snapshot(600), now=at(600))
    assert [o.outcome.value for o in report.outcomes] == ["agrees"]
    assert sizes(ledger) == {"alpha": 1, "beta": -1}
    assert ledger.account_position(ACCOUNT).size == 0  # type: ignore[union-attr]


def test_a_phantom_with_two_books_is_confirmed_once_per_account_and_corrected_in_each(
    ledger_url: str,
) -> None:
    policy = AllocationPolicy(pro_rata={"phantom"})
    with Ledger.open(ledger_url, allocation=policy) as ledger:
        two_books(ledger)
        first = ledger.reconcile(snapshot(600), now=at(600))
        assert [(str(o.key), o.outcome.value) for o in first.outcomes] == [
            (str(ACCOUNT), "suspect")
        ]
        for state in ledger.books(ACCOUNT):  # the account's suspect, visible on each book
            assert state.suspect is not None and state.suspect.count == 1
        second = ledger.reconcile(snapshot(660), now=at(660))
        assert [o.outcome.value for o in second.outcomes] == ["corrected"]
        assert sizes(ledger) == {"alpha": 0, "beta": 0}
        for book in (ALPHA, BETA):
            reconciled = [e for e in ledger.history(book) if isinstance(e, Reconciled)]
            assert [(r.kind, r.after_size, r.snapshot_taken_at) for r in reconciled] == [
                ("phantom", 0, at(660))
            ]
        assert ledger.reconcile(snapshot(720), now=at(720)).outcomes[0].outcome.value == "agrees"


def test_a_phantom_goes_to_the_unassigned_book_by_default(ledger: Ledger) -> None:
    two_books(ledger)
    ledger.reconcile(snapshot(600), now=at(600))
    ledger.reconcile(snapshot(660), now=at(660))
    assert sizes(ledger) == {"": -3, "alpha": 2, "beta": 1}
    ledger.reconcile(snapshot(720), now=at(720))
    assert ledger.account_position(ACCOUNT).size == 0  # type: ignore[union-attr]


def test_a_book_is_never_closed_by_another_books_fill(ledger: Ledger) -> None:
    two_books(ledger)
    ledger.request_exit(BETA, order_id="b2", qty="1", at=at(3))
    ledger.request_exit(ALPHA, order_id="a2", qty="2", at=at(3))
    ledger.record_account_fills(ACCOUNT, [fill("e3", "b2", "Sell", "1", "120", 4)])
    alpha = ledger.position(ALPHA)
    assert alpha is not None and alpha.size == 2 and alpha.pending("a2") is not None
    assert sizes(ledger)["beta"] == 0


def test_a_held_correction_of_an_account_with_books_is_approved_for_all_of_them(
    ledger_url: str,
) -> None:
    hold = ReconcilePolicy(hold_for_approval={"phantom"})
    with Ledger.open(
        ledger_url, policy=hold, allocation=AllocationPolicy(pro_rata={"phantom"})
    ) as ledger:
        two_books(ledger)
        ledger.reconcile(snapshot(600), now=at(600))
        report = ledger.reconcile(snapshot(660), now=at(660))
        assert report.outcomes[0].outcome.value == "proposed"
        assert not ledger.can_trade(ALPHA) and not ledger.can_trade(BETA)
        [held] = ledger.proposals()
        result = ledger.approve(held.proposal.proposal_id, operator="ana", at=at(700))  # type: ignore[union-attr]
        assert result.applied
        assert sizes(ledger) == {"": 0, "alpha": 0, "beta": 0}
        assert ledger.can_trade(ALPHA)


def test_every_execution_of_an_order_stays_in_its_book_within_one_batch(ledger_url: str) -> None:
    with Ledger.open(ledger_url, allocation=AllocationPolicy(unassigned="manual")) as ledger:
        two_books(ledger)
        ledger.request_open(ACCOUNT, order_id="d1", side="Buy", qty="1", at=at(3))
        completing = fill("e3", "d1", "Buy", "1", "100", 4, leaves_qty="0")
        beyond = fill("e4", "d1", "Buy", "0.2", "100", 5)  # the order ended with the first
        ledger.record_account_fills(ACCOUNT, [completing, beyond])
        assert sizes(ledger) == {"": Decimal("1.2"), "alpha": 2, "beta": 1}


def test_a_late_execution_of_an_ended_default_book_order_stays_in_the_default_book(
    ledger_url: str,
) -> None:
    """With named books, the default book is a strategy like any other: its order, once ended,
    still owns its executions (they are not a manual trade for the unassigned book)."""
    with Ledger.open(ledger_url, allocation=AllocationPolicy(unassigned="manual")) as ledger:
        two_books(ledger)
        ledger.request_open(ACCOUNT, order_id="d1", side="Sell", qty="1", at=at(3))
        ledger.record_order_end(ACCOUNT, order_id="d1", status="Cancelled", at=at(5))
        ledger.record_account_fills(ACCOUNT, [fill("e9", "d1", "Sell", "0.5", "120", 4)])
        assert sizes(ledger) == {"": Decimal("-0.5"), "alpha": 2, "beta": 1}
        with pytest.raises(InvalidInput, match="belongs to one book"):
            ledger.request_open(ALPHA, order_id="d1", side="Sell", qty="1", at=at(6))


def test_a_late_execution_the_correction_counted_is_absorbed_in_a_new_unassigned_book(
    ledger_url: str,
) -> None:
    """The ADL is missed; the correction (shared pro rata: alpha alone) counts it; recovered
    late, it goes to the unassigned book, which had no stream at the correction: absorbed there,
    the account stays at the exchange's 0.5 (it went to 0 before the fix)."""
    policy = AllocationPolicy(unassigned="manual", pro_rata={"stale_quantity"})
    with Ledger.open(ledger_url, allocation=policy) as ledger:
        ledger.request_open(ALPHA, order_id="a1", side="Buy", qty="1", at=at(0))
        ledger.record_fill(ALPHA, fill("e1", "a1", "Buy", "1", "100", 1))
        ledger.reconcile(snapshot(600, long("0.5")), now=at(600))
        ledger.reconcile(snapshot(660, long("0.5")), now=at(660))
        assert sizes(ledger) == {"alpha": Decimal("0.5")}
        adl = fill("adl1", "", "Sell", "0.5", "90", 2, kind="adl")
        result = ledger.record_account_fills(ACCOUNT, [adl])
        assert result.position.signed_size == Decimal("0.5")
        assert sizes(ledger) == {"alpha": Decimal("0.5"), "manual": 0}
        assert (
            ledger.reconcile(snapshot(720, long("0.5")), now=at(720)).outcomes[0].outcome.value
            == "agrees"
        )
