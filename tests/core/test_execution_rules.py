"""The execution rules of ``decide_*`` and ``evolve``, each tested with literal inputs and no
store. Invariants, numbered as the tests name them:

E1  Average cost: an add moves the average to the quantity-weighted one; a reduce realizes
    ``(price - avg) × qty`` (negated for a short) and keeps the average.
E2  A partial close removes its share of the cost basis; the last close takes what remains, so
    a lifecycle's realized PnL is exact.
E3  Crossing zero ends the lifecycle with the part that flattens it and opens the next with the
    rest at the fill's price; the fee is split in proportion; ``Closed`` carries the ended
    lifecycle's realized PnL, fees and funding; running totals carry on; exits are dropped.
E4  ``Filled`` or ``PartiallyFilled``: ``leaves_qty`` decides when given (0 completes); else the
    fill completes its order when it reaches what remains (the boundary completes); an unknown
    order completes. Only the fill's own order is touched.
E5  ``reduce_only`` comes from the order (an exit) or the hedge leg (a fill on the other side);
    a reduce-only fill never flips.
E6  Overfill: beyond what remains of the order, or (reduce-only) beyond the position; the larger
    is recorded and counted, never clipped; an absorbed fill has none.
E7  Funding: ``FundingSettled`` changes no size, fee, order or last fill; its fee is subtracted
    from realized PnL and added to funding, in total and for the lifecycle.
E8  Absorbed: a fill the last correction's snapshot reflected (``seq <= corrected_seq``, else
    ``exec_time <= corrected_at``; both boundaries absorb) moves no size; its fee and order
    accounting count.
E9  ``last_fill_seq``/``last_fill_time`` are the latest seen: an older fill never moves them back;
    an execution of an unknown type moves the time, never the seq.
E10 After a correction the cost basis is the new size at the kept average (the exchange's, else
    the ledger's), and later reduces realize against it; an unknown cost realizes nothing; a
    flat key keeps no average.
E11 A correction clears the suspect run; a fill leaves it.
E12 ``decide_request`` refuses: an empty order id, an open without side, an exit without side
    on a flat key, an exit on the held side, an order against a hedge leg; the same id with
    other terms. Identical repeats are no-ops.
E13 ``decide_order_end``: an unknown or ended order is a no-op; the end of the last request of
    a never-filled lifecycle closes it (``Closed(reason=order_ended)``).
E14 Batches: duplicates inside one batch apply once; a fill for another symbol or leg is
    refused; ``preview_fills`` returns the folded state.
E15 The close reason is the execution's kind; every kind but funding (unknown too) moves size
    by its signed quantity. ``evolve`` stamps every state with its event's
    version and business time, and refuses a stream that does not start with
    ``KeyRegistered``, a version gap, an unknown event or side; ``register`` a naive time.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import ExecKind, Fill, InvalidInput, PositionState, Side, Status
from posledger.core.decide import (
    decide_fills,
    decide_order_end,
    decide_request,
    preview_fills,
    register,
)
from posledger.core.events import (
    Closed,
    ExecutionEvent,
    Filled,
    FundingSettled,
    OpenRequested,
    OrderEnded,
    PartiallyFilled,
    PositionEvent,
    Reconciled,
)
from posledger.core.position import PendingOrder, evolve
from posledger.core.reconcile import Outcome
from tests.core.literals import (
    KEY,
    LONG_LEG,
    SHORT_LEG,
    T0,
    d,
    ended,
    filled,
    fold,
    fresh,
    judge,
    requested,
)
from tests.helpers import at, fill, row, snapshot

ONE_MICROSECOND = timedelta(microseconds=1)


def execution(state: PositionState, item: Fill) -> ExecutionEvent:
    """The one execution event ``decide_fills`` writes for ``item``."""
    event = decide_fills(state, [item])[0]
    assert isinstance(event, ExecutionEvent)
    return event


def holding(side: str, qty: str, price: str = "100", **more: Any) -> PositionState:
    return filled(fresh(), fill("e0", side, qty, price, **more))


def corrected(
    state: PositionState, side: str, size: str, *, seq: int | None = None, avg: str | None = None
) -> PositionState:
    """``state`` after the correction (one confirmation) that a snapshot taken at 11 min showing
    ``side``/``size``, with ``seq`` and the reported ``avg``, makes."""
    exchange = row(state.key.symbol, side, size, idx=state.key.idx, seq=seq, avg_price=avg)
    judgement = judge(state, snapshot(at(11), [exchange]), confirmations=1)
    assert judgement.outcome is Outcome.CORRECTED, judgement
    return fold(state, judgement.events)


# --- E1 average cost --------------------------------------------------------------------------


def test_e1_adding_moves_the_average_and_reducing_realizes_against_it() -> None:
    state = filled(fresh(), fill("e1", "buy", "1", "100"), fill("e2", "buy", "1", "200"))
    assert (state.side, state.size, state.avg_entry_price, state.cost_basis) == (
        Side.BUY,
        2,
        150,
        300,
    )
    state = filled(state, fill("e3", "sell", "0.5", "180"))
    assert (state.size, state.avg_entry_price, state.cost_basis) == (d("1.5"), 150, 225)
    assert state.realized_pnl == state.lifecycle_realized_pnl == 15


def test_e1_a_short_realizes_with_the_opposite_sign() -> None:
    state = filled(holding("sell", "2", "100"), fill("e1", "buy", "1", "90"))
    assert (state.side, state.size, state.realized_pnl) == (Side.SELL, 1, 10)
    state = filled(state, fill("e2", "buy", "1", "120"))
    assert (state.size, state.realized_pnl, state.status) == (0, -10, Status.FLAT)


# --- E2 partial closes ------------------------------------------------------------------------


def test_e2_partial_closes_share_the_cost_and_the_last_takes_the_rest() -> None:
    state = filled(fresh(), fill("e1", "buy", "1", "7"), fill("e2", "buy", "2", "2"))
    assert state.cost_basis == 11 and state.avg_entry_price == d(11) / d(3)
    state = filled(state, fill("e3", "sell", "1", "5"))
    share = d(11) * d(1) / d(3)  # rounded to 28 digits
    assert state.cost_basis == d(11) - share
    assert state.realized_pnl == d(5) - share
    assert state.avg_entry_price == d(11) / d(3)  # a reduce keeps the average
    state = filled(state, fill("e4", "sell", "2", "5"))
    assert state.realized_pnl == 4  # 15 received for 11 of cost, exactly (no second rounding)
    assert (state.cost_basis, state.avg_entry_price, state.side) == (None, None, None)


# --- E3 crossing zero -------------------------------------------------------------------------


def test_e3_a_flip_closes_the_lifecycle_with_its_figures_and_opens_the_next() -> None:
    """The example of docs/concepts.md: buy 1 @ 100 (fee 0.1); funding paid 0.05; sell 3 @ 110
    (fee 0.3)."""
    state = holding("buy", "1", "100", fee="0.1")
    state = filled(state, fill("f1", "buy", "1", "100", fee="0.05", kind="funding"))
    flip = fill("e2", "sell", "3", "110", fee="0.3", exec_time=at(5))
    events = decide_fills(state, [flip])
    assert [type(e) for e in events] == [Filled, Closed]
    assert events[1] == Closed(
        originator_id=KEY.stream_id,
        originator_version=state.version + 2,
        timestamp=at(5),
        reason="filled",
        lifecycle=1,
        opened_at=T0,
        realized_pnl=d("9.95"),
        fees=d("0.2"),
        funding=d("0.05"),
        cleared_orders=[],
    )
    after = fold(state, events)
    assert (after.side, after.size, after.avg_entry_price) == (Side.SELL, 2, 110)
    assert (after.lifecycle, after.opened_at, after.active) == (2, at(5), True)
    assert (after.lifecycle_realized_pnl, after.lifecycle_fees, after.lifecycle_funding) == (
        0,
        d("0.2"),
        0,
    )
    assert (after.realized_pnl, after.fees, after.funding) == (d("9.95"), d("0.4"), d("0.05"))
    assert after.last_closed is not None and after.last_closed.number == 1


def test_e3_an_exact_close_ends_the_lifecycle_without_opening_one() -> None:
    state = holding("buy", "1", "100", fee="0.1")
    events = decide_fills(state, [fill("e2", "sell", "1", "90", fee="0.1")])
    closing = events[1]
    assert isinstance(closing, Closed)
    assert (closing.realized_pnl, closing.fees, closing.lifecycle) == (-10, d("0.2"), 1)
    after = fold(state, events)
    assert (after.status, after.active, after.lifecycle) == (Status.FLAT, False, 1)
    assert (after.lifecycle_realized_pnl, after.lifecycle_fees) == (0, 0)


def test_e3_a_flip_drops_the_exits_of_the_old_side() -> None:
    state = requested(holding("buy", "1"), "x1", None, "1", exit=True)
    state = requested(state, "o2", "buy", "1")
    events = decide_fills(state, [fill("e2", "sell", "3")])
    closing = events[1]
    assert isinstance(closing, Closed) and closing.cleared_orders == ["x1"]
    assert [o.order_id for o in fold(state, events).pending_orders] == ["o2"]


def test_e3_a_close_with_an_open_request_pending_starts_the_next_lifecycle_at_once() -> None:
    state = requested(holding("buy", "1"), "o2", "buy", "1")
    after = filled(state, fill("e1", "sell", "1", exec_time=at(5)))
    assert (after.status, after.lifecycle, after.opened_at, after.active) == (
        Status.PENDING,
        2,
        at(5),
        True,
    )


# --- E4 Filled or PartiallyFilled -------------------------------------------------------------


@pytest.mark.parametrize(
    ("qty", "leaves", "kind", "order_filled"),
    [
        ("1", None, PartiallyFilled, d(1)),
        ("3", None, Filled, None),  # reaches what remains: complete
        ("1", "0", Filled, None),  # the venue says complete
        ("3", "1", PartiallyFilled, d(3)),  # the venue says still working
    ],
)
def test_e4_leaves_qty_else_what_remains_decides_completion(
    qty: str, leaves: str | None, kind: type, order_filled: Decimal | None
) -> None:
    state = requested(fresh(), "o1", "buy", "3")
    event = execution(state, fill("e1", "buy", qty, order_id="o1", leaves_qty=leaves))
    assert type(event) is kind
    assert event.leaves_qty == (None if leaves is None else d(leaves))
    order = fold(state, [event]).pending("o1")
    assert (order.filled if order is not None else None) == order_filled


def test_e4_successive_partial_fills_complete_at_what_remains() -> None:
    state = requested(fresh(), "o1", "buy", "3")
    state = filled(state, fill("e1", "buy", "1", order_id="o1"))
    order = state.pending("o1")
    assert order is not None and (order.filled, order.remaining) == (1, 2)
    assert type(execution(state, fill("e2", "buy", "1.9", order_id="o1"))) is PartiallyFilled
    assert type(execution(state, fill("e2", "buy", "2", order_id="o1"))) is Filled


@pytest.mark.parametrize("order_id", ["", "unknown"])
def test_e4_a_fill_of_no_known_order_is_filled(order_id: str) -> None:
    state = requested(fresh(), "o1", "buy", "3")
    event = execution(state, fill("e1", "buy", "1", order_id=order_id))
    assert type(event) is Filled
    assert fold(state, [event]).pending_orders == state.pending_orders


def test_e4_a_fill_touches_only_its_own_order() -> None:
    state = requested(fresh(), "o1", "buy", "3")
    state = requested(state, "o2", "buy", "3")
    partly = filled(state, fill("e1", "buy", "1", order_id="o1"))
    assert [(o.order_id, o.filled) for o in partly.pending_orders] == [("o1", 1), ("o2", 0)]
    done = filled(partly, fill("e2", "buy", "2", order_id="o1"))
    assert [(o.order_id, o.filled) for o in done.pending_orders] == [("o2", 0)]


# --- E5 reduce_only ---------------------------------------------------------------------------


def test_e5_an_exit_fill_is_reduce_only_and_never_flips() -> None:
    state = requested(holding("buy", "1"), "x1", None, "3", exit=True)
    event = execution(state, fill("e1", "sell", "3", order_id="x1"))
    assert event.reduce_only
    after = fold(state, [event])
    assert (after.size, after.side, after.status) == (0, None, Status.FLAT)


@pytest.mark.parametrize(
    ("key", "side", "reduce_only"),
    [
        (LONG_LEG, "sell", True),
        (LONG_LEG, "buy", False),
        (SHORT_LEG, "buy", True),
        (SHORT_LEG, "sell", False),
        (KEY, "sell", False),
        (KEY, "buy", False),
    ],
)
def test_e5_a_fill_against_a_hedge_leg_is_reduce_only(
    key: Any, side: str, reduce_only: bool
) -> None:
    event = execution(fresh(key), fill("e1", side, "1"))
    assert event.reduce_only is reduce_only


def test_e5_the_other_side_of_a_long_leg_only_reduces_it() -> None:
    state = filled(fresh(LONG_LEG), fill("e1", "buy", "2"))
    after = filled(state, fill("e2", "sell", "5"))
    assert (after.size, after.side, after.overfills) == (0, None, 1)


def test_e5_an_open_order_on_the_other_side_of_a_one_way_key_may_flip() -> None:
    state = requested(holding("buy", "1"), "o1", "sell", "3")
    event = execution(state, fill("e1", "sell", "3", order_id="o1"))
    assert not event.reduce_only and event.overfill == 0
    after = fold(state, [event])
    assert (after.side, after.size, after.lifecycle) == (Side.SELL, 2, 2)


# --- E6 overfill ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "order", "qty", "overfill"),
    [
        (None, ("o1", "buy", "1", False), "1.5", "0.5"),  # over the order
        (None, ("o1", "buy", "1", False), "1", "0"),
        ("1", ("x1", None, "2", True), "1.5", "0.5"),  # over the position, not the order
        ("0.5", ("x1", None, "1", True), "2", "1.5"),  # over both: the larger
        ("1", ("x1", None, "2", True), "1", "0"),
    ],
)
def test_e6_an_overfill_is_recorded_and_counted(
    held: str | None, order: tuple[str, str | None, str, bool], qty: str, overfill: str
) -> None:
    state = holding("buy", held) if held is not None else fresh()
    order_id, side, order_qty, exit = order
    state = requested(state, order_id, side, order_qty, exit=exit)
    fill_side = "sell" if exit else "buy"
    event = execution(state, fill("e1", fill_side, qty, order_id=order_id))
    assert event.overfill == d(overfill)
    assert fold(state, [event]).overfills == (1 if d(overfill) > 0 else 0)


def test_e6_an_overfill_is_applied_in_full() -> None:
    state = requested(fresh(), "o1", "buy", "1")
    assert filled(state, fill("e1", "buy", "1.5", order_id="o1")).size == d("1.5")


def test_e6_a_reduce_only_fill_on_the_positions_own_side_is_all_overfill() -> None:
    state = requested(holding("buy", "1"), "x1", None, "2", exit=True)
    event = execution(state, fill("e1", "buy", "1", order_id="x1"))
    assert (event.reduce_only, event.overfill) == (True, 1)
    assert fold(state, [event]).size == 1


def test_e6_a_reduce_only_overfill_charges_its_whole_fee_to_the_closed_lifecycle() -> None:
    state = requested(holding("buy", "1", fee="0.1"), "x1", None, "3", exit=True)
    events = decide_fills(state, [fill("e1", "sell", "3", fee="0.3", order_id="x1")])
    closing = events[-1]
    assert isinstance(closing, Closed) and closing.fees == d("0.4")


# --- E7 funding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fee", ["0.05", "-0.05"])
def test_e7_funding_moves_cash_only(fee: str) -> None:
    state = requested(holding("buy", "2", seq=7, exec_time=at(1)), "x1", None, "2", exit=True)
    funding = fill("f1", "buy", "2", "105", fee=fee, kind="funding", exec_time=at(8))
    events = decide_fills(state, [funding])
    event = events[0]
    assert len(events) == 1 and isinstance(event, FundingSettled)
    assert (event.reduce_only, event.overfill, event.absorbed, event.timestamp) == (
        False,
        0,
        False,
        at(8),
    )
    after = fold(state, events)
    paid = d(fee)
    assert (after.funding, after.lifecycle_funding) == (paid, paid)
    assert (after.realized_pnl, after.lifecycle_realized_pnl) == (-paid, -paid)
    assert (after.size, after.fees, after.pending_orders) == (2, 0, state.pending_orders)
    assert (after.last_fill_seq, after.last_fill_time) == (7, at(1))
    assert (after.version, after.updated_at) == (state.version + 1, at(8))


# --- E8 absorbed fills after a correction -----------------------------------------------------


@pytest.mark.parametrize(("seq", "absorbed"), [(40, True), (50, True), (51, False)])
def test_e8_seq_decides_absorption(seq: int, absorbed: bool) -> None:
    state = corrected(holding("sell", "4160", "0.1", seq=10), "sell", "3160", seq=50)
    late = fill("e1", "buy", "1000", "0.09", seq=seq, fee="0.5", exec_time=at(20))
    event = execution(state, late)
    assert (event.absorbed, event.overfill) == (absorbed, 0)
    after = fold(state, [event])
    assert after.size == (3160 if absorbed else 2160)
    assert after.fees == d("0.5") and after.last_fill_seq == seq
    assert after.lifecycle_fees == d("0.5")


@pytest.mark.parametrize(
    ("exec_time", "absorbed"),
    [(at(10), True), (at(11), True), (at(11) + ONE_MICROSECOND, False)],
)
def test_e8_without_seq_time_decides_absorption(exec_time: Any, absorbed: bool) -> None:
    """A fill stamped exactly at the correcting snapshot is already in it: it must not count
    twice."""
    state = corrected(holding("sell", "4160", "0.1"), "sell", "3160")
    event = execution(state, fill("e1", "buy", "1000", exec_time=exec_time))
    assert event.absorbed is absorbed


def test_e8_time_decides_when_either_side_has_no_seq() -> None:
    with_seq = corrected(holding("buy", "2", seq=10), "buy", "1")
    assert execution(with_seq, fill("e1", "sell", "1", seq=99, exec_time=at(11))).absorbed
    assert not execution(with_seq, fill("e1", "sell", "1", seq=1, exec_time=at(12))).absorbed
    seq_only = corrected(holding("buy", "2", seq=10), "buy", "1", seq=50)
    assert execution(seq_only, fill("e1", "sell", "1", exec_time=at(11))).absorbed
    assert not execution(seq_only, fill("e1", "sell", "1", exec_time=at(12))).absorbed


def test_e8_a_fill_of_an_order_requested_after_the_correction_is_never_absorbed() -> None:
    """Issue #16: snapshots stamped by a clock 60 s fast. After a confirmed phantom correction
    at 11 min, the bot orders 2 at 12 min and the exchange fills it at (its) 10 min: earlier
    than the snapshot's taken_at, yet the snapshot cannot have counted it."""
    state = corrected(holding("buy", "1"), "buy", "0")
    assert state.size == 0 and state.corrected_at == at(11)
    state = requested(state, "o2", "buy", "2", at(12))
    event = execution(state, fill("e2", "buy", "2", order_id="o2", exec_time=at(10)))
    assert not event.absorbed
    assert fold(state, [event]).size == 2


