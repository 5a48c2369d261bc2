"""Moved to :mod:`posledger.drivers.aio`; this import path stays for code written against 0.1."""

from posledger.drivers.aio import (
    AsyncLedger,
    AsyncSynchronizer,
)

__all__ = [
    "AsyncLedger",
    "AsyncSynchronizer",
]
