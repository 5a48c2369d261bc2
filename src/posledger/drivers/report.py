"""What one synchronizer round reports: the snapshot it used, what it recovered, each key's
outcome, the executions of an unknown type, the disagreements it leaves open (from which
operations count the unexplained exposure) and its money checks."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import attrs

from posledger.core.model import PositionKey, Side, Snapshot
from posledger.core.position import PositionState
from posledger.core.reconcile import KeyOutcome, Outcome, ReconcileReport, notional
from posledger.drivers.money import MoneyOutcome

UNSETTLED = frozenset({Outcome.SUSPECT, Outcome.PROPOSED, Outcome.HELD, Outcome.CONFLICT})
"""Outcomes after which the ledger may still disagree with the snapshot: nothing was corrected."""


@attrs.frozen
class Disagreement:
    """A key whose ledger size still differs from the round's snapshot: signed sizes (long
    positive) on both sides, and the notional of the difference (None with no price known)."""

    key: PositionKey
    ledger_size: Decimal
    exchange_size: Decimal
    notional: Decimal | None


def unsettled_keys(outcomes: Iterable[KeyOutcome]) -> list[PositionKey]:
    """The keys whose outcome left a possible disagreement (their states are read again)."""
    return [outcome.key for outcome in outcomes if outcome.outcome in UNSETTLED]


def disagreements(
    snapshot: Snapshot, states: Iterable[PositionState | None]
) -> tuple[Disagreement, ...]:
    """The keys among ``states`` (read after the round) whose signed size is not the
    snapshot's, each with the notional of the difference."""
    found = []
    for state in states:
        if state is None:
            continue
        exchange = snapshot.position(state.key)
        held = exchange.size * exchange.side.sign if exchange and exchange.side else Decimal(0)
        if held != state.signed_size:
            found.append(
                Disagreement(state.key, state.signed_size, held, notional(state, exchange))
            )
    return tuple(found)


@attrs.frozen
class UnknownExecution:
    """A newly recorded execution of a type posledger does not know (kind ``unknown``): it moved
    the key's size by its signed quantity, and the exchange's position row will confirm or
    refute that (docs/design.md#exec-types). ``venue_type`` is the venue's raw type."""

    key: PositionKey
    exec_id: str
    venue_type: str | None
    side: Side
    qty: Decimal


@attrs.frozen
class SyncReport:
    """One round: the snapshot used, the fills recovered per key, every key's outcome, the
    recovered executions of an unknown type (flagged for a human), and the keys whose ledger
    size still differs from the snapshot after it (a suspect, a held proposal, a conflict)."""

    snapshot: Snapshot
    recovered: dict[PositionKey, int]
    conflicts: tuple[KeyOutcome, ...]
    reconcile: ReconcileReport
    unknown_executions: tuple[UnknownExecution, ...] = ()
    disagreements: tuple[Disagreement, ...] = ()
    money: tuple[MoneyOutcome, ...] = ()
    """The money checks of lifecycles this round found due (with ``money`` on)."""
    money_failure: str | None = None
    """Why the money check did not run this round (its read failed; it runs again next)."""

    @property
    def unexplained_exposure(self) -> Decimal:
        """The notional of every open disagreement (those with a known price): what the ledger
        holds and the exchange does not, or the reverse."""
        return sum((d.notional for d in self.disagreements if d.notional is not None), Decimal(0))

    @property
    def outcomes(self) -> tuple[KeyOutcome, ...]:
        return self.reconcile.outcomes + self.conflicts

    @property
    def fills_recovered(self) -> int:
        return sum(self.recovered.values())

    @property
    def caveats(self) -> tuple[str, ...]:
        """Where the snapshot's read did less than asked (its keys left out of coverage were
        not judged): :attr:`Snapshot.caveats`."""
        return self.snapshot.caveats