def test_e8_an_order_requested_at_the_correcting_snapshot_is_not_absorbed() -> None:
    """Requested exactly at the snapshot's taken_at: as for orders in flight, the read cannot
    have seen it, so its fills were not counted."""
    state = corrected(holding("buy", "1"), "buy", "0")
    state = requested(state, "o2", "buy", "2", at(11))
    assert not execution(state, fill("e2", "buy", "2", order_id="o2", exec_time=at(10))).absorbed


def test_e8_an_order_known_before_the_correction_is_judged_by_time() -> None:
    state = requested(holding("buy", "1"), "o2", "buy", "2", at(1))
    state = corrected(state, "buy", "2")
    assert state.pending("o2") is not None
    event = execution(state, fill("e2", "buy", "2", order_id="o2", exec_time=at(10)))
    assert event.absorbed


def test_e8_seq_decides_even_for_an_order_requested_after_the_correction() -> None:
    """``seq`` is the exchange's own order: it outranks a request time from the bot's clock."""
    state = corrected(holding("buy", "1", seq=10), "buy", "3", seq=50)
    state = requested(state, "o2", "buy", "2", at(12))
    reflected = fill("e2", "buy", "2", order_id="o2", seq=50, exec_time=at(13))
    assert execution(state, reflected).absorbed


