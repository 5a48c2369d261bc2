"""The reconciliation rules, each tested as a pure function: a literal ``PositionState`` and
``Snapshot`` in, a ``Judgement`` out; no store (states are built with ``decide_*``/``evolve``).

The steps run in the order docs/design.md#rules gives them (coverage is the caller's). Invariants,
numbered as the tests name them:

R1  Agreement: both flat, or the same side with ``|ledger - exchange| <= tolerance`` (the
    boundary agrees), is ``agrees`` and writes nothing. A flat side never agrees with an open one,
    whatever the tolerance.
R2  Reset: an agreeing snapshot during a suspect run writes ``ExchangeSnapshot(suspect=False,
    confirmations=0)``, which ends the run.
R3  Heartbeat: an agreeing snapshot is recorded when a heartbeat is due (none recorded yet, or
    ``taken_at - last >= heartbeat``); never when off, never on an unsaved version-1 state.
R4  Staleness: a disagreeing snapshot whose row ``seq`` is below the last fill's is ``stale``
    (equal is not); without ``seq`` on both sides, ``taken_at`` before the last fill's time is
    (equal is not). ``seq`` wins over time. An agreeing snapshot is never stale.
R5  Grace: an order (open or exit) requested less than ``grace`` before ``now`` is in flight
    (exactly ``grace`` is not): ``pending``, nothing written.
R6  Not yet visible: an order requested at or after ``taken_at`` is in flight unless the
    snapshot lists it among its open orders.
R7  Dead opens: an open request past grace and visible to the snapshot is dead when the snapshot
    does not list it, or, where it did not read orders, when ``now - requested_at >= order_ttl``.
    Exits are never dead opens.
R8  Classification: exchange flat → phantom; ledger flat → adopted; sides differ →
    side_mismatch; sizes differ → stale_quantity; both flat with a dead open → unfilled_open.
R9  Already seen: a snapshot taken no later than the last recorded one writes nothing:
    ``already_seen`` (with its classification) for a disagreement, ``agrees`` for an agreement.
    It is judged after staleness and orders in flight.
R10 Confirmations: the n-th consecutive snapshot showing the same exchange side and size counts
    n (avg price and seq do not matter); a different state restarts at 1. Below
    ``confirmations``: ``suspect`` and ``ExchangeSnapshot(suspect=True, confirmations=n)``.
R11 Corrections: at ``confirmations``, ``Reconciled`` as ``CORRECTIONS`` says (one test per row:
    what it clears, which average it keeps, whether it closes), stamped with the snapshot's
    ``taken_at`` (not ``now``) and numbered after the state's version; then
    ``Closed(reason=kind)`` when it ended the lifecycle.
R12 Late news: a snapshot no later than a correction's cannot undo it; a late execution the
    correction reflected is absorbed, and the next snapshot agrees.
R13 ``needs_recovery``: the sizes disagree, or some order is at least ``grace`` old.
R14 ``ReconcilePolicy`` refuses negative durations, a negative tolerance and a non-int (or
    bool, or < 1) ``confirmations``.
R15 A ``ReconcileReport`` finds each key's outcome and counts corrections, suspects and events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import ExchangePosition, InvalidInput, PositionState, Side, Snapshot, Status
from posledger.core.events import Closed, ExchangeSnapshot, Reconciled
from posledger.core.reconcile import (
    Correction,
    Judgement,
    KeyOutcome,
    Outcome,
    ReconcilePolicy,
    ReconcileReport,
    needs_recovery,
)
from tests.core.literals import (
    KEY,
    LONG_LEG,
    SHORT_LEG,
    T0,
    d,
    filled,
    fold,
    fresh,
    judge,
    requested,
)
from tests.helpers import at, fill, row, snapshot

SECOND = timedelta(seconds=1)


def btc(side: str | None, size: str, **more: Any) -> ExchangePosition:
    """The exchange's row for KEY."""
    return row("BTCUSDT", side, size, **more)


def suspected(state: PositionState, snap: Snapshot, **policy: Any) -> PositionState:
    """``state`` after its first, suspect, judgement of ``snap``."""
    judgement = judge(state, snap, **policy)
    assert judgement.outcome is Outcome.SUSPECT, judgement
    return fold(state, judgement.events)


def confirmed(state: PositionState, *rows: ExchangePosition) -> tuple[PositionState, Judgement]:
    """``state`` once a snapshot at 10 min showed ``rows`` (a suspect), and the judgement of a
    second one at 11 min showing them again, judged at 12 min."""
    state = suspected(state, snapshot(at(10), list(rows)))
    return state, judge(state, snapshot(at(11), list(rows)), now=at(12))


def with_exit_and_dead_open(state: PositionState, open_side: str) -> PositionState:
    """``state`` with an exit x1 of all it holds and an open request o2 that the exchange is
    not working, both requested at 1 min."""
    state = requested(state, "x1", None, str(state.size), at(1), exit=True)
    return requested(state, "o2", open_side, "1", at(1))


