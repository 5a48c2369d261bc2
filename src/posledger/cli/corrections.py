"""``posledger corrections``, ``approve`` and ``reject``: a person's side of the corrections a
policy holds for approval (docs/design.md#approval)."""

from __future__ import annotations

import argparse
import getpass
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from posledger.audit.format import signed_size, when
from posledger.cli.base import (
    DB_ARGUMENT,
    JSON_ARGUMENT,
    PROG,
    argument,
    open_ledger,
    plain,
    print_json,
    subcommand,
    table,
)
from posledger.cli.books import short_key
from posledger.core.position import PositionState, Proposal

if TYPE_CHECKING:
    from rich.console import Console

OPERATOR_ARGUMENT = argument(
    "--operator",
    metavar="NAME",
    help="who decides, as the record will name them (default: the login name)",
)


@subcommand(
    "corrections",
    help="the corrections waiting for a person: open proposals, with their evidence",
    description="""\
List the open proposals: confirmed disagreements with the exchange that the ledger's
policy holds for a person instead of correcting (ReconcilePolicy.hold_for_approval,
hold_above_notional). While a proposal is open its key is held: Ledger.can_trade(key)
is False. Decide one with `posledger approve ID` or `posledger reject ID --reason ...`.

Exit status: 0 (with or without proposals), 2 when the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} corrections --db sqlite:///positions.db
  {PROG} corrections --db 'postgresql://bot@db/trading?schema=bot1' --json
""",
    arguments=(DB_ARGUMENT, JSON_ARGUMENT),
)
def corrections(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        held = ledger.proposals()
    if args.json:
        print_json({"proposals": [_record(s) for s in held]})
        return 0
    if not held:
        console.print("No open proposals: nothing waits for a decision.")
        return 0
    made = table(
        "id",
        "key",
        "correction",
        "ledger → exchange",
        "evidence",
        "why held",
        wrap=("key", "ledger → exchange", "evidence", "why held"),
    )
    for state in held:
        proposal = _proposal(state)
        made.add_row(
            proposal.proposal_id,
            short_key(state.key),
            proposal.kind,
            f"{_holding(proposal.before_side, proposal.before_size)} → "
            f"{_holding(proposal.after_side, proposal.after_size)}",
            f"{when(proposal.evidence_taken_at)} ({proposal.confirmations}×)",
            proposal.reason,
        )
    console.print(made)
    console.print()
    console.print(
        f"{len(held)} open; approve with `{PROG} approve ID --db ...`, "
        f"reject with `{PROG} reject ID --reason TEXT --db ...`.",
        soft_wrap=True,
    )
    return 0


@subcommand(
    "approve",
    help="apply a proposed correction, recorded as your decision",
    description="""\
Approve an open proposal: the ledger applies exactly the correction it proposed and
records who approved it. If the ledger changed since the proposal (a fill arrived), the
approval is refused, the proposal withdrawn, and the next confirming snapshot proposes
afresh.

Exit status: 0 applied, 1 refused (the evidence no longer stands), 2 no such open
proposal or the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} approve 3f9c0a1b2d4e --db sqlite:///positions.db
  {PROG} approve 3f9c0a1b2d4e --db sqlite:///positions.db --operator alice
""",
    arguments=(
        argument("proposal_id", metavar="ID", help="the proposal's id (posledger corrections)"),
        DB_ARGUMENT,
        OPERATOR_ARGUMENT,
    ),
)
def approve(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        result = ledger.approve(args.proposal_id, operator=_operator(args))
    if result.applied:
        console.print(f"Approved {result.proposal_id}: the correction is applied.")
        return 0
    console.print(
        f"Refused {result.proposal_id}: {result.detail}; it is withdrawn.", soft_wrap=True
    )
    return 1


@subcommand(
    "reject",
    help="close a proposed correction without applying it, with your reason",
    description="""\
Reject an open proposal: nothing is corrected, and your reason is recorded. If the
exchange still disagrees, a new proposal follows after fresh confirmations.

Exit status: 0, 2 no such open proposal or the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} reject 3f9c0a1b2d4e --db sqlite:///positions.db --reason "closed by hand on Bybit"
""",
    arguments=(
        argument("proposal_id", metavar="ID", help="the proposal's id (posledger corrections)"),
        DB_ARGUMENT,
        argument("--reason", required=True, help="why, for the record"),
        OPERATOR_ARGUMENT,
    ),
)
def reject(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        ledger.reject(args.proposal_id, operator=_operator(args), reason=args.reason)
    console.print(f"Rejected {args.proposal_id}: nothing corrected.")
    return 0


def _operator(args: argparse.Namespace) -> str:
    return args.operator if args.operator is not None else getpass.getuser()


def _proposal(state: PositionState) -> Proposal:
    assert state.proposal is not None  # Ledger.proposals() lists held keys only
    return state.proposal


def _holding(side: str | None, size: Decimal) -> str:
    return f"{signed_size(side, size):+f}" if side else "flat"


def _record(state: PositionState) -> dict[str, object]:
    proposal = _proposal(state)
    fields = attrs.asdict(proposal, recurse=False)
    return {"key": str(state.key), **{name: plain(v) for name, v in fields.items()}}