@pytest.mark.parametrize(("order_qty", "remaining"), [("1500", 500), ("600", None)])
def test_e8_an_absorbed_fill_still_counts_for_its_order(
    order_qty: str, remaining: int | None
) -> None:
    """Seed 002: the missed exit fill of 1000 delivered after the 4160 → 3160 correction; even
    beyond what its order had left, an absorbed fill is no overfill."""
    state = requested(holding("sell", "4160", "0.1"), "x1", None, order_qty, exit=True)
    state = corrected(state, "sell", "3160")
    event = execution(state, fill("e1", "buy", "1000", order_id="x1", exec_time=at(5)))
    assert (event.absorbed, event.overfill) == (True, 0)
    after = fold(state, [event])
    order = after.pending("x1")
    assert (order.remaining if order is not None else None) == remaining
    assert (after.size, after.realized_pnl, after.overfills) == (3160, 0, 0)


# --- E9 the latest fill -----------------------------------------------------------------------


def test_e9_an_older_fill_never_moves_the_last_fill_back() -> None:
    state = holding("buy", "1", seq=10, exec_time=at(10))
    older = filled(state, fill("e1", "buy", "1", seq=5, exec_time=at(5)))
    assert (older.last_fill_seq, older.last_fill_time) == (10, at(10))
    unknown = filled(state, fill("e1", "buy", "1", exec_time=at(5)))
    assert (unknown.last_fill_seq, unknown.last_fill_time) == (10, at(10))
    newer = filled(state, fill("e1", "buy", "1", seq=11, exec_time=at(11)))
    assert (newer.last_fill_seq, newer.last_fill_time) == (11, at(11))


