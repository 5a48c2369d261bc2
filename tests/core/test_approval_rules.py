"""Approval of corrections (docs/design.md#approval), each rule a pure function on literal
states: ``decide_reconcile`` under a holding policy, ``decide_approval``, ``decide_rejection``.

A1  A confirmed correction whose kind the policy holds is proposed, not applied:
    ``CorrectionProposed`` with exactly the fields ``Reconciled`` would have had, plus the id and
    the reason; size, side and orders unchanged; the key is held.
A2  ``hold_above_notional`` holds a correction moving more than that notional (|Δ signed size| ×
    the exchange's average, else the ledger's; on an inverse key |Δ| itself); at or below it the
    correction applies; an unknown notional is held.
A3  While the proposal is open, a snapshot still showing the proposed state is fresh evidence:
    outcome ``held``, a suspect ``ExchangeSnapshot`` that updates the proposal's evidence.
A4  A snapshot that agrees with the ledger withdraws the proposal (operator ``posledger``).
A5  A snapshot showing another exchange state withdraws it and starts a new suspect run; once
    confirmed, the new correction is proposed.
A6  Approval applies exactly the proposed correction: ``ProposalDecided(approved)``,
    ``Reconciled`` with the proposal's fields and latest evidence, ``Closed`` where it ends the
    lifecycle; the key is no longer held.
A7  Approval when the ledger changed since the proposal is refused: the proposal is withdrawn
    and nothing corrected.
A8  Rejection closes the proposal and the suspect run: a persisting disagreement needs fresh
    confirmations before it is proposed again.
A9  Deciding a proposal that is not open, or as operator ``posledger``, is ``InvalidInput``.
A10 A policy refuses an unknown correction kind and a negative notional.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger import InvalidInput, PositionKey, PositionState, ReconcilePolicy, Side
from posledger.core.approval import decide_approval, decide_rejection, operator_name
from posledger.core.events import (
    Closed,
    CorrectionProposed,
    ExchangeSnapshot,
    ProposalDecided,
    Reconciled,
)
from posledger.core.reconcile import Correction, Judgement, Outcome
from tests.conftest import T0
from tests.core.literals import d, filled, fold, fresh, judge, requested
from tests.helpers import fill, row, snapshot

HOLD_PHANTOMS: dict[str, Any] = {"hold_for_approval": {"phantom"}, "confirmations": 2}


def at(minutes: int) -> Any:
    return T0 + timedelta(minutes=minutes)


def long_two() -> PositionState:
    """Long 2 @ 100, its open request filled long ago."""
    state = requested(fresh(), "o1", "buy", "2")
    return filled(state, fill("e1", "buy", "2", "100", order_id="o1"))


def flat_snapshot(minutes: int) -> Any:
    return snapshot(at(minutes), [], symbols=["BTCUSDT"])


def held_snapshot(minutes: int, size: str = "3") -> Any:
    return snapshot(at(minutes), [row("BTCUSDT", "Buy", size, avg_price=d(110))])


def proposed(state: PositionState, **policy: Any) -> tuple[PositionState, Judgement]:
    """Two flat snapshots against ``state``: the phantom proposed on the second."""
    rules = {**HOLD_PHANTOMS, **policy}
    first = judge(state, flat_snapshot(10), **rules)
    state = fold(state, first.events)
    second = judge(state, flat_snapshot(11), **rules)
    return fold(state, second.events), second


def test_a1_a_held_correction_is_proposed_exactly_as_it_would_apply() -> None:
    state, judgement = proposed(long_two())
    applied = judge(
        fold(long_two(), judge(long_two(), flat_snapshot(10)).events), flat_snapshot(11)
    )
    assert judgement.outcome is Outcome.PROPOSED and judgement.correction is Correction.PHANTOM
    (event,) = judgement.events
    assert isinstance(event, CorrectionProposed)
    (reconciled, _) = applied.events
    assert isinstance(reconciled, Reconciled)
    same = {f: getattr(reconciled, f) for f in vars(reconciled) if f != "originator_id"}
    assert {f: getattr(event, f) for f in same} == same
    assert event.reason == "policy holds phantom corrections for approval"
    assert (state.side, state.size, state.held) == (Side.BUY, d(2), True)
    assert state.proposal is not None and state.proposal.proposal_id == event.proposal_id


@pytest.mark.parametrize(
    ("limit", "outcome"), [("109", Outcome.PROPOSED), ("110", Outcome.CORRECTED)]
)
def test_a2_a_correction_above_the_notional_is_held(limit: str, outcome: Outcome) -> None:
    """Ledger long 2, exchange long 3 @ 110: the stale quantity moves 1 × 110."""
    state = long_two()
    policy = {"hold_above_notional": d(limit)}
    state = fold(state, judge(state, held_snapshot(10), **policy).events)
    assert judge(state, held_snapshot(11), **policy).outcome is outcome


def test_a2_an_unknown_notional_is_held() -> None:
    state = filled(fresh(), fill("e1", "buy", "2", "100"))
    no_price = [row("BTCUSDT", "Buy", "3")]
    policy = {"hold_above_notional": d(1_000_000)}
    adopted = fresh(PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT"))
    rows = [row("ETHUSDT", "Buy", "3")]
    first = judge(adopted, snapshot(at(10), rows), **policy)
    second = judge(fold(adopted, first.events), snapshot(at(11), rows), **policy)
    assert second.outcome is Outcome.PROPOSED
    assert "unknown" in second.events[0].reason  # type: ignore[attr-defined]
    assert judge(state, snapshot(at(10), no_price), **policy).outcome is Outcome.SUSPECT


def test_a2_an_inverse_key_measures_the_notional_in_usd_contracts() -> None:
    inverse = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    state = filled(fresh(inverse), fill("e1", "buy", "100", "20000"))
    rows = [row("BTCUSD", "Buy", "150", avg_price=d(21000))]
    snap = snapshot(at(10), rows, category="inverse")
    state = fold(state, judge(state, snap, hold_above_notional=d(50)).events)
    later = snapshot(at(11), rows, category="inverse")
    assert judge(state, later, hold_above_notional=d(50)).outcome is Outcome.CORRECTED
    assert judge(state, later, hold_above_notional=d(49)).outcome is Outcome.PROPOSED


def test_a3_a_snapshot_still_showing_the_proposed_state_is_fresh_evidence() -> None:
    state, _ = proposed(long_two())
    judgement = judge(state, flat_snapshot(12), **HOLD_PHANTOMS)
    assert judgement.outcome is Outcome.HELD
    (event,) = judgement.events
    assert isinstance(event, ExchangeSnapshot) and event.suspect and event.confirmations == 3
    after = fold(state, judgement.events)
    assert after.proposal is not None
    assert (after.proposal.evidence_taken_at, after.proposal.confirmations) == (at(12), 3)
    assert after.held


def test_a4_a_snapshot_that_agrees_withdraws_the_proposal() -> None:
    state, _ = proposed(long_two())
    agreeing = snapshot(at(12), [row("BTCUSDT", "Buy", "2")])
    judgement = judge(state, agreeing, **HOLD_PHANTOMS)
    assert judgement.outcome is Outcome.AGREES
    withdrawn, reset = judgement.events
    assert isinstance(withdrawn, ProposalDecided) and isinstance(reset, ExchangeSnapshot)
    assert (withdrawn.decision, withdrawn.operator) == ("withdrawn", "posledger")
    assert not fold(state, judgement.events).held


def test_a5_another_exchange_state_withdraws_and_is_proposed_once_confirmed() -> None:
    state, first = proposed(long_two(), hold_for_approval={"phantom", "stale_quantity"})
    policy = {**HOLD_PHANTOMS, "hold_for_approval": {"phantom", "stale_quantity"}}
    judgement = judge(state, held_snapshot(12), **policy)
    assert judgement.outcome is Outcome.SUSPECT
    assert [type(e) for e in judgement.events] == [ProposalDecided, ExchangeSnapshot]
    state = fold(state, judgement.events)
    assert not state.held
    again = judge(state, held_snapshot(13), **policy)
    assert again.outcome is Outcome.PROPOSED and again.correction is Correction.STALE_QUANTITY
    (event,) = again.events
    assert isinstance(event, CorrectionProposed)
    assert event.proposal_id != first.events[0].proposal_id  # type: ignore[attr-defined]


def test_a6_approval_applies_exactly_the_proposed_correction() -> None:
    state, _ = proposed(long_two())
    state = fold(state, judge(state, flat_snapshot(12), **HOLD_PHANTOMS).events)
    assert state.proposal is not None
    events, result = decide_approval(state, state.proposal.proposal_id, operator="alice", at=at(20))
    assert result.applied is True and result.proposal_id == state.proposal.proposal_id
    decided, reconciled, closed = events
    assert isinstance(decided, ProposalDecided) and decided.decision == "approved"
    assert (decided.operator, decided.reason, decided.timestamp) == ("alice", "approved", at(20))
    assert isinstance(reconciled, Reconciled) and isinstance(closed, Closed)
    proposal = state.proposal
    assert (reconciled.kind, reconciled.timestamp) == ("phantom", at(20))
    assert (reconciled.before_side, reconciled.before_size) == ("buy", d(2))
    assert (reconciled.after_side, reconciled.after_size, reconciled.after_avg_price) == (
        None,
        0,
        None,
    )
    assert (reconciled.snapshot_taken_at, reconciled.confirmations) == (at(12), 3)
    assert (reconciled.snapshot_seq, reconciled.snapshot_avg_price) == (
        proposal.evidence_seq,
        proposal.evidence_avg_price,
    )
    assert (closed.reason, closed.timestamp) == ("phantom", at(20))
    after = fold(state, events)
    assert (after.size, after.side, after.held) == (d(0), None, False)
    assert after.corrected_at == at(12)


def test_a7_approval_after_the_ledger_changed_is_refused_and_withdraws() -> None:
    state, _ = proposed(long_two())
    assert state.proposal is not None
    state = filled(state, fill("e2", "sell", "1", "105", exec_time=at(15)))
    events, result = decide_approval(state, state.proposal.proposal_id, operator="alice", at=at(20))
    assert result.applied is False and "the ledger changed" in result.detail
    assert result.proposal_id == state.proposal.proposal_id
    (withdrawn,) = events
    assert isinstance(withdrawn, ProposalDecided) and withdrawn.decision == "withdrawn"
    assert (withdrawn.operator, withdrawn.reason, withdrawn.timestamp) == (
        "posledger",
        result.detail,
        at(20),
    )
    assert withdrawn.proposal_id == result.proposal_id
    assert result.detail == (
        "the ledger changed since the proposal: it holds buy 1, the proposal was made from buy 2"
    )
    after = fold(state, events)
    assert (after.size, after.held) == (d(1), False)


def test_a8_a_rejection_needs_fresh_confirmations_before_proposing_again() -> None:
    state, _ = proposed(long_two())
    assert state.proposal is not None
    events = decide_rejection(
        state, state.proposal.proposal_id, operator="bob", reason="I closed it by hand", at=at(20)
    )
    (rejected,) = events
    assert isinstance(rejected, ProposalDecided) and rejected.timestamp == at(20)
    assert (rejected.decision, rejected.operator, rejected.reason) == (
        "rejected",
        "bob",
        "I closed it by hand",
    )
    state = fold(state, events)
    assert (state.held, state.suspect) == (False, None)
    assert judge(state, flat_snapshot(21), **HOLD_PHANTOMS).outcome is Outcome.SUSPECT


def test_a9_deciding_what_is_not_open_is_invalid_input() -> None:
    state, _ = proposed(long_two())
    with pytest.raises(InvalidInput, match="no open proposal"):
        decide_approval(state, "000000000000", operator="alice", at=at(20))
    with pytest.raises(InvalidInput, match="no open proposal"):
        decide_rejection(long_two(), "000000000000", operator="bob", reason="r", at=at(20))
    with pytest.raises(InvalidInput, match="posledger itself"):
        operator_name("posledger")
    with pytest.raises(InvalidInput, match="operator"):
        operator_name("")


@pytest.mark.parametrize(
    "fields",
    [
        {"hold_for_approval": {"ghost"}},
        {"hold_for_approval": "phantom"},
        {"hold_above_notional": -1},
    ],
)
def test_a10_a_policy_refuses_what_it_cannot_hold(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        ReconcilePolicy(**fields)


def test_a10_kinds_parse_from_text() -> None:
    policy = ReconcilePolicy(hold_for_approval=["phantom", Correction.ADOPTED])
    assert policy.hold_for_approval == {Correction.PHANTOM, Correction.ADOPTED}
    assert policy.holds(Correction.PHANTOM, Decimal(0))
    assert not policy.holds(Correction.STALE_QUANTITY, None)


def test_a6_approving_a_stale_quantity_applies_its_side_average_and_evidence() -> None:
    """Ledger long 2, the exchange long 3 @ 110 with seq 7: the proposal sets long 3 @ 110."""
    policy = {"hold_for_approval": {"stale_quantity"}}
    state = long_two()
    shown = [row("BTCUSDT", "Buy", "3", avg_price=d(110), seq=7)]
    for minutes in (10, 11):
        state = fold(state, judge(state, snapshot(at(minutes), shown), **policy).events)
    assert state.proposal is not None and state.proposal.kind == "stale_quantity"
    events, result = decide_approval(state, state.proposal.proposal_id, operator="a", at=at(20))
    decided, reconciled = events
    assert isinstance(decided, ProposalDecided) and decided.proposal_id == result.proposal_id
    assert isinstance(reconciled, Reconciled)
    assert (reconciled.after_side, reconciled.after_size, reconciled.after_avg_price) == (
        "buy",
        d(3),
        d(110),
    )
    assert (reconciled.snapshot_seq, reconciled.snapshot_avg_price) == (7, d(110))
    after = fold(state, events)
    assert (after.size, after.avg_entry_price, after.held) == (d(3), d(110), False)


def test_a7_a_refusal_from_flat_says_flat() -> None:
    state, _ = proposed(long_two())
    assert state.proposal is not None
    state = filled(state, fill("e2", "sell", "2", "105", exec_time=at(15)))
    _, result = decide_approval(state, state.proposal.proposal_id, operator="alice", at=at(20))
    assert "it holds flat 0" in result.detail and "made from buy 2" in result.detail
