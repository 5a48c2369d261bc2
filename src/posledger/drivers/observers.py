"""What a synchronizer tells the operations watching it (metrics, alerts), and the disagreements
a round leaves open, from which they count the unexplained exposure.

Observers are passed in (``Synchronizer(ledger, venue, observers=[...])``) and called in the
round's own thread (for :class:`~posledger.drivers.aio.AsyncSynchronizer`, the event loop's),
after the fact, through :func:`~posledger.ledger.observers.notify`: one that raises is logged
and never breaks the round. Keep them quick; one that sends anything over a network hands it
to a thread of its own (:class:`~posledger.ops.webhook.WebhookNotifier`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from posledger.core.model import PositionKey, Snapshot
from posledger.core.position import PositionState
from posledger.core.reconcile import KeyOutcome, Outcome, notional

if TYPE_CHECKING:
    from posledger.drivers.sync import SyncReport, SyncRounds

UNSETTLED = frozenset({Outcome.SUSPECT, Outcome.PROPOSED, Outcome.HELD, Outcome.CONFLICT})
"""Outcomes after which the ledger may still disagree with the snapshot: nothing was corrected."""


class SyncObserver:
    """What a synchronizer tells its observers after each round. Override what you watch; the
    others do nothing. ``source`` is the synchronizer (its ``venue`` names the account, its
    ``staleness()`` says how old the last complete snapshot is)."""

    def round_done(self, source: SyncRounds[Any, Any], report: SyncReport) -> None:
        """A round completed: its snapshot, recoveries, outcomes and open disagreements."""

    def round_failed(self, source: SyncRounds[Any, Any], error: Exception) -> None:
        """A round raised ``error`` (an unreadable exchange, an unreachable store, ...) and
        wrote nothing of its reconciliation."""


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
