"""posledger: an event-sourced position ledger for trading bots.

Positions are rebuilt from events; every disagreement with the exchange becomes an explicit,
auditable reconciliation event instead of a mutated row.
"""

from posledger.errors import (
    ConcurrencyError,
    ExchangeRejected,
    ExchangeUnavailable,
    ExecutionConflict,
    InvalidInput,
    PosledgerError,
    StorageUnavailable,
)
from posledger.ledger import FillBatchResult, FillResult, Ledger
from posledger.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    PositionKey,
    Side,
    Snapshot,
    Status,
)
from posledger.position import PendingOrder, PositionState
from posledger.reconcile import (
    Correction,
    KeyOutcome,
    Outcome,
    ReconcilePolicy,
    ReconcileReport,
)

__all__ = [
    "ConcurrencyError",
    "Correction",
    "ExchangePosition",
    "ExchangeRejected",
    "ExchangeUnavailable",
    "ExecKind",
    "ExecutionConflict",
    "Fill",
    "FillBatchResult",
    "FillResult",
    "InvalidInput",
    "KeyOutcome",
    "Ledger",
    "Outcome",
    "PendingOrder",
    "PositionKey",
    "PositionState",
    "PosledgerError",
    "ReconcilePolicy",
    "ReconcileReport",
    "Side",
    "Snapshot",
    "Status",
    "StorageUnavailable",
]