def test_e9_an_unknown_execution_type_moves_the_last_fill_time_not_its_seq() -> None:
    state = holding("buy", "2", seq=10, exec_time=at(10))
    after = filled(state, fill("e1", "sell", "1", seq=11, exec_time=at(11), kind="unknown"))
    assert (after.size, after.last_fill_seq, after.last_fill_time) == (1, 10, at(11))


def test_e9_the_first_seq_is_taken_whenever_it_comes() -> None:
    state = holding("buy", "1", exec_time=at(10))
    assert state.last_fill_seq is None
    assert filled(state, fill("e1", "buy", "1", seq=3, exec_time=at(1))).last_fill_seq == 3


# --- E10 cost basis after a correction --------------------------------------------------------


@pytest.mark.parametrize(("avg", "kept", "pnl"), [("120", 120, 10), (None, 100, 30)])
def test_e10_a_stale_quantity_correction_keeps_an_average_to_realize_against(
    avg: str | None, kept: int, pnl: int
) -> None:
    state = corrected(holding("buy", "2", "100"), "buy", "1", avg=avg)
    assert (state.size, state.avg_entry_price, state.cost_basis) == (1, kept, kept)
    assert state.realized_pnl == 0
    after = filled(state, fill("e1", "sell", "1", "130", exec_time=at(12)))
    assert after.realized_pnl == pnl