def long_one(seq: int | None = 10) -> PositionState:
    """Long 1 @ 100, filled at T0 (lifecycle 1 opened at T0)."""
    return filled(fresh(), fill("e1", "buy", "1", "100", seq=seq))


def reconciled(
    state: PositionState,
    kind: str,
    before: tuple[str | None, str],
    after: tuple[str | None, str, str | None],
    taken_at: datetime,
    *,
    seq: int | None = None,
    reported: str | None = None,
    cleared: tuple[str, ...] = (),
) -> Reconciled:
    """The ``Reconciled`` that follows ``state`` after two confirmations, stamped with its
    snapshot's time: ``before`` (side, size), ``after`` (side, size, avg price), the snapshot's
    ``seq`` and ``reported`` avg price, the ``cleared`` orders."""
    return Reconciled(
        originator_id=state.key.stream_id,
        originator_version=state.version + 1,
        timestamp=taken_at,
        kind=kind,
        before_side=before[0],
        before_size=d(before[1]),
        after_side=after[0],
        after_size=d(after[1]),
        after_avg_price=None if after[2] is None else d(after[2]),
        snapshot_taken_at=taken_at,
        snapshot_seq=seq,
        snapshot_avg_price=None if reported is None else d(reported),
        confirmations=2,
        cleared_orders=list(cleared),
    )


def closed(state: PositionState, reason: str, taken_at: datetime) -> Closed:
    """The ``Closed`` of lifecycle 1 (opened at T0, no PnL, fees or funding) right after the
    ``Reconciled`` that follows ``state``."""
    return Closed(
        originator_id=state.key.stream_id,
        originator_version=state.version + 2,
        timestamp=taken_at,
        reason=reason,
        lifecycle=1,
        opened_at=T0,
        realized_pnl=d(0),
        fees=d(0),
        funding=d(0),
        cleared_orders=[],
    )


def evidence(state: PositionState, taken_at: datetime, **fields: Any) -> ExchangeSnapshot:
    """The ``ExchangeSnapshot`` that follows ``state``."""
    defaults: dict[str, Any] = {"avg_price": None, "seq": None, "updated_at": None}
    return ExchangeSnapshot(
        originator_id=state.key.stream_id,
        originator_version=state.version + 1,
        timestamp=taken_at,
        taken_at=taken_at,
        **{**defaults, **fields},
    )


# --- R1 agreement -----------------------------------------------------------------------------


def test_r1_both_flat_agree_and_write_nothing() -> None:
    assert judge(fresh(), snapshot(at(5))) == Judgement(Outcome.AGREES, None, [])
    assert judge(fresh(), snapshot(at(5), [btc(None, "0")])) == Judgement(Outcome.AGREES, None, [])


def test_r1_same_side_and_size_agree() -> None:
    assert judge(long_one(), snapshot(at(5), [btc("buy", "1")])) == Judgement(
        Outcome.AGREES, None, []
    )


@pytest.mark.parametrize(
    ("exchange", "tolerance", "outcome"),
    [
        ("1.5", "0.5", Outcome.AGREES),  # the boundary agrees
        ("0.5", "0.5", Outcome.AGREES),
        ("1.5", "0.4", Outcome.SUSPECT),
        ("0.5", "0.4", Outcome.SUSPECT),
        ("1.0001", "0", Outcome.SUSPECT),  # exact by default
    ],
)
def test_r1_tolerance_bounds_the_size_difference(
    exchange: str, tolerance: str, outcome: Outcome
) -> None:
    judgement = judge(long_one(), snapshot(at(5), [btc("buy", exchange)]), tolerance=d(tolerance))
    assert judgement.outcome is outcome


def test_r1_a_flat_side_never_agrees_within_tolerance() -> None:
    wide = d(10)
    assert judge(long_one(), snapshot(at(5)), tolerance=wide).correction is Correction.PHANTOM
    adopted = judge(fresh(), snapshot(at(5), [btc("buy", "1")]), tolerance=wide)
    assert adopted.correction is Correction.ADOPTED


def test_r1_the_other_side_never_agrees_within_tolerance() -> None:
    judgement = judge(long_one(), snapshot(at(5), [btc("sell", "1")]), tolerance=d(10))
    assert judgement.correction is Correction.SIDE_MISMATCH


# --- R2 reset of a suspect run ----------------------------------------------------------------


