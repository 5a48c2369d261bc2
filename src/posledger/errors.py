"""Moved to :mod:`posledger.core.errors`; this import path stays for code written against 0.1."""

from posledger.core.errors import (
    ConcurrencyError,
    ExchangeRejected,
    ExchangeUnavailable,
    ExecutionConflict,
    InvalidInput,
    PosledgerError,
    StorageUnavailable,
)

__all__ = [
    "ConcurrencyError",
    "ExchangeRejected",
    "ExchangeUnavailable",
    "ExecutionConflict",
    "InvalidInput",
    "PosledgerError",
    "StorageUnavailable",
]