def test_e10_an_unknown_cost_realizes_nothing_and_an_add_prices_it_at_the_fill() -> None:
    unknown = corrected(fresh(), "buy", "2")  # adopted without a reported average
    assert (unknown.avg_entry_price, unknown.cost_basis) == (None, None)
    reduced = filled(unknown, fill("e1", "sell", "1", "130", exec_time=at(12)))
    assert (reduced.realized_pnl, reduced.size, reduced.cost_basis) == (0, 1, None)
    added = filled(unknown, fill("e1", "buy", "1", "130", exec_time=at(12)))
    assert (added.size, added.cost_basis, added.avg_entry_price) == (3, 390, 130)


def test_e10_a_correction_to_flat_keeps_no_average_whatever_its_event_carries() -> None:
    state = holding("buy", "1")
    to_flat = Reconciled(
        originator_id=KEY.stream_id,
        originator_version=state.version + 1,
        timestamp=at(11),
        kind="phantom",
        before_side="buy",
        before_size=d(1),
        after_side=None,
        after_size=d(0),
        after_avg_price=d(100),
        snapshot_taken_at=at(11),
        snapshot_seq=None,
        snapshot_avg_price=d(100),
        confirmations=2,
        cleared_orders=[],
    )
    after = evolve(state, to_flat)
    assert (after.size, after.avg_entry_price, after.cost_basis) == (0, None, None)