def test_r2_an_agreeing_snapshot_resets_a_suspect_run() -> None:
    state = suspected(long_one(), snapshot(at(5)))
    assert state.suspect is not None
    agreeing = snapshot(at(6), [btc("buy", "1", avg_price="100", seq=11, updated_at=at(5.5))])
    judgement = judge(state, agreeing)
    expected = evidence(
        state,
        at(6),
        side="buy",
        size=d(1),
        avg_price=d(100),
        seq=11,
        updated_at=at(5.5),
        suspect=False,
        confirmations=0,
    )
    assert judgement == Judgement(Outcome.AGREES, None, [expected])
    after = fold(state, judgement.events)
    assert after.suspect is None and after.last_snapshot_at == at(6)
    restarted = judge(after, snapshot(at(7)))
    assert restarted.outcome is Outcome.SUSPECT and restarted.detail == "1/2"


# --- R3 heartbeat -----------------------------------------------------------------------------


def test_r3_a_heartbeat_records_an_agreeing_snapshot_when_none_was_recorded() -> None:
    state = long_one()
    judgement = judge(state, snapshot(at(5), [btc("buy", "1")]), heartbeat=timedelta(minutes=10))
    expected = evidence(state, at(5), side="buy", size=d(1), suspect=False, confirmations=0)
    assert judgement == Judgement(Outcome.AGREES, None, [expected])


@pytest.mark.parametrize(("minutes", "due"), [(10, True), (11, True), (9.5, False)])
def test_r3_a_heartbeat_is_due_heartbeat_after_the_last_recorded_snapshot(
    minutes: float, due: bool
) -> None:
    every = timedelta(minutes=10)
    first = long_one()
    state = fold(first, judge(first, snapshot(at(0), [btc("buy", "1")]), heartbeat=every).events)
    assert state.last_snapshot_at == at(0)
    judgement = judge(state, snapshot(at(minutes), [btc("buy", "1")]), heartbeat=every)
    assert judgement.outcome is Outcome.AGREES
    assert len(judgement.events) == (1 if due else 0)


def test_r3_no_heartbeat_when_off() -> None:
    assert judge(long_one(), snapshot(at(500), [btc("buy", "1")])).events == []


def test_r3_never_a_heartbeat_on_an_unsaved_version_1_state() -> None:
    assert fresh().version == 1
    assert judge(fresh(), snapshot(at(5)), heartbeat=timedelta(0)).events == []
    saved = requested(fresh(), "x1", "sell", "1", exit=True)  # version 2, still flat
    assert saved.version == 2 and saved.status is Status.FLAT
    assert len(judge(saved, snapshot(at(5)), heartbeat=timedelta(0)).events) == 1


# --- R4 staleness -----------------------------------------------------------------------------


STALE = Judgement(Outcome.STALE, None, [], "snapshot predates the last applied fill")


@pytest.mark.parametrize(("seq", "stale"), [(99, True), (100, False), (101, False)])
def test_r4_seq_orders_a_snapshot_against_the_last_fill(seq: int, stale: bool) -> None:
    state = filled(fresh(), fill("e1", "buy", "2", seq=100))
    judgement = judge(state, snapshot(at(30), [btc("buy", "1", seq=seq)]))
    assert (judgement == STALE) is stale
    assert judgement.outcome is (Outcome.STALE if stale else Outcome.SUSPECT)


def test_r4_seq_wins_over_time() -> None:
    state = filled(fresh(), fill("e1", "buy", "2", seq=100, exec_time=at(10)))
    earlier_but_newer = snapshot(at(5), [btc("buy", "1", seq=101)])
    assert judge(state, earlier_but_newer, now=at(11)).outcome is Outcome.SUSPECT
    later_but_older = snapshot(at(20), [btc("buy", "1", seq=99)])
    assert judge(state, later_but_older) == STALE


@pytest.mark.parametrize(
    ("taken_at", "stale"), [(at(10) - SECOND, True), (at(10), False), (at(10) + SECOND, False)]
)
def test_r4_without_seq_time_orders_a_snapshot_against_the_last_fill(
    taken_at: datetime, stale: bool
) -> None:
    state = filled(fresh(), fill("e1", "buy", "1", exec_time=at(10)))
    judgement = judge(state, snapshot(taken_at), now=at(12))
    assert judgement.outcome is (Outcome.STALE if stale else Outcome.SUSPECT)


def test_r4_time_decides_when_either_side_has_no_seq() -> None:
    with_seq = filled(fresh(), fill("e1", "buy", "2", seq=100, exec_time=at(10)))
    assert judge(with_seq, snapshot(at(9), [btc("buy", "1")]), now=at(12)) == STALE
    assert judge(with_seq, snapshot(at(9)), now=at(12)) == STALE  # flat: no row, no seq
    without_seq = filled(fresh(), fill("e1", "buy", "2", exec_time=at(10)))
    assert judge(without_seq, snapshot(at(9), [btc("buy", "1", seq=5)]), now=at(12)) == STALE


def test_r4_an_agreeing_snapshot_is_never_stale() -> None:
    state = filled(fresh(), fill("e1", "buy", "1", seq=100, exec_time=at(10)))
    assert judge(state, snapshot(at(9), [btc("buy", "1", seq=1)]), now=at(12)).outcome is (
        Outcome.AGREES
    )


