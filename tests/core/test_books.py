"""The rules of ``posledger.core.books`` (docs/books.md), each tested with literal book states
and no store. Invariants, numbered as the tests name them:

B1  ``account_view`` sums the books' sizes (signed: netting books cancel), money, versions and
    pending orders; takes the latest fill, correction and lifecycle of any book and the
    earliest opening; the view's key is the account key.
B2  The view's average is over the books on the account's side only (quantity-weighted;
    harmonic on an inverse key); unknown when one of them has none, none when flat.
B3  The view's snapshot and suspect are the latest book's; its proposal is the home book's
    (none when the home book has no stream); one default book is the view itself.
B4  ``to_books``: an ``ExchangeSnapshot`` goes to every book; a proposal and its decision to
    the home book only (registered there if new); the account's ``Closed`` is not copied (each
    book closes its own); any other event is refused.
B5  A correction is written to every book: its share (``Allocated`` first) by the policy, or
    none with the size unchanged; the book's own orders among those cleared; a reduced book
    keeps its average, a grown or opened one takes the exchange's (its own if none);
    ``Closed`` where the book's lifecycle ended; the books' after sizes sum to the account's.
B6  ``decide_account_fills`` routes an execution of a known order (``book_of``) to that book,
    as if recorded there (another book untouched, even holding the opposite side); one of no
    known order to the unassigned book under the default policy.
B7  Pro rata executions: each receiving book gets ``Allocated`` then its part of the fill (its
    side, quantity and fee share, no ``leaves_qty``); the fees sum exactly.
B8  Funding is split by signed size (each share's quantity the book's size); when the books
    hold nothing net it goes whole to the unassigned book.
B9  Duplicates: an exec_id repeated in the batch applies once, an exec_id recorded for a book
    of the account with the same payload is a duplicate; another payload, or another
    account's record, is an ``ExecutionConflict``.
B10 Markers: one ``ExecutionSeen`` per new execution, at the end of the first book's events,
    owned by the order's book (or the account key when allocated); nothing for duplicates.
B11 A late execution the account's last correction already reflected is absorbed in whichever
    book it lands, a book without a stream at the correction (a new unassigned book) too.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import pytest

from posledger import AllocationPolicy, ExecutionConflict, Fill, PositionKey, PositionState, Side
from posledger.core.approval import decide_approval
from posledger.core.books import AccountRecording, account_view, decide_account_fills, to_books
from posledger.core.decide import decide_request, marker_payload
from posledger.core.events import (
    Allocated,
    Closed,
    CorrectionProposed,
    ExchangeSnapshot,
    ExecutionSeen,
    Filled,
    FundingSettled,
    KeyRegistered,
    PartiallyFilled,
    ProposalDecided,
    Reconciled,
    marker_id,
)
from posledger.core.position import ZERO
from posledger.core.reconcile import Outcome
from tests.conftest import T0
from tests.core.literals import KEY, d, filled, fold, fresh, judge
from tests.helpers import at, fill, row, snapshot

ALPHA, BETA, GAMMA = KEY.in_book("alpha"), KEY.in_book("beta"), KEY.in_book("gamma")
DEFAULT = AllocationPolicy()
PRO_RATA = AllocationPolicy(pro_rata={"adl", "phantom", "stale_quantity", "trade"})


def book(key: PositionKey, *fills: Fill) -> PositionState:
    return filled(fresh(key), *fills)


def two_books() -> dict[str, PositionState]:
    """alpha long 2 @ 100 (fee 0.1), beta long 1 @ 110 (fee 0.2): the account long 3."""
    return {
        "alpha": book(ALPHA, fill("e1", "buy", "2", "100", fee="0.1")),
        "beta": book(BETA, fill("e2", "buy", "1", "110", fee="0.2", exec_time=at(1))),
    }


def requested(
    state: PositionState,
    order_id: str,
    side: str | None,
    qty: str,
    when: Any,
    *,
    exit: bool = False,
) -> PositionState:
    """``state`` after a request in its book (the ``OrderBooked`` marker, another stream, left
    out)."""
    events = decide_request(
        state,
        order_id=order_id,
        side=Side.parse(side) if side else None,
        qty=d(qty),
        price=None,
        at=when,
        reduce_only=exit,
    )
    return fold(state, [e for e in events if e.originator_id == state.key.stream_id])


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def by_book(events: dict[PositionKey, list[Any]]) -> dict[str, list[str]]:
    return {key.book: names(stream) for key, stream in events.items()}


def after(
    books: dict[str, PositionState], events: dict[PositionKey, list[Any]]
) -> dict[str, PositionState]:
    """Each book's state once its events are applied (a new book from its registration)."""
    out = dict(books)
    for key, stream in events.items():
        start = out.get(key.book) or fresh(key)
        out[key.book] = fold(start, [e for e in stream if not isinstance(e, ExecutionSeen)])
    return out


def sizes(books: dict[str, PositionState]) -> dict[str, Decimal]:
    return {name: state.signed_size for name, state in books.items()}


