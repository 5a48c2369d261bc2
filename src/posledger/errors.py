"""Moved to :mod:`posledger.core.errors`; this import path stays for code written against 0.1."""

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
    PosledgerError,
    StorageUnavailable,
    StoreCorrupted,
)

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "ExchangeAuthFailed",
    "ExchangeMalformed",
    "ExchangeRejected",
    "ExchangeTruncated",
    "ExchangeUnavailable",
    "ExecutionConflict",
    "InvalidInput",
    "PosledgerError",
    "StorageUnavailable",
    "StoreCorrupted",
]