# --- R5 grace, R6 not yet visible -------------------------------------------------------------


def test_r5_an_order_younger_than_grace_is_in_flight() -> None:
    state = requested(long_one(), "x1", None, "1", at(10), exit=True)
    state = requested(state, "o2", "buy", "1", at(10))
    judgement = judge(state, snapshot(at(10.5)), now=at(11) - SECOND)
    assert judgement == Judgement(Outcome.PENDING, None, [], "orders in flight: x1, o2")


@pytest.mark.parametrize(("age", "outcome"), [(59, Outcome.PENDING), (60, Outcome.SUSPECT)])
def test_r5_an_order_exactly_grace_old_is_judged(age: int, outcome: Outcome) -> None:
    state = requested(long_one(), "x1", None, "1", at(10), exit=True)
    now = at(10) + timedelta(seconds=age)
    assert judge(state, snapshot(at(10.5)), now=now).outcome is outcome


def test_r5_no_grace_judges_at_once() -> None:
    state = requested(long_one(), "x1", None, "1", at(10), exit=True)
    judgement = judge(state, snapshot(at(10.5)), now=at(10.5), grace=timedelta(0))
    assert judgement.outcome is Outcome.SUSPECT


@pytest.mark.parametrize(
    ("requested_at", "open_orders", "outcome"),
    [
        (at(10), (), Outcome.PENDING),  # at taken_at, not listed: the read could not see it
        (at(10), None, Outcome.PENDING),  # orders not read: not listed either
        (at(10) + SECOND, (), Outcome.PENDING),
        (at(10), ("x1",), Outcome.SUSPECT),  # listed: the read saw it
        (at(10) - SECOND, (), Outcome.SUSPECT),
    ],
)
def test_r6_an_order_requested_at_or_after_the_snapshot_is_in_flight_unless_listed(
    requested_at: datetime, open_orders: tuple[str, ...] | None, outcome: Outcome
) -> None:
    state = requested(long_one(), "x1", None, "1", requested_at, exit=True)
    snap = snapshot(at(10), open_order_ids=open_orders)
    assert judge(state, snap, now=at(20)).outcome is outcome


# --- R7 dead open requests --------------------------------------------------------------------


def never_filled(when: datetime = T0) -> PositionState:
    """A flat key with one open request, o1 (buy 1), never filled."""
    return requested(fresh(), "o1", "buy", "1", when)


@pytest.mark.parametrize(
    ("open_orders", "outcome"),
    [((), Outcome.SUSPECT), (("o1",), Outcome.AGREES), (("other",), Outcome.SUSPECT)],
)
def test_r7_an_open_request_the_snapshot_does_not_list_is_dead(
    open_orders: tuple[str, ...], outcome: Outcome
) -> None:
    judgement = judge(never_filled(), snapshot(at(20), open_order_ids=open_orders))
    assert judgement.outcome is outcome
    if outcome is Outcome.SUSPECT:
        assert judgement.correction is Correction.UNFILLED_OPEN


@pytest.mark.parametrize(
    ("age", "outcome"),
    [(timedelta(minutes=15), Outcome.SUSPECT), (timedelta(minutes=15) - SECOND, Outcome.AGREES)],
)
def test_r7_where_orders_were_not_read_an_open_request_is_dead_at_order_ttl(
    age: timedelta, outcome: Outcome
) -> None:
    snap = snapshot(T0 + age, open_order_ids=None)
    assert judge(never_filled(), snap).outcome is outcome


def test_r7_order_ttl_is_configurable() -> None:
    snap = snapshot(at(5), open_order_ids=None)
    assert judge(never_filled(), snap, order_ttl=timedelta(minutes=5)).outcome is Outcome.SUSPECT
    assert judge(never_filled(), snap, order_ttl=timedelta(minutes=6)).outcome is Outcome.AGREES


@pytest.mark.parametrize(
    ("requested_at", "taken_at", "now", "outcome"),
    [
        (T0, at(1) - SECOND, at(1) - SECOND, Outcome.AGREES),  # within grace
        (T0, at(1), at(1), Outcome.SUSPECT),
        (at(10), at(10), at(20), Outcome.AGREES),  # requested at taken_at: not visible to it
    ],
)
def test_r7_an_open_request_in_flight_is_not_dead(
    requested_at: datetime, taken_at: datetime, now: datetime, outcome: Outcome
) -> None:
    assert judge(never_filled(requested_at), snapshot(taken_at), now=now).outcome is outcome


def test_r7_an_exit_is_never_a_dead_open() -> None:
    state = requested(fresh(), "x1", "sell", "1", T0, exit=True)
    assert judge(state, snapshot(at(20))) == Judgement(Outcome.AGREES, None, [])