# --- B1 sums ------------------------------------------------------------------------------------


def test_b1_the_view_sums_the_books() -> None:
    books = two_books()
    books["beta"] = requested(books["beta"], "b2", "buy", "1", at(2))
    funded = fill("f1", "buy", "2", fee="0.05", kind="funding", exec_time=at(3))
    books["alpha"] = filled(
        books["alpha"], funded, fill("e3", "sell", "1", "130", seq=7, exec_time=at(4))
    )
    view = account_view(KEY, books, "")
    assert view.key == KEY
    assert (view.side, view.size) == (Side.BUY, 2)
    assert view.version == books["alpha"].version + books["beta"].version
    assert view.realized_pnl == books["alpha"].realized_pnl == d(30) - d("0.05")
    assert (view.fees, view.funding) == (d("0.3"), d("0.05"))
    assert view.lifecycle_realized_pnl == d("29.95") and view.lifecycle_fees == d("0.3")
    assert view.lifecycle_funding == d("0.05")
    assert [o.order_id for o in view.pending_orders] == ["b2"]
    assert view.last_fill_seq == 7 and view.last_fill_time == at(4)
    assert view.updated_at == at(4) and view.opened_at == T0
    assert (view.active, view.cost_basis, view.last_closed, view.money_checked_until) == (
        True,
        None,
        None,
        None,
    )
    assert (view.overfills, view.adopted_pnl, view.unexplained_pnl) == (0, 0, 0)


def test_b1_netting_books_make_a_flat_account() -> None:
    books = {
        "alpha": book(ALPHA, fill("e1", "buy", "1", "100")),
        "beta": book(BETA, fill("e2", "sell", "1", "101")),
    }
    view = account_view(KEY, books, "")
    assert (view.side, view.size, view.avg_entry_price) == (None, 0, None)
    assert view.active and view.lifecycle == 1


def test_b1_the_latest_lifecycle_and_correction_of_any_book() -> None:
    books = two_books()
    books["alpha"] = filled(books["alpha"], fill("e3", "sell", "2", "90", exec_time=at(2)))
    books["alpha"] = filled(books["alpha"], fill("e4", "buy", "1", "90", exec_time=at(3)))
    exchange = snapshot(at(11), [row("BTCUSDT", "Buy", "3", avg_price="100", seq=40)])
    books["alpha"] = fold(books["alpha"], judge(books["alpha"], exchange, confirmations=1).events)
    view = account_view(KEY, books, "")
    assert books["alpha"].lifecycle == 2 and view.lifecycle == 2
    assert view.corrected_at == books["alpha"].corrected_at is not None
    assert view.corrected_seq == 40
    assert view.opened_at == min(books["alpha"].opened_at, books["beta"].opened_at)  # type: ignore[type-var]
    assert view.last_fill_seq is None


def test_b1_counts_sum_and_per_key_bookkeeping_is_not_the_accounts() -> None:
    """The first book (fewest events) carries no field of its own into the view but its
    registration: counts and PnL sum, a book's last closed lifecycle and money check are its own."""
    books = two_books()
    books["beta"] = filled(books["beta"], fill("e3", "sell", "1", "120", exec_time=at(2)))
    for order_id in ("a2", "a3", "a4", "a5"):
        books["alpha"] = requested(books["alpha"], order_id, "buy", "1", at(3))
    books["beta"] = requested(books["beta"], "b2", "sell", "1", at(3))
    books["beta"] = attrs.evolve(
        books["beta"],
        overfills=1,
        adopted_pnl=d(2),
        unexplained_pnl=d(3),
        money_checked_until=at(2),
        active=False,
    )
    books["alpha"] = attrs.evolve(
        books["alpha"], overfills=2, adopted_pnl=d(5), unexplained_pnl=d(7)
    )
    assert min(books.values(), key=lambda s: s.version) is books["beta"]
    view = account_view(KEY, books, "")
    assert (view.overfills, view.adopted_pnl, view.unexplained_pnl) == (3, 7, 10)
    assert books["beta"].last_closed is not None and view.last_closed is None
    assert view.money_checked_until is None and view.active
    assert sorted(o.order_id for o in view.pending_orders) == ["a2", "a3", "a4", "a5", "b2"]


def test_b1_books_never_opened_make_a_view_with_no_times() -> None:
    view = account_view(KEY, {"alpha": fresh(ALPHA), "beta": fresh(BETA)}, "")
    assert (view.opened_at, view.last_fill_time, view.last_fill_seq) == (None, None, None)
    assert (view.corrected_at, view.corrected_seq, view.last_snapshot_at) == (None, None, None)
    assert (view.size, view.side, view.avg_entry_price, view.version) == (0, None, None, 2)


# --- B2 averages --------------------------------------------------------------------------------


