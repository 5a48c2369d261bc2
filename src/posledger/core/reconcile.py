"""Pure reconciliation: judge one key's ledger state against one complete exchange snapshot.

The rules of docs/design.md#reconciliation, step by step in the order the page gives
them (coverage is the caller's): agreement, staleness, orders in flight, classification,
already seen, confirmations, correction. What each correction does is one row of
:data:`CORRECTIONS`.

Every correction waits for ``confirmations`` consecutive, strictly later snapshots showing the
same exchange state; each interim disagreement is written as a *suspect* ``ExchangeSnapshot`` so
the count survives restarts and is shared by every process on the store. A snapshot that agrees
with the ledger writes nothing (unless a suspect run must be reset, or a heartbeat is due).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

import attrs

from posledger.core.decide import Emitter
from posledger.core.errors import InvalidInput, shown
from posledger.core.events import (
    CorrectionProposed,
    ExchangeSnapshot,
    PositionEvent,
    ProposalDecided,
    Reconciled,
    proposal_id,
)
from posledger.core.model import (
    SIZES,
    ExchangePosition,
    PositionKey,
    Side,
    Snapshot,
    non_negative_decimal,
    non_negative_delta,
    positive_int,
)
from posledger.core.position import (
    ZERO,
    PendingOrder,
    PositionState,
    Proposal,
    SuspectRun,
)


def _non_negative_delta(value: object) -> timedelta:
    return non_negative_delta(value, "a ReconcilePolicy duration")


def _optional_delta(value: object) -> timedelta | None:
    return None if value is None else _non_negative_delta(value)


def _tolerance(value: object) -> Decimal:
    return non_negative_decimal(value, "tolerance")


def _held_kinds(value: object) -> frozenset[Correction]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInput(f"hold_for_approval must be a set of corrections, got {shown(value)}")
    return frozenset(Correction.parse(kind) for kind in value)


def _optional_notional(value: object) -> Decimal | None:
    return None if value is None else non_negative_decimal(value, "hold_above_notional")


def _confirmations(value: object) -> int:
    return positive_int(value, "confirmations")


@attrs.frozen
class ReconcilePolicy:
    """How cautious reconciliation is. ``order_ttl`` only matters for snapshots that did not
    read open orders; ``heartbeat`` (off by default) records an agreeing snapshot that often."""

    grace: timedelta = attrs.field(default=timedelta(seconds=60), converter=_non_negative_delta)
    confirmations: int = attrs.field(default=2, converter=_confirmations)
    tolerance: Decimal = attrs.field(default=ZERO, converter=_tolerance)
    order_ttl: timedelta = attrs.field(default=timedelta(minutes=15), converter=_non_negative_delta)
    heartbeat: timedelta | None = attrs.field(default=None, converter=_optional_delta)
    hold_for_approval: frozenset[Correction] = attrs.field(factory=frozenset, converter=_held_kinds)
    hold_above_notional: Decimal | None = attrs.field(default=None, converter=_optional_notional)

    def holds(self, correction: Correction, notional: Decimal | None) -> bool:
        """Whether a confirmed correction waits for a person (docs/design.md#approval): its kind
        is held, or it moves more than ``hold_above_notional`` (an unknown notional too)."""
        if correction in self.hold_for_approval:
            return True
        limit = self.hold_above_notional
        return limit is not None and (notional is None or notional > limit)


class Correction(StrEnum):
    """What a correction fixed; its row in :data:`CORRECTIONS` says what it does (stored as
    ``Reconciled.kind``)."""

    PHANTOM = "phantom"
    STALE_QUANTITY = "stale_quantity"
    SIDE_MISMATCH = "side_mismatch"
    ADOPTED = "adopted"
    UNFILLED_OPEN = "unfilled_open"

    @classmethod
    def parse(cls, value: object) -> Correction:
        try:
            return cls(value if isinstance(value, str) else "")
        except ValueError:
            names = ", ".join(c.value for c in cls)
            raise InvalidInput(f"unknown correction {value!r}; one of {names}") from None


class ProposalDecision(StrEnum):
    """How a proposal ended (``ProposalDecided.decision``)."""

    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    """Its evidence no longer stands: the exchange agrees now, shows something else, or the
    ledger changed before the approval."""


SYSTEM_OPERATOR = "posledger"
"""The operator of a withdrawal: posledger itself, never a person."""


class AverageAfter(Enum):
    """The average entry price a correction leaves the key with."""

    NONE = "none"
    """Flat afterwards: no average."""
    REPORTED = "reported"
    """The exchange's avgPrice; none when it reports none (or 0)."""
    REPORTED_OR_KEPT = "reported_or_kept"
    """The exchange's avgPrice, else the ledger's own average kept."""


@attrs.frozen
class CorrectionRule:
    """What one correction does besides setting side and size to the exchange's."""

    clears_exits: bool
    """Drops the key's pending reduce-only exits."""
    clears_dead_opens: bool
    """Drops the open requests past grace that the exchange is not working."""
    average: AverageAfter
    closes: bool
    """Ends the lifecycle (``Closed(reason=kind)`` follows) when the key ends flat or flipped."""


# fmt: off
CORRECTIONS: Mapping[Correction, CorrectionRule] = MappingProxyType({
    #                         CorrectionRule(clears exits, clears dead opens, average after, closes)
    Correction.PHANTOM:        CorrectionRule(True,  True,  AverageAfter.NONE,             True),
    Correction.UNFILLED_OPEN:  CorrectionRule(False, True,  AverageAfter.NONE,             True),
    Correction.STALE_QUANTITY: CorrectionRule(False, False, AverageAfter.REPORTED_OR_KEPT, False),
    Correction.SIDE_MISMATCH:  CorrectionRule(True,  False, AverageAfter.REPORTED,         True),
    Correction.ADOPTED:        CorrectionRule(False, False, AverageAfter.REPORTED,         False),
})
"""The corrections table of docs/design.md#corrections, one row per ``Reconciled.kind``."""
# fmt: on


class Outcome(StrEnum):
    """What reconciliation concluded for one key."""

    AGREES = "agrees"
    STALE = "stale"
    """The snapshot predates the last applied fill; ignored."""
    PENDING = "pending"
    """An order for the key is younger than ``grace``; nothing judged yet."""
    ALREADY_SEEN = "already_seen"
    """Not later than the last snapshot recorded for the key (a suspect, a reset or the
    evidence of a correction): old news that can neither count nor undo anything."""
    SUSPECT = "suspect"
    """A disagreement recorded, waiting for more confirmations."""
    CORRECTED = "corrected"
    PROPOSED = "proposed"
    """A confirmed correction the policy holds for a person: proposed, not applied."""
    HELD = "held"
    """The open proposal for this disagreement still awaits a decision; fresh evidence added."""
    CONFLICT = "conflict"
    """A recovered execution conflicted with a recorded one; this key was not corrected."""


@attrs.frozen
class KeyOutcome:
    """What reconciliation concluded for one key: the outcome, the correction it made or
    would make, the names of the events it wrote, and a human-readable detail."""

    key: PositionKey
    outcome: Outcome
    correction: Correction | None = None
    events: tuple[str, ...] = ()
    detail: str = ""


@attrs.frozen
class ReconcileReport:
    """One outcome per judged key."""

    taken_at: datetime
    outcomes: tuple[KeyOutcome, ...]

    @property
    def corrections(self) -> tuple[KeyOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome is Outcome.CORRECTED)

    @property
    def proposals(self) -> tuple[KeyOutcome, ...]:
        """Corrections proposed in this round (held for a person)."""
        return tuple(o for o in self.outcomes if o.outcome is Outcome.PROPOSED)

    @property
    def suspects(self) -> tuple[KeyOutcome, ...]:
        return tuple(o for o in self.outcomes if o.outcome is Outcome.SUSPECT)

    @property
    def events_written(self) -> int:
        return sum(len(o.events) for o in self.outcomes)

    def outcome(self, key: PositionKey) -> KeyOutcome | None:
        for item in self.outcomes:
            if item.key == key:
                return item
        return None


@attrs.frozen
class Judgement:
    outcome: Outcome
    correction: Correction | None
    events: list[PositionEvent]
    detail: str = ""


class _Case(NamedTuple):
    """One covered key's state against one snapshot, and the exchange's row for the key (a
    named tuple: one is built per key of every snapshot, and a tuple is the cheapest
    immutable record)."""

    state: PositionState
    snapshot: Snapshot
    now: datetime
    policy: ReconcilePolicy
    exchange: ExchangePosition | None
    side: Side | None
    size: Decimal
    agrees: bool

    def dead_opens(self) -> list[str]:
        """Open requests past grace that the exchange is no longer working on."""
        return [
            order.order_id
            for order in self.state.pending_orders
            if not order.reduce_only and not self.in_flight(order) and not self.working(order)
        ]

    def in_flight(self, order: PendingOrder) -> bool:
        """Too young to judge: within grace, or requested no earlier than the snapshot was
        taken and not listed by it (the read cannot have seen it)."""
        if self.now - order.requested_at < self.policy.grace:
            return True
        listed = self.snapshot.open_order_ids
        seen = listed is not None and order.order_id in listed
        return order.requested_at >= self.snapshot.taken_at and not seen

    def working(self, order: PendingOrder) -> bool:
        """Listed as open by the snapshot; where it did not read orders, younger than the TTL."""
        if self.snapshot.open_order_ids is not None:
            return order.order_id in self.snapshot.open_order_ids
        return self.now - order.requested_at < self.policy.order_ttl


def decide_reconcile(
    state: PositionState, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> Judgement:
    """Judge one covered key (coverage is the caller's) in the steps of docs/design.md#rules.
    ``state`` may be a not-yet-saved fresh state (version 1)."""
    exchange = snapshot.position(state.key)
    side, size = _held(exchange)
    agrees = _agrees(state, side, size, policy)
    case = _Case(state, snapshot, now, policy, exchange, side, size, agrees)
    # 1. Agreement; both flat but with dead open requests is the unfilled_open row.
    if agrees and not (state.size == 0 and case.dead_opens()):
        return _agreement(case)
    if not agrees:
        # 2. Staleness.
        if _is_stale(case):
            return Judgement(Outcome.STALE, None, [], "snapshot predates the last applied fill")
        # 3. Orders in flight.
        young = [o.order_id for o in state.pending_orders if case.in_flight(o)]
        if young:
            return Judgement(Outcome.PENDING, None, [], f"orders in flight: {', '.join(young)}")
    # 4. Classification.
    correction = _classify(case)
    # 5. Already seen.
    if _already_seen(state, snapshot):
        return Judgement(
            Outcome.ALREADY_SEEN, correction, [], "not later than the last recorded snapshot"
        )
    # 6. Confirmations.
    count = _confirmations_so_far(state.suspect, side, size)
    if count < policy.confirmations:
        emitter = _withdrawing(case, "the exchange no longer shows what it proposed")
        _snapshot_events(case, suspect=True, confirmations=count, emitter=emitter)
        detail = f"{count}/{policy.confirmations}"
        return Judgement(Outcome.SUSPECT, correction, emitter.events, detail)
    # 7. Correction, or a proposal where the policy holds it for a person.
    moved = notional(case.state, case.exchange)
    if policy.holds(correction, moved):
        return _propose(case, correction, count, moved)
    return _correct(case, correction, count)


def needs_recovery(
    state: PositionState, snapshot: Snapshot, now: datetime, policy: ReconcilePolicy
) -> bool:
    """Whether the exchange's execution history may explain something before any correction:
    the sizes disagree, or requests past grace might have filled unseen."""
    side, size = _held(snapshot.position(state.key))
    if not _agrees(state, side, size, policy):
        return True
    return any(now - order.requested_at >= policy.grace for order in state.pending_orders)


def _held(exchange: ExchangePosition | None) -> tuple[Side | None, Decimal]:
    """The exchange's side and size for a key; a key it does not list is flat."""
    return (exchange.side, exchange.size) if exchange is not None else (None, ZERO)


def _agrees(
    state: PositionState, side: Side | None, size: Decimal, policy: ReconcilePolicy
) -> bool:
    """Both flat, or the same side with sizes within ``tolerance``."""
    if state.size == 0 or size == 0:
        return state.size == 0 and size == 0
    return state.side is side and abs(SIZES.subtract(state.size, size)) <= policy.tolerance


def _agreement(case: _Case) -> Judgement:
    """Nothing to correct: reset a suspect run or record a due heartbeat, else write nothing."""
    state, heartbeat = case.state, case.policy.heartbeat
    if _already_seen(state, case.snapshot):
        return Judgement(Outcome.AGREES, None, [])
    last = state.last_snapshot_at
    heartbeat_due = (
        heartbeat is not None
        and state.version > 1
        and (last is None or case.snapshot.taken_at - last >= heartbeat)
    )
    if state.suspect is None and not heartbeat_due and state.proposal is None:
        return Judgement(Outcome.AGREES, None, [])
    emitter = _withdrawing(case, "the exchange agrees with the ledger")
    _snapshot_events(case, suspect=False, confirmations=0, emitter=emitter)
    return Judgement(Outcome.AGREES, None, emitter.events)


def _is_stale(case: _Case) -> bool:
    """Taken before the last applied fill: Bybit ``seq`` orders a position against executions;
    without it, time does."""
    state, exchange = case.state, case.exchange
    if exchange is not None and exchange.seq is not None and state.last_fill_seq is not None:
        return exchange.seq < state.last_fill_seq
    return state.last_fill_time is not None and case.snapshot.taken_at < state.last_fill_time


def _classify(case: _Case) -> Correction:
    """Which row of :data:`CORRECTIONS` the disagreement is (agreement with dead opens: the
    never-filled open requests)."""
    if case.agrees:
        return Correction.UNFILLED_OPEN
    if case.size == 0:
        return Correction.PHANTOM
    if case.state.size == 0:
        return Correction.ADOPTED
    if case.state.side is not case.side:
        return Correction.SIDE_MISMATCH
    return Correction.STALE_QUANTITY


def _already_seen(state: PositionState, snapshot: Snapshot) -> bool:
    """Not later than the last snapshot recorded for the key: old news."""
    last = state.last_snapshot_at
    return last is not None and snapshot.taken_at <= last


def _confirmations_so_far(suspect: SuspectRun | None, side: Side | None, size: Decimal) -> int:
    """This snapshot's place in the run of snapshots showing the same exchange state."""
    if suspect is not None and (suspect.side, suspect.size) == (side, size):
        return suspect.count + 1
    return 1


def _snapshot_events(
    case: _Case, *, suspect: bool, confirmations: int, emitter: Emitter | None = None
) -> list[PositionEvent]:
    """The snapshot recorded as evidence: a suspect disagreement, a reset or a heartbeat."""
    exchange, taken_at = case.exchange, case.snapshot.taken_at
    emitter = emitter or Emitter(case.state)
    emitter.emit(
        ExchangeSnapshot,
        taken_at,
        taken_at=taken_at,
        side=case.side.value if case.side else None,
        size=case.size,
        avg_price=exchange.avg_price if exchange is not None else None,
        seq=exchange.seq if exchange is not None else None,
        updated_at=exchange.updated_at if exchange is not None else None,
        suspect=suspect,
        confirmations=confirmations,
    )
    return emitter.events


def _withdrawing(case: _Case, reason: str) -> Emitter:
    """An emitter whose first event withdraws the key's open proposal, if it has one."""
    emitter = Emitter(case.state)
    proposal = case.state.proposal
    if proposal is not None:
        emitter.emit(
            ProposalDecided,
            case.snapshot.taken_at,
            proposal_id=proposal.proposal_id,
            decision=ProposalDecision.WITHDRAWN.value,
            operator=SYSTEM_OPERATOR,
            reason=reason,
        )
    return emitter


def notional(state: PositionState, exchange: ExchangePosition | None) -> Decimal | None:
    """How much making the ledger hold what the exchange shows (``exchange``: its row for the
    key, None for none) would move: |size change| × price on a linear key (the exchange's
    average, else the ledger's; None when neither is known), |size change| in USD contracts on
    an inverse one (docs/design.md#approval)."""
    side, size = _held(exchange)
    after = size * side.sign if side is not None else ZERO
    moved = abs(SIZES.subtract(after, state.signed_size))
    if state.key.inverse:
        return moved
    price = (exchange.avg_price if exchange is not None else None) or state.avg_entry_price
    return None if price is None else moved * price


def _propose(
    case: _Case, correction: Correction, confirmations: int, moved: Decimal | None
) -> Judgement:
    """``CorrectionProposed`` for the correction ``_correct`` would apply, or, while the same
    proposal is open, the snapshot as fresh evidence for it."""
    state, taken_at, proposal = case.state, case.snapshot.taken_at, case.state.proposal
    fields = _correction_fields(case, correction, confirmations)
    if proposal is not None and _proposes(proposal, fields):
        events = _snapshot_events(case, suspect=True, confirmations=confirmations)
        detail = f"proposal {proposal.proposal_id} awaits a decision"
        return Judgement(Outcome.HELD, correction, events, detail)
    emitter = _withdrawing(case, "superseded by a new proposal")
    new_id = proposal_id(state.key.stream_id, emitter.preview.version + 1)
    emitter.emit(
        CorrectionProposed,
        taken_at,
        proposal_id=new_id,
        reason=_hold_reason(case.policy, correction, moved),
        **fields,
    )
    return Judgement(Outcome.PROPOSED, correction, emitter.events, f"proposal {new_id}")


def _proposes(proposal: Proposal, fields: dict[str, object]) -> bool:
    """Whether an open proposal is the correction ``fields`` describe (from the same state)."""
    return all(getattr(proposal, name) == fields[name] for name in _PROPOSED_FROM_TO)


_PROPOSED_FROM_TO = ("kind", "before_side", "before_size", "after_side", "after_size")
"""What makes two proposals the same correction (their evidence may be newer)."""


def _hold_reason(policy: ReconcilePolicy, correction: Correction, notional: Decimal | None) -> str:
    if correction in policy.hold_for_approval:
        return f"policy holds {correction.value} corrections for approval"
    if notional is None:
        return "its notional is unknown (no average price) and the policy holds large ones"
    return f"notional {notional} is above {policy.hold_above_notional}"


def _correction_fields(case: _Case, correction: Correction, confirmations: int) -> dict[str, Any]:
    """The fields a ``Reconciled`` (or the ``CorrectionProposed`` of it) records."""
    rule = CORRECTIONS[correction]
    state, exchange = case.state, case.exchange
    return {
        "kind": correction.value,
        "before_side": state.side.value if state.side else None,
        "before_size": state.size,
        "after_side": case.side.value if case.side else None,
        "after_size": case.size,
        "after_avg_price": _average_after(rule.average, state, exchange),
        "snapshot_taken_at": case.snapshot.taken_at,
        "snapshot_seq": exchange.seq if exchange is not None else None,
        "snapshot_avg_price": exchange.avg_price if exchange is not None else None,
        "confirmations": confirmations,
        "cleared_orders": _cleared_orders(rule, case),
    }


def _correct(case: _Case, correction: Correction, confirmations: int) -> Judgement:
    """``Reconciled`` as :data:`CORRECTIONS` says, then ``Closed`` if it ended a lifecycle."""
    rule = CORRECTIONS[correction]
    state, taken_at = case.state, case.snapshot.taken_at
    emitter = _withdrawing(case, "the policy corrects it without approval now")
    emitter.emit(Reconciled, taken_at, **_correction_fields(case, correction, confirmations))
    if rule.closes:
        emitter.close_if_ended(correction.value, taken_at, state)
    return Judgement(Outcome.CORRECTED, correction, emitter.events)


def _cleared_orders(rule: CorrectionRule, case: _Case) -> list[str]:
    exits = [o.order_id for o in case.state.pending_orders if o.reduce_only]
    dead_opens = case.dead_opens()
    return (exits if rule.clears_exits else []) + (dead_opens if rule.clears_dead_opens else [])


def _average_after(
    average: AverageAfter, state: PositionState, exchange: ExchangePosition | None
) -> Decimal | None:
    if average is AverageAfter.NONE:
        return None
    reported = exchange.avg_price if exchange is not None and exchange.avg_price else None
    if average is AverageAfter.REPORTED_OR_KEPT:
        return reported or state.avg_entry_price
    return reported
