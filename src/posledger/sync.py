"""Moved to :mod:`posledger.drivers.sync`; this import path stays for code written against 0.1."""

from posledger.drivers.sync import (
    RECOVERY_MARGIN,
    Backoff,
    RecoveryPlan,
    Synchronizer,
    SyncReport,
    UnknownExecution,
    conflict_outcome,
    finish_round,
    record_recovered,
)

__all__ = [
    "RECOVERY_MARGIN",
    "Backoff",
    "RecoveryPlan",
    "SyncReport",
    "Synchronizer",
    "UnknownExecution",
    "conflict_outcome",
    "finish_round",
    "record_recovered",
]