def test_b2_the_average_is_over_the_books_on_the_accounts_side() -> None:
    books = two_books()
    assert account_view(KEY, books, "").avg_entry_price == d(310) / d(3)
    books["gamma"] = book(GAMMA, fill("e3", "sell", "1", "120"))
    view = account_view(KEY, books, "")
    assert view.size == 2 and view.avg_entry_price == d(310) / d(3)
    short = {
        "alpha": book(ALPHA, fill("e1", "sell", "1", "90")),
        "beta": book(BETA, fill("e2", "sell", "3", "110")),
        "gamma": book(GAMMA, fill("e3", "buy", "1", "1000")),
    }
    assert account_view(KEY, short, "").avg_entry_price == d(420) / d(4)


def test_b2_the_average_on_an_inverse_key_is_harmonic() -> None:
    inverse = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    books = {
        "alpha": book(inverse.in_book("alpha"), fill("e1", "buy", "100", "50000", symbol="BTCUSD")),
        "beta": book(inverse.in_book("beta"), fill("e2", "buy", "100", "40000", symbol="BTCUSD")),
    }
    view = account_view(inverse, books, "")
    assert view.avg_entry_price == d(200) / (d(100) / d(50000) + d(100) / d(40000))
    assert view.avg_entry_price != d(45000)


def test_b2_a_holder_without_an_average_makes_it_unknown() -> None:
    books = two_books()
    books["beta"] = attrs.evolve(books["beta"], avg_entry_price=None)
    assert account_view(KEY, books, "").avg_entry_price is None


# --- B3 snapshot, suspect, proposal, one book ------------------------------------------------


def test_b3_the_latest_snapshot_and_suspect_of_any_book() -> None:
    books = two_books()
    flat = snapshot(at(11), [])
    books["beta"] = fold(books["beta"], judge(books["beta"], flat).events)
    view = account_view(KEY, books, "")
    assert view.last_snapshot_at == at(11)
    assert view.suspect is not None and view.suspect == books["beta"].suspect
    later = snapshot(at(12), [row("BTCUSDT", "Buy", "3")])
    books["alpha"] = fold(books["alpha"], judge(books["alpha"], later).events)
    view = account_view(KEY, books, "")
    assert view.last_snapshot_at == at(12) and view.suspect == books["alpha"].suspect


def test_b3_the_proposal_is_the_home_books() -> None:
    books = two_books()
    held = judge(
        books["beta"], snapshot(at(11), []), confirmations=1, hold_for_approval={"phantom"}
    )
    assert held.outcome is Outcome.PROPOSED
    books["beta"] = fold(books["beta"], held.events)
    assert account_view(KEY, books, "beta").proposal == books["beta"].proposal is not None
    assert account_view(KEY, books, "alpha").proposal is None
    assert account_view(KEY, books, "").proposal is None  # no stream in the home book


def test_b3_one_default_book_is_itself() -> None:
    alone = book(KEY, fill("e1", "buy", "2", "100"))
    assert account_view(KEY, {"": alone}, "") is alone
    named = account_view(KEY, {"alpha": book(ALPHA, fill("e1", "buy", "2", "100"))}, "")
    assert named.key == KEY and named.size == 2 and named.avg_entry_price == 100


# --- B4 to_books: evidence and proposals --------------------------------------------------------


def test_b4_a_snapshot_goes_to_every_book() -> None:
    books = two_books()
    judged = judge(account_view(KEY, books, ""), snapshot(at(11), []))
    assert judged.outcome is Outcome.SUSPECT
    events = to_books(judged.events, books, DEFAULT, KEY, "")
    assert by_book(events) == {"alpha": ["ExchangeSnapshot"], "beta": ["ExchangeSnapshot"]}
    for name, stream in zip(("alpha", "beta"), events.values(), strict=True):
        assert stream[0].originator_version == books[name].version + 1
        assert stream[0].originator_id == KEY.in_book(name).stream_id
        assert stream[0].timestamp == at(11)
    written = after(books, events)
    assert account_view(KEY, written, "").suspect == written["alpha"].suspect is not None


def test_b4_a_proposal_and_its_decision_go_to_the_home_book() -> None:
    books = two_books()
    held = judge(
        account_view(KEY, books, "manual"),
        snapshot(at(11), []),
        confirmations=1,
        hold_for_approval={"phantom"},
    )
    events = to_books(held.events, books, DEFAULT, KEY, "manual")
    assert by_book(events) == {"manual": ["CorrectionProposed"]}
    [proposed] = events[KEY.in_book("manual")]
    assert isinstance(proposed, CorrectionProposed) and proposed.originator_version == 2
    books = after(books, events)
    assert sorted(books) == ["alpha", "beta", "manual"]
    view = account_view(KEY, books, "manual")
    assert view.proposal is not None
    decided, result = decide_approval(view, view.proposal.proposal_id, operator="ana", at=at(12))
    assert result.applied
    events = to_books(decided, books, PRO_RATA, KEY, "manual")
    assert names(events[KEY.in_book("manual")])[:3] == [
        "ProposalDecided",
        "Allocated",
        "Reconciled",
    ]
    assert isinstance(events[KEY.in_book("manual")][0], ProposalDecided)
    assert sizes(after(books, events)) == {"alpha": 0, "beta": 0, "manual": 0}


