"""Approval of corrections under random histories (docs/design.md#approval): snapshots showing
random exchange sizes, the bot's own fills, approvals and rejections, in any order, against a
policy that holds every correction. Pure: ``decide_reconcile``, ``decide_approval``,
``decide_rejection`` and ``evolve`` only.

P1  While a proposal is open, reconciliation never changes the ledger's side or size: only the
    bot's fills and an approval do.
P2  An open proposal's after-state is what the latest snapshot judged showed: the suspect run.
P3  An applied approval leaves the ledger exactly at the proposal's after-state, and the key
    no longer held; a refused one changes no size and closes the proposal.
P4  Every event folds: replaying the history from scratch gives the same state.
P5  Under a policy that holds every kind, reconciliation never corrects: only an approval
    writes ``Reconciled``.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from posledger import Correction, PositionState, ReconcilePolicy, Side
from posledger.core.approval import decide_approval, decide_rejection
from posledger.core.decide import decide_fills, register
from posledger.core.events import PositionEvent, Reconciled
from posledger.core.position import evolve, project
from posledger.core.reconcile import decide_reconcile
from tests.conftest import T0
from tests.core.literals import KEY
from tests.helpers import fill, row, snapshot

HOLD_ALL = ReconcilePolicy(hold_for_approval=set(Correction), confirmations=2)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("snapshot"), st.integers(-3, 3)),
        st.tuples(st.just("fill"), st.integers(-2, 2).filter(bool)),
        st.tuples(st.just("approve"), st.none()),
        st.tuples(st.just("reject"), st.none()),
    ),
    max_size=30,
)


def signed(state: PositionState) -> Decimal:
    return state.signed_size


@given(steps=STEPS)
def test_random_histories_keep_the_approval_invariants(
    steps: list[tuple[str, int | None]],
) -> None:
    state = evolve(None, register(KEY, T0))
    history: list[PositionEvent] = [register(KEY, T0)]
    for n, (what, amount) in enumerate(steps):
        at = T0 + timedelta(minutes=n + 1)
        before = state
        if what == "snapshot":
            assert amount is not None
            side = "Buy" if amount > 0 else "Sell"
            rows = [row("BTCUSDT", side, str(abs(amount)))] if amount else []
            events = decide_reconcile(
                state, snapshot(at, rows, symbols=["BTCUSDT"]), at, HOLD_ALL
            ).events
            assert not any(isinstance(e, Reconciled) for e in events)  # P5
        elif what == "fill":
            assert amount is not None
            side = "buy" if amount > 0 else "sell"
            move = fill(f"e{n}", side, str(abs(amount)), "100", exec_time=at)
            events = decide_fills(state, [move])
        elif state.proposal is None:
            continue
        elif what == "approve":
            events, _ = decide_approval(state, state.proposal.proposal_id, operator="p", at=at)
        else:
            events = decide_rejection(
                state, state.proposal.proposal_id, operator="p", reason="no", at=at
            )
        for event in events:
            state = evolve(state, event)
        history += events
        check(before, state, what)
    assert project(None, history) == state


def check(before: PositionState, after: PositionState, what: str) -> None:
    if what == "snapshot" and (before.held or after.held):  # P1
        assert signed(after) == signed(before)
    if after.proposal is not None:  # P2
        run = after.suspect
        assert run is not None
        expected = (Side(after.proposal.after_side) if after.proposal.after_side else None,)
        assert (run.side, run.size) == (*expected, after.proposal.after_size)
    if what == "approve":  # P3
        assert not after.held
        proposal = before.proposal
        assert proposal is not None
        applied = (after.side.value if after.side else None, after.size)
        target = (proposal.after_side, proposal.after_size)
        assert applied == target or signed(after) == signed(before)
