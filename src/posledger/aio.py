"""Moved to :mod:`posledger.ledger.aio` (AsyncLedger) and :mod:`posledger.drivers.aio`
(AsyncSynchronizer); this import path stays for code written against 0.1."""

from posledger.drivers.aio import AsyncSynchronizer
from posledger.ledger.aio import AsyncLedger

__all__ = [
    "AsyncLedger",
    "AsyncSynchronizer",
]