def test_b4_only_account_level_decisions_are_accepted() -> None:
    books = two_books()
    filled_event = Filled(
        originator_id=KEY.stream_id,
        originator_version=9,
        timestamp=T0,
        exec_id="e9",
        order_id="",
        side="Buy",
        qty=d(1),
        price=d(1),
        fee=ZERO,
        exec_time=T0,
        seq=None,
        kind="trade",
        leaves_qty=None,
        venue_type=None,
        reduce_only=False,
        overfill=ZERO,
        absorbed=False,
    )
    with pytest.raises(ValueError, match="Filled is not an account-level decision"):
        to_books([filled_event], books, DEFAULT, KEY, "")
    assert to_books([], books, DEFAULT, KEY, "") == {}


# --- B5 to_books: corrections -------------------------------------------------------------------


def corrected(
    books: dict[str, PositionState], policy: AllocationPolicy, *rows: Any, orders: Any = ()
) -> dict[PositionKey, list[Any]]:
    """The books' events for the correction a complete snapshot at 11 min makes (one
    confirmation)."""
    view = account_view(KEY, books, policy.unassigned)
    judged = judge(view, snapshot(at(11), rows, open_order_ids=orders), confirmations=1)
    assert judged.outcome is Outcome.CORRECTED, judged
    return to_books(judged.events, books, policy, KEY, policy.unassigned)


def test_b5_a_phantom_shared_pro_rata_closes_every_book() -> None:
    books = two_books()
    events = corrected(books, PRO_RATA)
    assert by_book(events) == {
        "alpha": ["Allocated", "Reconciled", "Closed"],
        "beta": ["Allocated", "Reconciled", "Closed"],
    }
    alpha = events[ALPHA]
    assert alpha[0] == Allocated(
        originator_id=ALPHA.stream_id,
        originator_version=books["alpha"].version + 1,
        timestamp=at(11),
        cause="phantom",
        rule="pro_rata",
        exec_id=None,
        total=d(-3),
        share=d(-2),
        books=["alpha", "beta"],
        account_before=d(3),
        account_after=d(0),
    )
    reconciled, closed = alpha[1], alpha[2]
    assert isinstance(reconciled, Reconciled) and isinstance(closed, Closed)
    assert (reconciled.before_side, reconciled.before_size) == ("buy", 2)
    assert (reconciled.after_side, reconciled.after_size, reconciled.after_avg_price) == (
        None,
        0,
        None,
    )
    assert (closed.reason, closed.lifecycle, closed.fees) == ("phantom", 1, d("0.1"))
    assert events[BETA][0].share == -1
    assert sizes(after(books, events)) == {"alpha": 0, "beta": 0}


def test_b5_a_short_accounts_phantom_buys_every_book_back() -> None:
    books = {
        "alpha": book(ALPHA, fill("e1", "sell", "2", "100")),
        "beta": book(BETA, fill("e2", "sell", "1", "110")),
    }
    events = corrected(books, PRO_RATA)
    assert [e.share for e in (events[ALPHA][0], events[BETA][0])] == [2, 1]
    assert events[ALPHA][0].total == 3
    assert sizes(after(books, events)) == {"alpha": 0, "beta": 0}


def test_b5_by_default_the_unassigned_book_takes_a_correction() -> None:
    books = two_books()
    events = corrected(books, DEFAULT)
    assert by_book(events) == {
        "": ["Allocated", "Reconciled"],
        "alpha": ["Allocated", "Reconciled"],
        "beta": ["Allocated", "Reconciled"],
    }
    assert events[KEY][0].originator_version == 2  # registered on its first event
    nothing = events[ALPHA][0]  # a book without a share still learns what the exchange showed
    assert isinstance(nothing, Allocated)
    assert (nothing.share, nothing.account_before, nothing.account_after) == (0, 3, 0)
    untouched = events[ALPHA][1]
    assert (untouched.before_size, untouched.after_size, untouched.after_side) == (2, 2, "buy")
    assert untouched.after_avg_price == 100
    written = after(books, events)
    assert sizes(written) == {"": -3, "alpha": 2, "beta": 1}
    assert written[""].avg_entry_price is None  # the exchange reported no average to take
    assert account_view(KEY, written, "").size == 0


