"""Approval of corrections end to end (docs/design.md#approval) on SQLite and PostgreSQL: the
bot's process proposes and holds, other processes (the CLI, as an operator runs it) list,
approve and reject; two operators approving at once apply the correction once."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import InvalidInput, Ledger, Outcome, ReconcilePolicy, Status
from posledger.core.events import CorrectionProposed, ProposalDecided, Reconciled
from tests.cli.test_cli import run_cli
from tests.conftest import T0, key
from tests.helpers import fill, snapshot

BTC = key("BTCUSDT")
POLICY = ReconcilePolicy(hold_for_approval={"phantom"})


def at(minutes: int) -> object:
    return T0 + timedelta(minutes=minutes)


def propose_phantom(url: str) -> str:
    """Long 2 in the ledger, flat on the exchange twice: the phantom is proposed, not applied."""
    with Ledger.open(url, policy=POLICY, clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("e1", "buy", "2", "100"))
        flat = [snapshot(at(m), [], symbols=["BTCUSDT"]) for m in (10, 11)]
        assert ledger.reconcile(flat[0], now=at(10)).outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
        report = ledger.reconcile(flat[1], now=at(11))
        assert [o.outcome for o in report.proposals] == [Outcome.PROPOSED]
        (held,) = ledger.proposals()
        assert held.proposal is not None
        return held.proposal.proposal_id


def test_a_held_key_stays_open_and_says_so_until_an_operator_approves(
    durable_url: str, tmp_path: Path
) -> None:
    proposal = propose_phantom(durable_url)
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        (state,) = ledger.open_positions()
        assert (state.size, state.held, ledger.can_trade(BTC)) == (Decimal(2), True, False)
        assert ledger.can_trade(key("ETHUSDT"))

    listed = run_cli("corrections", "--db", durable_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert proposal in listed.stdout and "phantom" in listed.stdout and "+2" in listed.stdout
    document = json.loads(
        run_cli("corrections", "--db", durable_url, "--json", cwd=tmp_path).stdout
    )
    (row,) = document["proposals"]
    assert (row["proposal_id"], row["kind"], row["after_size"]) == (proposal, "phantom", "0")

    approved = run_cli(
        "approve", proposal, "--db", durable_url, "--operator", "alice", cwd=tmp_path
    )
    assert approved.returncode == 0, approved.stderr
    assert "applied" in approved.stdout

    with Ledger.open(durable_url, policy=POLICY) as ledger:
        state = ledger.position(BTC)
        assert state is not None
        assert (state.status, state.held, ledger.can_trade(BTC)) == (Status.FLAT, False, True)
        decided, reconciled = [
            e for e in ledger.history(BTC) if isinstance(e, ProposalDecided | Reconciled)
        ]
    assert isinstance(decided, ProposalDecided)
    assert (decided.decision, decided.operator) == ("approved", "alice")
    assert isinstance(reconciled, Reconciled) and reconciled.kind == "phantom"
    again = run_cli("approve", proposal, "--db", durable_url, "--operator", "alice", cwd=tmp_path)
    assert again.returncode == 2 and "no open proposal" in again.stderr


def test_a_rejection_is_recorded_and_a_persisting_disagreement_is_proposed_again(
    durable_url: str, tmp_path: Path
) -> None:
    proposal = propose_phantom(durable_url)
    rejected = run_cli(
        "reject",
        proposal,
        "--db",
        durable_url,
        "--operator",
        "bob",
        "--reason",
        "checking",
        cwd=tmp_path,
    )
    assert rejected.returncode == 0, rejected.stderr
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        assert ledger.can_trade(BTC)
        (decided,) = [e for e in ledger.history(BTC) if isinstance(e, ProposalDecided)]
        assert (decided.decision, decided.operator, decided.reason) == (
            "rejected",
            "bob",
            "checking",
        )
        outcomes = [
            ledger.reconcile(snapshot(at(m), [], symbols=["BTCUSDT"]), now=at(m)).outcome(BTC)
            for m in (20, 21)
        ]
        assert [o.outcome for o in outcomes if o] == [Outcome.SUSPECT, Outcome.PROPOSED]
        assert not ledger.can_trade(BTC)
        proposals = [e for e in ledger.history(BTC) if isinstance(e, CorrectionProposed)]
        assert len(proposals) == 2 and proposals[1].proposal_id != proposal


def test_an_approval_after_a_fill_is_refused_and_withdraws(
    durable_url: str, tmp_path: Path
) -> None:
    proposal = propose_phantom(durable_url)
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        ledger.record_fill(BTC, fill("e2", "sell", "1", "101", exec_time=at(12)))
    refused = run_cli("approve", proposal, "--db", durable_url, "--operator", "alice", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "the ledger changed" in refused.stdout and "withdrawn" in refused.stdout
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        state = ledger.position(BTC)
        assert state is not None and (state.size, state.held) == (Decimal(1), False)
        assert not [e for e in ledger.history(BTC) if isinstance(e, Reconciled)]


def test_two_operators_approving_at_once_apply_the_correction_once(
    durable_url: str, tmp_path: Path
) -> None:
    proposal = propose_phantom(durable_url)
    command = [sys.executable, "-m", "posledger.cli", "approve", proposal, "--db", durable_url]

    def approve(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "--operator", name], capture_output=True, text=True, timeout=120
        )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(approve, ["alice", "bob"]))
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        history = ledger.history(BTC)
    assert len([e for e in history if isinstance(e, Reconciled)]) == 1
    assert len([e for e in history if isinstance(e, ProposalDecided)]) == 1


def test_deciding_an_unknown_proposal_or_as_posledger_is_invalid_input(durable_url: str) -> None:
    proposal = propose_phantom(durable_url)
    with Ledger.open(durable_url, policy=POLICY) as ledger:
        with pytest.raises(InvalidInput, match="no open proposal"):
            ledger.approve("feedfacecafe", operator="alice")
        with pytest.raises(InvalidInput, match="posledger itself"):
            ledger.approve(proposal, operator="posledger")
        with pytest.raises(InvalidInput, match="reason"):
            ledger.reject(proposal, operator="bob", reason="")
        assert not ledger.can_trade(BTC)