# --- R8 classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "exchange", "correction"),
    [
        (long_one(), None, Correction.PHANTOM),
        (fresh(), ("buy", "1"), Correction.ADOPTED),
        (long_one(), ("sell", "1"), Correction.SIDE_MISMATCH),
        (long_one(), ("buy", "2"), Correction.STALE_QUANTITY),
        (long_one(), ("buy", "0.5"), Correction.STALE_QUANTITY),
        (never_filled(), None, Correction.UNFILLED_OPEN),
    ],
)
def test_r8_classification(
    state: PositionState, exchange: tuple[str, str] | None, correction: Correction
) -> None:
    rows = [btc(*exchange)] if exchange is not None else []
    judgement = judge(state, snapshot(at(20), [*rows]))
    assert (judgement.outcome, judgement.correction) == (Outcome.SUSPECT, correction)


# --- R9 already seen --------------------------------------------------------------------------


ALREADY_SEEN = "not later than the last recorded snapshot"


@pytest.mark.parametrize("taken_at", [at(10), at(9)])
def test_r9_a_disagreement_no_later_than_the_last_snapshot_counts_nothing(
    taken_at: datetime,
) -> None:
    state = suspected(long_one(), snapshot(at(10)))
    judgement = judge(state, snapshot(taken_at), now=at(12))
    assert judgement == Judgement(Outcome.ALREADY_SEEN, Correction.PHANTOM, [], ALREADY_SEEN)
    assert judge(state, snapshot(at(10) + SECOND)).outcome is Outcome.CORRECTED


@pytest.mark.parametrize("taken_at", [at(10), at(9)])
def test_r9_an_agreement_no_later_than_the_last_snapshot_resets_nothing(
    taken_at: datetime,
) -> None:
    state = suspected(long_one(), snapshot(at(10)))
    agreeing = snapshot(taken_at, [btc("buy", "1")])
    assert judge(state, agreeing, now=at(12)) == Judgement(Outcome.AGREES, None, [])
    assert len(judge(state, snapshot(at(10) + SECOND, [btc("buy", "1")])).events) == 1


def test_r9_staleness_and_orders_in_flight_are_judged_first() -> None:
    state = suspected(filled(fresh(), fill("e1", "buy", "1", exec_time=at(10))), snapshot(at(11)))
    assert judge(state, snapshot(at(9)), now=at(12)) == STALE
    waiting = requested(state, "x1", None, "1", at(11.5), exit=True)
    assert judge(waiting, snapshot(at(11)), now=at(12)).outcome is Outcome.PENDING


# --- R10 confirmations ------------------------------------------------------------------------


def test_r10_the_first_disagreement_is_recorded_as_suspect() -> None:
    state = long_one()
    snap = snapshot(at(5), [btc("buy", "2", avg_price="101", seq=12, updated_at=at(4))])
    judgement = judge(state, snap, now=at(6))
    expected = evidence(
        state,
        at(5),
        side="buy",
        size=d(2),
        avg_price=d(101),
        seq=12,
        updated_at=at(4),
        suspect=True,
        confirmations=1,
    )
    assert judgement == Judgement(Outcome.SUSPECT, Correction.STALE_QUANTITY, [expected], "1/2")
    run = fold(state, judgement.events).suspect
    assert run is not None
    assert (run.side, run.size, run.count, run.taken_at) == (Side.BUY, d(2), 1, at(5))


def test_r10_a_flat_exchange_is_recorded_without_row_fields() -> None:
    state = long_one()
    judgement = judge(state, snapshot(at(5)))
    expected = evidence(state, at(5), side=None, size=d(0), suspect=True, confirmations=1)
    assert judgement.events == [expected]


def test_r10_the_same_exchange_state_counts_up_whatever_its_price_and_seq() -> None:
    state = suspected(long_one(), snapshot(at(5), [btc("buy", "2", avg_price="101", seq=12)]))
    judgement = judge(state, snapshot(at(6), [btc("buy", "2", avg_price="102", seq=13)]))
    assert judgement.outcome is Outcome.CORRECTED
    first = judgement.events[0]
    assert isinstance(first, Reconciled) and first.confirmations == 2


def test_r10_a_different_exchange_state_restarts_at_one() -> None:
    state = suspected(long_one(), snapshot(at(5), [btc("buy", "2")]))
    for other in (btc("buy", "3"), btc("sell", "2")):
        judgement = judge(state, snapshot(at(6), [other]))
        assert (judgement.outcome, judgement.detail) == (Outcome.SUSPECT, "1/2")
        event = judgement.events[0]
        assert isinstance(event, ExchangeSnapshot) and event.confirmations == 1