def test_b5_a_grown_book_takes_the_exchanges_average_a_reduced_one_keeps_its_own() -> None:
    books = two_books()
    books["manual"] = book(KEY.in_book("manual"), fill("m1", "sell", "1", "90"))
    policy = AllocationPolicy(unassigned="manual", pro_rata={"stale_quantity"})
    # the account (long 2) is long 4 on the exchange at 105: +2, an increase, to manual
    events = corrected(books, policy, row("BTCUSDT", "Buy", "4", avg_price="105"))
    written = after(books, events)
    assert sizes(written) == {"alpha": 2, "beta": 1, "manual": 1}
    assert written["manual"].avg_entry_price == 105  # flipped: the exchange's
    assert (written["alpha"].avg_entry_price, written["beta"].avg_entry_price) == (100, 110)
    # no average reported: the correction carries the account's, and a grown book takes it
    grown = corrected(books, AllocationPolicy(unassigned="alpha"), row("BTCUSDT", "Buy", "4"))
    assert (
        after(books, grown)["alpha"].avg_entry_price == account_view(KEY, books, "").avg_entry_price
    )
    assert after(books, grown)["alpha"].size == 4
    # a reduction shared pro rata (in tenths: the exchange's 1.5 is the finest figure; exact
    # -0.25/+0.25 for beta and manual round down to -0.3/+0.2, and the unit left goes to the
    # tie's first name, beta): every book keeps its own average
    reduced = corrected(books, policy, row("BTCUSDT", "Buy", "1.5", avg_price="99"))
    written = after(books, reduced)
    assert sizes(written) == {"alpha": d("1.5"), "beta": d("0.8"), "manual": d("-0.8")}
    assert [written[b].avg_entry_price for b in ("alpha", "beta", "manual")] == [100, 110, 90]


def test_b5_a_grown_book_keeps_its_own_average_when_the_correction_has_none() -> None:
    netting = {
        "alpha": book(ALPHA, fill("e1", "buy", "1", "100")),
        "beta": book(BETA, fill("e2", "sell", "1", "120")),
    }
    events = corrected(netting, AllocationPolicy(unassigned="alpha"), row("BTCUSDT", "Buy", "1"))
    [reconciled] = [e for e in events[ALPHA] if isinstance(e, Reconciled)]
    assert reconciled.after_avg_price == 100 and reconciled.after_size == 2


def test_b5_each_book_clears_only_its_own_orders() -> None:
    books = two_books()
    books["alpha"] = requested(books["alpha"], "a9", "buy", "1", at(2))
    books["beta"] = requested(books["beta"], "b9", "buy", "1", at(2))
    events = corrected(books, PRO_RATA, orders=["b9"])
    assert [e.cleared_orders for e in events[ALPHA] if isinstance(e, Reconciled)] == [["a9"]]
    assert [e.cleared_orders for e in events[BETA] if isinstance(e, Reconciled)] == [[]]
    written = after(books, events)
    assert written["alpha"].pending_orders == ()
    assert [o.order_id for o in written["beta"].pending_orders] == ["b9"]


# --- B6 routing -------------------------------------------------------------------------------


def nobody(_: str) -> str | None:
    return None


def never(_: UUID) -> str | None:
    return None


def record(
    books: dict[str, PositionState],
    fills: list[Fill],
    policy: AllocationPolicy = DEFAULT,
    book_of: Callable[[str], str | None] = nobody,
    recorded: Callable[[UUID], str | None] = never,
) -> AccountRecording:
    return decide_account_fills(KEY, books, fills, policy, book_of, recorded)


def test_b6_a_known_orders_execution_goes_to_its_book() -> None:
    books = two_books()
    books["beta"] = requested(books["beta"], "b2", None, "1", at(2), exit=True)
    books["alpha"] = requested(books["alpha"], "a2", None, "2", at(2), exit=True)
    owner = {"b2": "beta", "a2": "alpha"}.get
    exit_fill = fill("e3", "sell", "1", "120", order_id="b2", exec_time=at(3))
    recording = record(books, [exit_fill], PRO_RATA, owner)
    assert by_book(recording.events) == {"beta": ["Filled", "Closed", "ExecutionSeen"]}
    assert recording.books == {"e3": ("beta",)}
    assert [(r.exec_id, r.duplicate, r.event) for r in recording.results] == [
        ("e3", False, "Filled")
    ]
    written = after(books, recording.events)
    assert sizes(written) == {"alpha": 2, "beta": 0}
    assert written["alpha"].pending("a2") is not None


def test_b6_an_order_of_a_book_without_a_stream_registers_it() -> None:
    recording = record(
        two_books(), [fill("e3", "sell", "3", order_id="g1")], book_of=lambda _: "gamma"
    )
    assert by_book(recording.events) == {"gamma": ["Filled", "ExecutionSeen"]}
    assert recording.events[GAMMA][0].originator_version == 2


def test_b6_an_unknown_order_goes_to_the_unassigned_book() -> None:
    books = two_books()
    manual = fill("m1", "sell", "0.5", "120", order_id="web-1", exec_time=at(5))
    recording = record(books, [manual], AllocationPolicy(unassigned="manual"))
    assert by_book(recording.events) == {"manual": ["Allocated", "Filled", "ExecutionSeen"]}
    allocated = recording.events[KEY.in_book("manual")][0]
    assert (allocated.cause, allocated.rule, allocated.exec_id) == ("trade", "unassigned", "m1")
    assert (allocated.total, allocated.share, allocated.books) == (
        d("-0.5"),
        d("-0.5"),
        ["manual"],
    )
    assert sizes(after(books, recording.events))["manual"] == d("-0.5")


