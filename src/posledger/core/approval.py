"""A person's decision on a proposed correction (docs/design.md#approval), as pure decisions:
``decide_approval`` / ``decide_rejection`` turn the key's state and the decision into events.

An approval applies exactly the correction that was proposed, or nothing: if the ledger no
longer holds what the proposal was made from, the proposal is withdrawn instead and the next
confirming snapshot proposes afresh.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from posledger.core.decide import Emitter
from posledger.core.errors import InvalidInput
from posledger.core.events import PositionEvent, ProposalDecided, Reconciled
from posledger.core.model import text
from posledger.core.position import PositionState, Proposal
from posledger.core.reconcile import CORRECTIONS, SYSTEM_OPERATOR, Correction, ProposalDecision


@attrs.frozen
class ApprovalResult:
    """What an approval did: ``applied`` the proposed correction, or refused it (the proposal
    withdrawn, ``detail`` saying why)."""

    proposal_id: str
    applied: bool
    detail: str = ""


def open_proposal(state: PositionState, proposal_id: str) -> Proposal:
    """The key's open proposal of that id, or InvalidInput saying it is not open."""
    proposal = state.proposal
    if proposal is None or proposal.proposal_id != proposal_id:
        raise InvalidInput(f"{state.key} has no open proposal {proposal_id!r}")
    return proposal


def operator_name(value: object) -> str:
    """A person's name for the record: text, and never posledger's own."""
    name = text(value, "operator")
    if name == SYSTEM_OPERATOR:
        raise InvalidInput(f"operator {SYSTEM_OPERATOR!r} is posledger itself; name the person")
    return name


def decide_approval(
    state: PositionState, proposal_id: str, *, operator: str, at: datetime
) -> tuple[list[PositionEvent], ApprovalResult]:
    """The approval's events: the decision and the proposed correction, or a withdrawal."""
    proposal = open_proposal(state, proposal_id)
    emitter = Emitter(state)
    moved = _since_proposed(state, proposal)
    if moved:
        _decide(emitter, proposal, ProposalDecision.WITHDRAWN, SYSTEM_OPERATOR, at, moved)
        return emitter.events, ApprovalResult(proposal_id, applied=False, detail=moved)
    _decide(emitter, proposal, ProposalDecision.APPROVED, operator, at, "approved")
    emitter.emit(
        Reconciled,
        at,
        kind=proposal.kind,
        before_side=proposal.before_side,
        before_size=proposal.before_size,
        after_side=proposal.after_side,
        after_size=proposal.after_size,
        after_avg_price=proposal.after_avg_price,
        snapshot_taken_at=proposal.evidence_taken_at,
        snapshot_seq=proposal.evidence_seq,
        snapshot_avg_price=proposal.evidence_avg_price,
        confirmations=proposal.confirmations,
        cleared_orders=list(proposal.cleared_orders),
    )
    if CORRECTIONS[Correction(proposal.kind)].closes:
        emitter.close_if_ended(proposal.kind, at, state)
    return emitter.events, ApprovalResult(proposal_id, applied=True)


def decide_rejection(
    state: PositionState, proposal_id: str, *, operator: str, reason: str, at: datetime
) -> list[PositionEvent]:
    """The rejection: the proposal closes and the suspect run with it."""
    proposal = open_proposal(state, proposal_id)
    emitter = Emitter(state)
    _decide(emitter, proposal, ProposalDecision.REJECTED, operator, at, reason)
    return emitter.events


def _since_proposed(state: PositionState, proposal: Proposal) -> str:
    """Why the proposal's evidence no longer stands ("" while it does)."""
    side = state.side.value if state.side else None
    if (side, state.size) != (proposal.before_side, proposal.before_size):
        return (
            f"the ledger changed since the proposal: it holds {side or 'flat'} {state.size}, "
            f"the proposal was made from {proposal.before_side or 'flat'} {proposal.before_size}"
        )
    return ""


def _decide(
    emitter: Emitter,
    proposal: Proposal,
    decision: ProposalDecision,
    operator: str,
    at: datetime,
    reason: str,
) -> None:
    emitter.emit(
        ProposalDecided,
        at,
        proposal_id=proposal.proposal_id,
        decision=decision.value,
        operator=operator,
        reason=reason,
    )