def test_r10_confirmations_is_the_number_of_snapshots_needed() -> None:
    state = suspected(long_one(), snapshot(at(5)), confirmations=3)
    second = judge(state, snapshot(at(6)), confirmations=3)
    assert (second.outcome, second.detail) == (Outcome.SUSPECT, "2/3")
    event = second.events[0]
    assert isinstance(event, ExchangeSnapshot) and (event.suspect, event.confirmations) == (
        True,
        2,
    )
    third = judge(fold(state, second.events), snapshot(at(7)), confirmations=3)
    assert third.outcome is Outcome.CORRECTED
    assert isinstance(third.events[0], Reconciled) and third.events[0].confirmations == 3


def test_r10_one_confirmation_corrects_at_once() -> None:
    judgement = judge(long_one(), snapshot(at(5)), confirmations=1)
    assert judgement.outcome is Outcome.CORRECTED
    assert isinstance(judgement.events[0], Reconciled) and judgement.events[0].confirmations == 1


# --- R11 corrections, one per row of CORRECTIONS ----------------------------------------------


def test_r11_phantom_closes_and_clears_the_exits_and_dead_opens() -> None:
    """Seed 000: a long closed on the exchange by a take-profit the bot never saw."""
    state, judgement = confirmed(with_exit_and_dead_open(long_one(), "buy"))
    assert judgement == Judgement(
        Outcome.CORRECTED,
        Correction.PHANTOM,
        [
            reconciled(
                state, "phantom", ("buy", "1"), (None, "0", None), at(11), cleared=("x1", "o2")
            ),
            closed(state, "phantom", at(11)),
        ],
    )
    after = fold(state, judgement.events)
    assert (after.size, after.side, after.avg_entry_price, after.cost_basis) == (
        0,
        None,
        None,
        None,
    )
    assert after.pending_orders == () and after.status is Status.FLAT and not after.active
    assert (after.suspect, after.corrected_at, after.last_snapshot_at) == (None, at(11), at(11))


def test_r11_phantom_from_an_explicit_flat_row_keeps_its_seq_and_price() -> None:
    state, judgement = confirmed(long_one(), btc(None, "0", seq=12, avg_price="0"))
    event = judgement.events[0]
    assert isinstance(event, Reconciled)
    assert (event.snapshot_seq, event.snapshot_avg_price, event.after_avg_price) == (12, 0, None)
    assert fold(state, [event]).corrected_seq == 12


def test_r11_unfilled_open_clears_the_dead_requests_and_closes() -> None:
    """Seed 000: a buy order Bybit never worked."""
    state, judgement = confirmed(requested(never_filled(), "x9", "sell", "1", exit=True))
    assert judgement == Judgement(
        Outcome.CORRECTED,
        Correction.UNFILLED_OPEN,
        [
            reconciled(
                state, "unfilled_open", (None, "0"), (None, "0", None), at(11), cleared=("o1",)
            ),
            closed(state, "unfilled_open", at(11)),
        ],
    )
    after = fold(state, judgement.events)
    assert [o.order_id for o in after.pending_orders] == ["x9"]
    assert after.status is Status.FLAT and not after.active


def test_r11_unfilled_open_leaves_a_young_request_and_does_not_close() -> None:
    state = suspected(never_filled(), snapshot(at(2)))
    state = requested(state, "o2", "buy", "1", at(2.5))
    judgement = judge(state, snapshot(at(3)))
    assert [type(e).__name__ for e in judgement.events] == ["Reconciled"]
    event = judgement.events[0]
    assert isinstance(event, Reconciled) and event.cleared_orders == ["o1"]
    after = fold(state, judgement.events)
    assert after.status is Status.PENDING and after.active and after.lifecycle == 1


def test_r11_stale_quantity_keeps_orders_and_takes_the_reported_average() -> None:
    """Seed 002: AGIUSDT short 4160 after a missed exit fill of 1000."""
    state = with_exit_and_dead_open(
        filled(fresh(), fill("e1", "sell", "4160", "0.1", seq=10)), "sell"
    )
    state, judgement = confirmed(state, btc("sell", "3160", avg_price="0.105", seq=50))
    assert judgement == Judgement(
        Outcome.CORRECTED,
        Correction.STALE_QUANTITY,
        [
            reconciled(
                state,
                "stale_quantity",
                ("sell", "4160"),
                ("sell", "3160", "0.105"),
                at(11),
                seq=50,
                reported="0.105",
            )
        ],
    )
    after = fold(state, judgement.events)
    assert (after.side, after.size, after.avg_entry_price) == (Side.SELL, 3160, d("0.105"))
    assert after.cost_basis == d("331.8") and after.realized_pnl == 0
    assert [o.order_id for o in after.pending_orders] == ["x1", "o2"]
    assert (after.lifecycle, after.active, after.corrected_seq) == (1, True, 50)