def test_b6_an_account_without_streams_records_in_the_unassigned_book() -> None:
    recording = record(
        {}, [fill("m1", "buy", "1", order_id="web")], AllocationPolicy(unassigned="m")
    )
    assert by_book(recording.events) == {"m": ["Allocated", "Filled", "ExecutionSeen"]}
    assert not recording.events[KEY.in_book("m")][1].absorbed


# --- B7 pro rata executions ---------------------------------------------------------------------


def test_b7_an_adl_is_shared_pro_rata_with_its_fee() -> None:
    books = two_books()
    adl = fill("adl1", "sell", "0.3", "90", kind="adl", fee="0.0301", leaves_qty=d(0))
    recording = record(books, [adl], PRO_RATA)
    assert by_book(recording.events) == {
        "alpha": ["Allocated", "Filled", "ExecutionSeen"],
        "beta": ["Allocated", "Filled"],
    }
    assert recording.books == {"adl1": ("alpha", "beta")}
    alpha_fill, beta_fill = recording.events[ALPHA][1], recording.events[BETA][1]
    assert (alpha_fill.side, alpha_fill.qty, alpha_fill.fee, alpha_fill.leaves_qty) == (
        "sell",
        d("0.2"),
        d("0.02006667"),
        None,
    )
    assert (beta_fill.qty, beta_fill.fee) == (d("0.1"), d("0.01003333"))
    assert [e.share for e in (recording.events[ALPHA][0], recording.events[BETA][0])] == [
        d("-0.2"),
        d("-0.1"),
    ]
    assert recording.events[ALPHA][0].total == d("-0.3")
    written = after(books, recording.events)
    assert sizes(written) == {"alpha": d("1.8"), "beta": d("0.9")}
    assert (written["alpha"].realized_pnl, written["beta"].realized_pnl) == (-2, -2)
    assert (written["alpha"].fees, written["beta"].fees) == (d("0.12006667"), d("0.21003333"))


def test_b7_beyond_flat_the_unassigned_book_opens_and_fees_follow_quantities() -> None:
    books = two_books()
    adl = fill("adl1", "sell", "4", "90", kind="adl", fee="0.4")
    recording = record(books, [adl], PRO_RATA)
    fills = {
        k.book: next(e for e in s if isinstance(e, Filled)) for k, s in recording.events.items()
    }
    assert {b: (f.side, f.qty, f.fee) for b, f in fills.items()} == {
        "": ("sell", 1, d("0.1")),
        "alpha": ("sell", 2, d("0.2")),
        "beta": ("sell", 1, d("0.1")),
    }
    assert sizes(after(books, recording.events)) == {"": -1, "alpha": 0, "beta": 0}


def test_b7_an_unassigned_book_netting_against_a_flip_is_left_untouched() -> None:
    """alpha long 2, manual short 1 (the unassigned book); an ADL sells 2: alpha's share -2,
    manual's +1 (to flat) and -1 (beyond it) cancel: manual gets nothing (it used to get an
    execution of quantity 0, refused as invalid input, so the ADL could not be recorded)."""
    policy = AllocationPolicy(unassigned="manual", pro_rata={"adl"})
    books = {
        "alpha": book(ALPHA, fill("e1", "buy", "2")),
        "manual": book(KEY.in_book("manual"), fill("e2", "sell", "1")),
    }
    recording = record(books, [fill("adl1", "sell", "2", "90", kind="adl", fee="0.2")], policy)
    assert by_book(recording.events) == {
        "alpha": ["Allocated", "Filled", "Closed", "ExecutionSeen"]
    }
    assert recording.events[ALPHA][1].fee == d("0.2")
    assert sizes(after(books, recording.events)) == {"alpha": 0, "manual": -1}


def test_b7_each_share_takes_its_own_side() -> None:
    """A buy ADL of a short account buys back every book; a netting book's share of a sell is
    a buy."""

    def shares(alpha: str, beta: str, side: str, qty: str) -> dict[str, tuple[str, Decimal]]:
        books = {
            "alpha": book(ALPHA, fill("e1", "buy" if d(alpha) > 0 else "sell", alpha.lstrip("-"))),
            "beta": book(BETA, fill("e2", "buy" if d(beta) > 0 else "sell", beta.lstrip("-"))),
        }
        recording = record(books, [fill("adl1", side, qty, kind="adl")], PRO_RATA)
        return {k.book: (s[1].side, s[1].qty) for k, s in recording.events.items()}

    assert shares("-0.4", "-0.2", "buy", "0.3") == {
        "alpha": ("buy", d("0.2")),
        "beta": ("buy", d("0.1")),
    }
    assert shares("2", "-1", "sell", "1") == {"alpha": ("sell", 2), "beta": ("buy", 1)}