# --- E11 suspect ------------------------------------------------------------------------------


def test_e11_a_correction_clears_the_suspect_run_and_a_fill_leaves_it() -> None:
    state = holding("buy", "2")
    state = fold(state, judge(state, snapshot(at(10), [row("BTCUSDT", "buy", "1")])).events)
    assert state.suspect is not None and state.suspect.count == 1
    assert filled(state, fill("e1", "buy", "1", exec_time=at(10.5))).suspect == state.suspect
    after = corrected(state, "buy", "1")
    assert after.suspect is None and after.last_snapshot_at == at(11)


# --- E12 requests -----------------------------------------------------------------------------


def request(state: PositionState, **fields: Any) -> list[Any]:
    defaults: dict[str, Any] = {
        "order_id": "o1",
        "side": Side.BUY,
        "qty": d(1),
        "price": None,
        "at": T0,
        "reduce_only": False,
    }
    return decide_request(state, **{**defaults, **fields})


def test_e12_a_request_is_recorded_and_starts_a_lifecycle() -> None:
    state = fresh()
    events = request(state, price=d(99), at=at(1))
    assert events == [
        OpenRequested(
            originator_id=KEY.stream_id,
            originator_version=2,
            timestamp=at(1),
            order_id="o1",
            side="buy",
            qty=d(1),
            price=d(99),
        )
    ]
    after = fold(state, events)
    assert after.pending_orders == (
        PendingOrder(
            "o1",
            Side.BUY,
            qty=d(1),
            filled=d(0),
            reduce_only=False,
            requested_at=at(1),
            price=d(99),
        ),
    )
    assert (after.status, after.lifecycle, after.opened_at) == (Status.PENDING, 1, at(1))