@pytest.mark.parametrize("reported", [None, "0"])
def test_r11_stale_quantity_without_a_reported_average_keeps_the_ledgers(
    reported: str | None,
) -> None:
    state = filled(fresh(), fill("e1", "sell", "4160", "0.1"))
    state, judgement = confirmed(state, btc("sell", "3160", avg_price=reported))
    event = judgement.events[0]
    assert isinstance(event, Reconciled)
    assert event.after_avg_price == d("0.1")
    assert event.snapshot_avg_price == (None if reported is None else d(0))
    assert fold(state, [event]).cost_basis == d("316.0")


def test_r11_stale_quantity_of_an_unknown_average_stays_unknown() -> None:
    state = suspected(fresh(), snapshot(at(1), [btc("buy", "2")]))
    state = fold(state, judge(state, snapshot(at(2), [btc("buy", "2")])).events)
    assert state.avg_entry_price is None
    state = suspected(state, snapshot(at(3), [btc("buy", "3")]))
    event = judge(state, snapshot(at(4), [btc("buy", "3")])).events[0]
    assert isinstance(event, Reconciled) and event.after_avg_price is None


def test_r11_side_mismatch_closes_drops_the_exits_and_opens_the_exchange_side() -> None:
    state = with_exit_and_dead_open(long_one(), "buy")
    state, judgement = confirmed(state, btc("sell", "2", avg_price="90", seq=17))
    assert judgement == Judgement(
        Outcome.CORRECTED,
        Correction.SIDE_MISMATCH,
        [
            reconciled(
                state,
                "side_mismatch",
                ("buy", "1"),
                ("sell", "2", "90"),
                at(11),
                seq=17,
                reported="90",
                cleared=("x1",),
            ),
            closed(state, "side_mismatch", at(11)),
        ],
    )
    after = fold(state, judgement.events)
    assert (after.side, after.size, after.avg_entry_price, after.cost_basis) == (
        Side.SELL,
        2,
        90,
        180,
    )
    assert (after.lifecycle, after.opened_at, after.active) == (2, at(11), True)
    assert [o.order_id for o in after.pending_orders] == ["o2"]


@pytest.mark.parametrize("reported", [None, "0"])
def test_r11_side_mismatch_without_a_reported_average_has_none(reported: str | None) -> None:
    state, judgement = confirmed(long_one(), btc("sell", "2", avg_price=reported))
    event = judgement.events[0]
    assert isinstance(event, Reconciled) and event.after_avg_price is None
    after = fold(state, [event])
    assert (after.avg_entry_price, after.cost_basis) == (None, None)


def test_r11_adopted_starts_a_lifecycle_from_the_snapshot() -> None:
    exchange = btc("buy", "0.5", avg_price="200", seq=3, updated_at=at(9))
    state, judgement = confirmed(fresh(), exchange)
    assert state.version == 2
    assert judgement == Judgement(
        Outcome.CORRECTED,
        Correction.ADOPTED,
        [
            reconciled(
                state, "adopted", (None, "0"), ("buy", "0.5", "200"), at(11), seq=3, reported="200"
            )
        ],
    )
    after = fold(state, judgement.events)
    assert (after.side, after.size, after.avg_entry_price, after.cost_basis) == (
        Side.BUY,
        d("0.5"),
        200,
        100,
    )
    assert (after.lifecycle, after.opened_at, after.active) == (1, at(11), True)


@pytest.mark.parametrize("reported", [None, "0"])
def test_r11_adopted_without_a_reported_average_has_none_and_keeps_requests(
    reported: str | None,
) -> None:
    state, judgement = confirmed(never_filled(), btc("buy", "1", avg_price=reported))
    event = judgement.events
    assert len(event) == 1 and isinstance(event[0], Reconciled)
    assert (event[0].after_avg_price, event[0].cleared_orders) == (None, [])
    after = fold(state, event)
    assert [o.order_id for o in after.pending_orders] == ["o1"] and after.lifecycle == 1


def test_r11_a_short_leg_is_adopted_on_its_side() -> None:
    state = suspected(fresh(SHORT_LEG), snapshot(at(1), [row("ETHUSDT", "sell", "3", idx=2)]))
    event = judge(state, snapshot(at(2), [row("ETHUSDT", "sell", "3", idx=2)])).events[0]
    assert isinstance(event, Reconciled) and (event.kind, event.after_side) == ("adopted", "sell")


# --- R12 late news ----------------------------------------------------------------------------


def test_r12_a_snapshot_no_later_than_a_correction_cannot_undo_it() -> None:
    state = suspected(long_one(), snapshot(at(10)))
    state = fold(state, judge(state, snapshot(at(11))).events)
    assert state.size == 0
    for late in (at(10.5), at(11)):
        judgement = judge(state, snapshot(late, [btc("buy", "1")]), now=at(12))
        assert judgement == Judgement(Outcome.ALREADY_SEEN, Correction.ADOPTED, [], ALREADY_SEEN)