def test_b7_a_pro_rata_increase_goes_whole_to_the_unassigned_book() -> None:
    books = two_books()
    trade = fill("t1", "buy", "1", "100", order_id="web", fee="0.01")
    recording = record(books, [trade], PRO_RATA)
    assert by_book(recording.events) == {"": ["Allocated", "Filled", "ExecutionSeen"]}
    assert recording.events[KEY][1].fee == d("0.01")
    allocated = recording.events[KEY][0]
    assert (allocated.rule, allocated.share) == ("pro_rata", 1)


def test_b7_a_free_execution_splits_no_fee() -> None:
    recording = record(two_books(), [fill("adl1", "sell", "3", "90", kind="adl")], PRO_RATA)
    fees = [e.fee for s in recording.events.values() for e in s if isinstance(e, Filled)]
    assert fees == [0, 0]


# --- B8 funding -----------------------------------------------------------------------------


def test_b8_funding_is_split_by_signed_size() -> None:
    books = two_books()
    books["gamma"] = book(GAMMA, fill("e3", "sell", "1", "100"))
    funding = fill("f1", "buy", "2", "100", kind="funding", fee="0.02")
    recording = record(books, [funding])
    assert by_book(recording.events) == {
        "alpha": ["Allocated", "FundingSettled", "ExecutionSeen"],
        "beta": ["Allocated", "FundingSettled"],
        "gamma": ["Allocated", "FundingSettled"],
    }
    settled = {k.book: s[1] for k, s in recording.events.items()}
    assert {b: (e.qty, e.fee) for b, e in settled.items()} == {
        "alpha": (2, d("0.02")),
        "beta": (1, d("0.01")),
        "gamma": (1, d("-0.01")),
    }
    allocated = recording.events[GAMMA][0]
    assert (allocated.cause, allocated.rule, allocated.total, allocated.share) == (
        "funding",
        "pro_rata",
        d("0.02"),
        d("-0.01"),
    )
    assert recording.results[0].event == "FundingSettled"
    funding_of = {b: s.funding for b, s in after(books, recording.events).items()}
    assert sum(funding_of.values()) == d("0.02")


def test_b8_funding_of_books_netting_to_flat_goes_to_the_unassigned_book() -> None:
    books = {
        "alpha": book(ALPHA, fill("e1", "buy", "1")),
        "beta": book(BETA, fill("e2", "sell", "1")),
    }
    recording = record(books, [fill("f1", "buy", "1", kind="funding", fee="0.01")])
    assert by_book(recording.events) == {"": ["Allocated", "FundingSettled", "ExecutionSeen"]}
    allocated = recording.events[KEY][0]
    assert (allocated.rule, allocated.total, allocated.share) == (
        "unassigned",
        d("0.01"),
        d("0.01"),
    )
    assert isinstance(recording.events[KEY][1], FundingSettled)


# --- B9 duplicates and conflicts ----------------------------------------------------------------


def test_b9_a_repeat_in_the_batch_applies_once() -> None:
    books = two_books()
    trade = fill("t1", "sell", "1", order_id="web")
    other = fill("t2", "sell", "1", order_id="web")
    recording = record(books, [trade, trade, other])
    assert [r.exec_id for r in recording.results] == ["t1", "t2"]
    assert by_book(recording.events) == {
        "": ["Allocated", "Filled", "Allocated", "Filled", "ExecutionSeen", "ExecutionSeen"]
    }
    changed = attrs.evolve(trade, qty=d(2))
    with pytest.raises(ExecutionConflict) as conflict:
        record(books, [trade, changed])
    assert (conflict.value.exec_id, conflict.value.recorded, conflict.value.offered) == (
        "t1",
        trade.payload(),
        changed.payload(),
    )


def test_b9_an_execution_recorded_for_a_book_of_the_account_is_a_duplicate() -> None:
    books = two_books()
    again = fill("e1", "buy", "2", "100", fee="0.1")
    stored = {marker_id("bybit", "main", "e1"): marker_payload(ALPHA, again)}
    later = fill("e9", "sell", "1", order_id="web")
    recording = record(books, [again, later], recorded=stored.get)
    assert [(r.exec_id, r.duplicate, r.event, r.overfill) for r in recording.results] == [
        ("e1", True, None, 0),
        ("e9", False, "Filled", 0),
    ]
    assert recording.books == {"e9": ("",)}
    moved = attrs.evolve(again, price=d(101))
    with pytest.raises(ExecutionConflict) as conflict:
        record(books, [moved], recorded=stored.get)
    assert (conflict.value.exec_id, conflict.value.recorded, conflict.value.offered) == (
        "e1",
        marker_payload(ALPHA, again),
        marker_payload(KEY, moved),
    )
    duplicate_only = record(books, [again], recorded=stored.get)
    assert duplicate_only.events == {} and duplicate_only.markers == ()