def test_e12_an_exit_takes_the_side_that_reduces_and_starts_nothing_on_a_flat_key() -> None:
    (exit_event,) = request(holding("buy", "1"), order_id="x1", side=None, reduce_only=True)
    assert (type(exit_event).__name__, exit_event.side) == ("ExitRequested", "sell")
    flat = fold(fresh(), request(fresh(), order_id="x1", side=Side.SELL, reduce_only=True))
    assert (flat.status, flat.lifecycle, flat.active) == (Status.FLAT, 0, False)


@pytest.mark.parametrize(
    ("state", "fields", "message"),
    [
        (fresh(), {"order_id": ""}, "^order_id must be a non-empty string$"),
        (fresh(), {"side": None}, "^side is required for an open request$"),
        (fresh(), {"side": None, "reduce_only": True}, "no position to exit; pass side="),
        (holding("buy", "1"), {"reduce_only": True}, "an exit of a buy position must sell"),
        (fresh(LONG_LEG), {"side": Side.SELL}, "a hedge buy leg cannot open with a sell order"),
        (
            fresh(LONG_LEG),
            {"side": Side.BUY, "reduce_only": True},
            "a hedge buy leg cannot exit with a buy order",
        ),
        (fresh(SHORT_LEG), {"side": Side.BUY}, "a hedge sell leg cannot open with a buy order"),
        (
            fresh(SHORT_LEG),
            {"side": Side.SELL, "reduce_only": True},
            "a hedge sell leg cannot exit with a sell order",
        ),
        (requested(fresh(), "o1", "buy", "1"), {"qty": d(2)}, "'o1' is already pending"),
        (requested(fresh(), "o1", "buy", "1"), {"side": Side.SELL}, "'o1' is already pending"),
        (
            requested(holding("buy", "1"), "o1", "buy", "1"),
            {"side": Side.SELL, "reduce_only": True},
            "'o1' is already pending with other terms",
        ),
    ],
)
def test_e12_a_request_is_refused(
    state: PositionState, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        request(state, **fields)


def test_e12_hedge_legs_accept_their_own_opens_and_exits() -> None:
    assert len(request(fresh(LONG_LEG), side=Side.BUY)) == 1
    assert len(request(fresh(LONG_LEG), side=Side.SELL, reduce_only=True)) == 1
    assert len(request(fresh(SHORT_LEG), side=Side.SELL)) == 1
    assert len(request(fresh(SHORT_LEG), side=Side.BUY, reduce_only=True)) == 1


def test_e12_repeating_an_identical_request_is_a_no_op_whatever_its_price_and_time() -> None:
    state = requested(fresh(), "o1", "buy", "1")
    assert request(state, price=d(5), at=at(3)) == []


# --- E13 order ends ---------------------------------------------------------------------------


def test_e13_ending_an_unknown_or_ended_order_is_a_no_op() -> None:
    state = requested(fresh(), "o1", "buy", "1")
    assert decide_order_end(state, order_id="other", status="Cancelled", at=at(1)) == []
    gone = ended(state, "o1", at(1))
    assert decide_order_end(gone, order_id="o1", status="Cancelled", at=at(2)) == []


def test_e13_the_end_of_a_never_filled_lifecycle_closes_it() -> None:
    state = requested(fresh(), "o1", "buy", "1", at(1))
    events = decide_order_end(state, order_id="o1", status="Rejected", at=at(2))
    assert events == [
        OrderEnded(
            originator_id=KEY.stream_id,
            originator_version=3,
            timestamp=at(2),
            order_id="o1",
            status="Rejected",
        ),
        Closed(
            originator_id=KEY.stream_id,
            originator_version=4,
            timestamp=at(2),
            reason="order_ended",
            lifecycle=1,
            opened_at=at(1),
            realized_pnl=d(0),
            fees=d(0),
            funding=d(0),
            cleared_orders=[],
        ),
    ]
    assert fold(state, events).status is Status.FLAT


@pytest.mark.parametrize(
    "state",
    [
        requested(requested(fresh(), "o1", "buy", "1"), "o2", "buy", "1"),  # another request
        requested(holding("buy", "1"), "o1", "buy", "1"),  # a position held
        requested(holding("buy", "1"), "o1", None, "1", exit=True),  # an exit of it
    ],
)
def test_e13_an_order_end_that_leaves_the_lifecycle_going_closes_nothing(
    state: PositionState,
) -> None:
    events = decide_order_end(state, order_id="o1", status="Cancelled", at=at(1))
    assert [type(e) for e in events] == [OrderEnded]
    assert fold(state, events).pending("o1") is None


# --- E14 batches ------------------------------------------------------------------------------


def test_e14_duplicates_inside_one_batch_apply_once() -> None:
    batch = [fill("e1", "buy", "1"), fill("e1", "buy", "1"), fill("e2", "buy", "2")]
    events, after = preview_fills(fresh(), batch)
    assert len(events) == 2 and after.size == 3
    assert after == fold(fresh(), events)


@pytest.mark.parametrize(
    ("other", "message"),
    [({"symbol": "ETHUSDT"}, "e2 is for ETHUSDT, not"), ({"idx": 1}, "e2 is for positionIdx 1")],
)
def test_e14_a_fill_for_another_key_is_refused(other: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decide_fills(fresh(), [fill("e1", "buy", "1"), fill("e2", "buy", "1", **other)])


def test_e14_a_fill_naming_its_own_key_is_accepted() -> None:
    assert len(decide_fills(fresh(), [fill("e1", "buy", "1", symbol="BTCUSDT", idx=0)])) == 1


# --- E15 close reasons and stream order -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("trade", "filled"),
        ("liquidation", "liquidated"),
        ("adl", "adl"),
        ("delivery", "delivered"),
        ("settle", "settled"),
        ("block_trade", "block_trade"),
        ("move_position", "position_moved"),
        ("spread_trade", "spread_trade"),
        ("corporate_action", "corporate_action"),
        ("unknown", "unknown_execution"),
    ],
)
def test_e15_the_close_reason_is_the_executions_kind(kind: str, reason: str) -> None:
    events = decide_fills(holding("buy", "2"), [fill("e1", "sell", "2", kind=kind)])
    closing = events[-1]
    assert isinstance(closing, Closed) and closing.reason == reason


