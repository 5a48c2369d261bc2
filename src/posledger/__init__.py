"""posledger: an event-sourced position ledger for trading bots.

Positions are rebuilt from events; every disagreement with the exchange becomes an explicit,
auditable reconciliation event instead of a mutated row.
"""

from posledger.core.allocation import AllocationPolicy
from posledger.core.approval import ApprovalResult
from posledger.core.errors import (
    ConcurrencyError,
    ConfigurationError,
    ExchangeAuthFailed,
    ExchangeMalformed,
    ExchangeRejected,
    ExchangeTruncated,
    ExchangeUnavailable,
    ExecutionConflict,
    InvalidInput,
    LedgerClosed,
    PosledgerError,
    StorageUnavailable,
    StoreCorrupted,
)
from posledger.core.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    PositionKey,
    Side,
    Snapshot,
    Status,
)
from posledger.core.money import MoneyCheck, MoneyPolicy, MoneyRecord
from posledger.core.position import PendingOrder, PositionState, Proposal
from posledger.core.reconcile import (
    Correction,
    KeyOutcome,
    Outcome,
    ProposalDecision,
    ReconcilePolicy,
    ReconcileReport,
)
from posledger.ledger import FillBatchResult, FillResult, Ledger

__all__ = [
    "AllocationPolicy",
    "ApprovalResult",
    "ConcurrencyError",
    "ConfigurationError",
    "Correction",
    "ExchangeAuthFailed",
    "ExchangeMalformed",
    "ExchangePosition",
    "ExchangeRejected",
    "ExchangeTruncated",
    "ExchangeUnavailable",
    "ExecKind",
    "ExecutionConflict",
    "Fill",
    "FillBatchResult",
    "FillResult",
    "InvalidInput",
    "KeyOutcome",
    "Ledger",
    "LedgerClosed",
    "MoneyCheck",
    "MoneyPolicy",
    "MoneyRecord",
    "Outcome",
    "PendingOrder",
    "PositionKey",
    "PositionState",
    "PosledgerError",
    "Proposal",
    "ProposalDecision",
    "ReconcilePolicy",
    "ReconcileReport",
    "Side",
    "Snapshot",
    "Status",
    "StorageUnavailable",
    "StoreCorrupted",
]