def test_b9_an_execution_recorded_for_another_account_conflicts() -> None:
    again = fill("e1", "buy", "2", "100", fee="0.1")
    other = KEY.in_book("alpha")
    other_account = PositionKey(
        venue="bybit", account="main", category="linear", symbol="ETHUSDT", book="alpha"
    )
    stored = {marker_id("bybit", "main", "e1"): marker_payload(other_account, again)}
    with pytest.raises(ExecutionConflict):
        record(two_books(), [again], recorded=stored.get)
    assert str(other).startswith(str(KEY))


# --- B10 markers --------------------------------------------------------------------------------


def test_b10_one_marker_per_new_execution_at_the_end_of_the_first_books_events() -> None:
    books = two_books()
    books["beta"] = requested(books["beta"], "b2", "buy", "1", at(2))
    own = fill("e3", "buy", "1", "100", order_id="b2", exec_time=at(3))
    manual = fill("m1", "sell", "1", "100", order_id="web", exec_time=at(4))
    policy = AllocationPolicy(unassigned="manual")
    recording = record(books, [own, manual], policy, book_of={"b2": "beta"}.get)
    assert by_book(recording.events) == {
        "beta": ["Filled", "ExecutionSeen", "ExecutionSeen"],
        "manual": ["Allocated", "Filled"],
    }
    assert recording.events[KEY.in_book("manual")][0].timestamp == at(4)
    seen = recording.events[BETA][1:]
    assert [(s.exec_id, s.stream_id, s.originator_version, s.timestamp) for s in seen] == [
        ("e3", BETA.stream_id, 1, at(3)),
        ("m1", KEY.in_book("manual").stream_id, 1, at(4)),
    ]
    assert [s.originator_id for s in seen] == [
        marker_id("bybit", "main", "e3"),
        marker_id("bybit", "main", "m1"),
    ]
    assert [m.payload for m in recording.markers] == [
        marker_payload(BETA, own),
        marker_payload(KEY, manual),
    ]
    assert [s.payload for s in seen] == [m.payload for m in recording.markers]
    assert [m.stream_id for m in recording.markers] == [
        marker_id("bybit", "main", "e3"),
        marker_id("bybit", "main", "m1"),
    ]
    assert recording.results[1].event == "Filled" and recording.results[1].overfill == 0


def test_b10_an_overfill_is_reported_in_the_result() -> None:
    books = two_books()
    books["beta"] = requested(books["beta"], "b2", "buy", "1", at(2))
    over = fill("e3", "buy", "1.5", "100", order_id="b2", exec_time=at(3))
    recording = record(books, [over], book_of={"b2": "beta"}.get)
    assert recording.results[0].overfill == d("0.5")
    assert isinstance(recording.events[BETA][0], Filled | PartiallyFilled)
    assert not any(isinstance(e, KeyRegistered) for s in recording.events.values() for e in s)
    assert isinstance(recording.events[BETA][-1], ExecutionSeen)
    assert not any(isinstance(e, ExchangeSnapshot) for e in recording.events[BETA])


# --- B11 absorption on the account ----------------------------------------------------------


def test_b11_a_late_execution_the_accounts_correction_reflected_is_absorbed_in_a_new_book() -> None:
    """alpha long 1; an ADL sells 0.5 unseen; two snapshots correct the account to 0.5, the
    change shared pro rata (alpha alone holds). The ADL, recovered late, goes to the unassigned
    book, which had no stream at the correction: the account's correction counted it, so it
    must be absorbed there too, or the account ends at 0 while the exchange holds 0.5."""
    policy = AllocationPolicy(unassigned="manual", pro_rata={"stale_quantity"})
    books = {"alpha": book(ALPHA, fill("e1", "buy", "1", "100"))}
    events = corrected(books, policy, row("BTCUSDT", "Buy", "0.5", avg_price="100"))
    books = after(books, events)
    assert sizes(books) == {"alpha": d("0.5")}
    adl = fill("adl1", "sell", "0.5", "90", kind="adl", exec_time=at(2))
    recording = record(books, [adl], policy)
    [landed] = [e for e in recording.events[KEY.in_book("manual")] if isinstance(e, Filled)]
    assert landed.absorbed
    written = after(books, recording.events)
    assert account_view(KEY, written, "manual").signed_size == d("0.5")
    later = fill("adl2", "sell", "0.1", "90", kind="adl", exec_time=at(12))
    assert not record(books, [later], policy).events[KEY.in_book("manual")][1].absorbed


def test_b10_each_result_names_its_own_execution_in_a_batch_to_one_book() -> None:
    books = two_books()
    books["beta"] = requested(books["beta"], "b2", "buy", "1", at(2))
    part = fill("e3", "buy", "0.4", order_id="b2", exec_time=at(3))
    rest = fill("e4", "buy", "0.9", order_id="b2", exec_time=at(4))
    recording = record(books, [part, rest], book_of={"b2": "beta"}.get)
    assert [(r.event, r.overfill) for r in recording.results] == [
        ("PartiallyFilled", 0),
        ("Filled", d("0.3")),
    ]
