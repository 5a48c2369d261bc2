"""What each event sets on the state, field by field, on literal events (mutation testing found
these fields unasserted: an evolve that forgot one would have passed every rule test).

Invariants:
1. Every event advances ``version`` and ``updated_at`` to its own.
2. A rejection ends the suspect run; an approval or a withdrawal keeps it.
3. A proposal records when it was proposed and its evidence; later evidence for it replaces
   the evidence's time, seq, average and confirmations.
4. Adding to a position whose cost is unknown (a correction without an average) prices the
   held size at the fill's price, linear and inverse alike.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from posledger.core.decide import Emitter
from posledger.core.events import (
    CorrectionProposed,
    ExchangeSnapshot,
    MoneyReconciled,
    PositionEvent,
    ProposalDecided,
    Reconciled,
)
from posledger.core.model import PositionKey
from posledger.core.position import PositionState
from tests.conftest import T0, key
from tests.core.literals import KEY, d, filled, fresh
from tests.helpers import fill

INVERSE = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
LATER = T0 + timedelta(minutes=5)


def emitted(state: PositionState, cls: type[PositionEvent], **fields: Any) -> PositionState:
    emitter = Emitter(state)
    emitter.emit(cls, LATER, **fields)
    return emitter.preview


def correction(kind: str = "phantom", **changes: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "before_side": "buy",
        "before_size": d(1),
        "after_side": None,
        "after_size": d(0),
        "after_avg_price": None,
        "snapshot_taken_at": LATER,
        "snapshot_seq": 7,
        "snapshot_avg_price": None,
        "confirmations": 2,
        "cleared_orders": [],
        **changes,
    }


def proposed(state: PositionState) -> PositionState:
    return emitted(state, CorrectionProposed, proposal_id="p1", reason="held", **correction())


def long_one() -> PositionState:
    return filled(fresh(), fill("e1", "Buy", "1", "100", order_id="o1"))


def money() -> dict[str, Any]:
    return {
        "window_start": T0,
        "window_end": LATER,
        "records": ["r1"],
        "ledger_trading_pnl": d(0),
        "ledger_fees": d(0),
        "ledger_funding": None,
        "exchange_trading_pnl": d(1),
        "exchange_fees": d(0),
        "exchange_funding": None,
        "exchange_penalty": d(0),
        "difference": d(1),
        "adopted": False,
        "tolerance": d(0),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda s: proposed(s),
        lambda s: emitted(
            proposed(s),
            ProposalDecided,
            proposal_id="p1",
            decision="rejected",
            operator="ana",
            reason="no",
        ),
        lambda s: emitted(s, MoneyReconciled, **money()),
        lambda s: emitted(s, Reconciled, **correction()),
    ],
    ids=["proposed", "decided", "money", "reconciled"],
)
def test_1_every_event_advances_version_and_updated_at(make: Any) -> None:
    state = long_one()
    after = make(state)
    assert after.updated_at == LATER
    assert after.version > state.version


def test_1_the_decision_and_the_money_event_each_take_one_version() -> None:
    state = proposed(long_one())
    decided = emitted(
        state, ProposalDecided, proposal_id="p1", decision="approved", operator="a", reason="ok"
    )
    assert (decided.version, decided.updated_at) == (state.version + 1, LATER)
    checked = emitted(long_one(), MoneyReconciled, **money())
    assert (checked.version, checked.updated_at) == (long_one().version + 1, LATER)


@pytest.mark.parametrize(
    ("decision", "keeps_suspect"), [("rejected", False), ("approved", True), ("withdrawn", True)]
)
def test_2_only_a_rejection_ends_the_suspect_run(decision: str, keeps_suspect: bool) -> None:
    state = proposed(long_one())
    assert state.suspect is not None
    after = emitted(
        state, ProposalDecided, proposal_id="p1", decision=decision, operator="a", reason="r"
    )
    assert after.proposal is None
    assert (after.suspect is not None) is keeps_suspect


def test_3_a_proposal_records_when_and_on_what_evidence() -> None:
    state = proposed(long_one())
    proposal = state.proposal
    assert proposal is not None
    assert (proposal.proposed_at, proposal.evidence_taken_at, proposal.confirmations) == (
        LATER,
        LATER,
        2,
    )
    assert state.suspect is not None and state.suspect.taken_at == LATER
    assert state.last_snapshot_at == LATER


def test_3_later_evidence_replaces_the_proposals_evidence() -> None:
    state = proposed(long_one())
    emitter = Emitter(state)
    later = LATER + timedelta(minutes=1)
    emitter.emit(
        ExchangeSnapshot,
        later,
        taken_at=later,
        side=None,
        size=d(0),
        avg_price=Decimal("99"),
        seq=42,
        updated_at=None,
        suspect=True,
        confirmations=3,
    )
    proposal = emitter.preview.proposal
    assert proposal is not None
    assert (
        proposal.evidence_taken_at,
        proposal.evidence_seq,
        proposal.evidence_avg_price,
        proposal.confirmations,
    ) == (later, 42, Decimal("99"), 3)


@pytest.mark.parametrize(
    ("k", "expected_avg"),
    [(KEY, Decimal("110")), (INVERSE, Decimal("20000"))],
    ids=["linear", "inverse"],
)
def test_4_an_add_to_a_position_of_unknown_cost_prices_it_at_the_fill(
    k: PositionKey, expected_avg: Decimal
) -> None:
    adopted = emitted(
        fresh(k),
        Reconciled,
        **correction(
            "adopted", before_side=None, before_size=d(0), after_side="buy", after_size=d(100)
        ),
    )
    assert adopted.cost_basis is None and adopted.avg_entry_price is None
    price = "110" if k is KEY else "20000"
    after = filled(
        adopted, fill("e2", "Buy", "100", price, order_id="o2", exec_time=LATER + timedelta(1))
    )
    assert after.size == 200
    assert after.avg_entry_price == expected_avg


def test_keys_in_books_are_other_streams() -> None:
    assert key().in_book("alpha").stream_id != key().stream_id
    assert key().in_book("alpha").account_key == key()


def test_every_way_to_a_key_shares_one_cached_instance() -> None:
    """A cold start meets each key as a registration, a snapshot and an exchange row: all three
    must hit cached_key's one instance (a call without ``book`` once missed the cache and built
    and hashed every key twice)."""
    from posledger import ExchangePosition, Snapshot
    from posledger.core.model import cached_key

    stored = cached_key("bybit", "main", "linear", "ETHUSDT", 0, "")
    row = ExchangePosition(symbol="ETHUSDT", side="Buy", size="1", idx=0)
    snapshot = Snapshot(
        venue="bybit", account="main", category="linear", taken_at=LATER, positions=[row]
    )
    assert snapshot.key_for(snapshot.positions[0]) is stored
    assert cached_key("bybit", "main", "linear", "ETHUSDT", 0, "alpha").account_key is stored