def test_r12_a_late_execution_the_correction_reflected_is_absorbed() -> None:
    """Seed 002: the missed exit fill of 1000 arrives after the 4160 → 3160 correction."""
    state = filled(fresh(), fill("e1", "sell", "4160", "0.1", seq=10))
    state = requested(state, "x1", None, "1000", at(1), exit=True)
    exchange = btc("sell", "3160", seq=50)
    state = suspected(state, snapshot(at(10), [exchange]))
    state = fold(state, judge(state, snapshot(at(11), [exchange])).events)
    late = fill("e2", "buy", "1000", "0.09", order_id="x1", seq=40, exec_time=at(5))
    state = filled(state, late)
    assert state.size == 3160 and state.pending_orders == ()
    assert judge(state, snapshot(at(12), [exchange])) == Judgement(Outcome.AGREES, None, [])


# --- R13 needs_recovery -----------------------------------------------------------------------


def test_r13_a_disagreement_needs_recovery() -> None:
    assert needs_recovery(long_one(), snapshot(at(5)), at(5), ReconcilePolicy())
    assert needs_recovery(fresh(), snapshot(at(5), [btc("buy", "1")]), at(5), ReconcilePolicy())


def test_r13_an_agreement_without_orders_needs_none() -> None:
    assert not needs_recovery(
        long_one(), snapshot(at(5), [btc("buy", "1")]), at(5), ReconcilePolicy()
    )
    within = ReconcilePolicy(tolerance=d("0.5"))
    assert not needs_recovery(long_one(), snapshot(at(5), [btc("buy", "1.5")]), at(5), within)


@pytest.mark.parametrize(("age", "needed"), [(60, True), (61, True), (59, False)])
def test_r13_an_order_grace_old_may_have_filled_unseen(age: int, needed: bool) -> None:
    state = requested(long_one(), "x1", None, "1", at(10), exit=True)
    now = at(10) + timedelta(seconds=age)
    agreeing = snapshot(now, [btc("buy", "1")], open_order_ids=("x1",))
    assert needs_recovery(state, agreeing, now, ReconcilePolicy()) is needed


# --- R14 policy validation --------------------------------------------------------------------


NOT_A_DURATION = "expected a non-negative timedelta"
NOT_A_COUNT = "confirmations must be an int >= 1"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grace": timedelta(seconds=-1)}, NOT_A_DURATION),
        ({"grace": 60}, NOT_A_DURATION),
        ({"order_ttl": timedelta(seconds=-1)}, NOT_A_DURATION),
        ({"order_ttl": None}, NOT_A_DURATION),
        ({"heartbeat": timedelta(seconds=-1)}, NOT_A_DURATION),
        ({"heartbeat": 600}, NOT_A_DURATION),
        ({"confirmations": True}, NOT_A_COUNT),
        ({"confirmations": False}, NOT_A_COUNT),
        ({"confirmations": 0}, NOT_A_COUNT),
        ({"confirmations": "2"}, NOT_A_COUNT),
        ({"confirmations": 2.0}, NOT_A_COUNT),
        ({"tolerance": Decimal(-1)}, "tolerance must be >= 0"),
        ({"tolerance": 0.5}, "tolerance must be a Decimal"),
    ],
)
def test_r14_a_policy_refuses_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ReconcilePolicy(**fields)


def test_r14_a_policy_accepts_zero_durations_and_tolerance() -> None:
    policy = ReconcilePolicy(
        grace=timedelta(0),
        confirmations=1,
        tolerance="0",
        order_ttl=timedelta(0),
        heartbeat=timedelta(0),
    )
    assert (policy.grace, policy.order_ttl, policy.heartbeat) == (timedelta(0),) * 3
    assert (policy.confirmations, policy.tolerance) == (1, 0)
    defaults = ReconcilePolicy()
    assert (defaults.grace, defaults.confirmations, defaults.tolerance) == (
        timedelta(seconds=60),
        2,
        0,
    )
    assert (defaults.order_ttl, defaults.heartbeat) == (timedelta(minutes=15), None)


# --- R15 the report ---------------------------------------------------------------------------


def test_r15_a_report_finds_each_keys_outcome_and_counts_what_was_written() -> None:
    report = ReconcileReport(
        taken_at=at(5),
        outcomes=(
            KeyOutcome(KEY, Outcome.CORRECTED, Correction.PHANTOM, ("Reconciled", "Closed")),
            KeyOutcome(
                SHORT_LEG, Outcome.SUSPECT, Correction.ADOPTED, ("ExchangeSnapshot",), "1/2"
            ),
        ),
    )
    assert report.outcome(KEY) is report.outcomes[0]
    assert report.outcome(SHORT_LEG) is report.outcomes[1]
    assert report.outcome(LONG_LEG) is None
    assert report.corrections == report.outcomes[:1]
    assert report.suspects == report.outcomes[1:]
    assert report.events_written == 3