@pytest.mark.parametrize("kind", [k for k in ExecKind if k is not ExecKind.FUNDING])
def test_e15_every_kind_but_funding_moves_size_by_its_signed_quantity(kind: ExecKind) -> None:
    flipped = filled(holding("buy", "1", "100"), fill("e1", "sell", "3", price="90", kind=kind))
    assert (flipped.side, flipped.size, flipped.realized_pnl) == (Side.SELL, 2, -10)
    (event,) = decide_fills(holding("buy", "1"), [fill("e1", "buy", "1", kind=kind)])
    assert (type(event).__name__, event.kind) == ("Filled", kind.value)


def test_e15_evolve_refuses_a_stream_out_of_order() -> None:
    state = holding("buy", "1")
    with pytest.raises(ValueError, match="must start with KeyRegistered, not Filled"):
        evolve(None, decide_fills(state, [fill("e1", "buy", "1")])[0])
    with pytest.raises(ValueError, match="event version 1 does not follow 2"):
        evolve(state, register(KEY, T0))


def test_e15_evolve_refuses_an_unknown_event_or_side() -> None:
    state = holding("buy", "1")
    unknown = PositionEvent(KEY.stream_id, state.version + 1, at(1))
    with pytest.raises(ValueError, match="unknown event PositionEvent"):
        evolve(state, unknown)
    bad_side = dataclasses.replace(execution(state, fill("e1", "buy", "1")), side="hold")
    with pytest.raises(ValueError, match="'hold'"):
        evolve(state, bad_side)


def test_e15_every_event_stamps_the_version_and_business_time() -> None:
    state = fresh()
    assert (state.version, state.updated_at) == (1, T0)
    state = requested(state, "o1", "buy", "2", at(1))
    assert (state.version, state.updated_at) == (2, at(1))
    state = filled(state, fill("e1", "buy", "1", order_id="o1", exec_time=at(2)))
    assert (state.version, state.updated_at) == (3, at(2))
    state = filled(state, fill("f1", "buy", "1", fee="0.1", kind="funding", exec_time=at(3)))
    assert (state.version, state.updated_at) == (4, at(3))
    state = ended(state, "o1", at(4))
    assert (state.version, state.updated_at) == (5, at(4))
    state = corrected(state, "buy", "2")
    assert (state.version, state.updated_at) == (6, at(11))
    state = filled(state, fill("e2", "sell", "2", exec_time=at(12)))  # Filled, then Closed
    assert (state.version, state.updated_at) == (8, at(12))


def test_e15_register_refuses_a_naive_time() -> None:
    with pytest.raises(InvalidInput, match="at must be timezone-aware"):
        register(KEY, T0.replace(tzinfo=None))
