"""The seam through which operations (metrics, alerts) watch a ledger without the ledger knowing
them: observers passed in (``Ledger.open(url, observers=[...])``), called after the fact.

An observer never breaks what it watches: one that raises is logged and the others are still
called, and the write or round it watched goes on as if nothing happened. A ledger without
observers pays nothing for the seam.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from posledger.core.errors import StorageUnavailable

log = logging.getLogger("posledger.observers")

Observer = TypeVar("Observer")


class StoreObserver:
    """What a ledger tells its observers about its store. Override what you watch; the others
    do nothing."""

    def write_seconds(self, seconds: float) -> None:
        """A transaction was written, taking ``seconds`` (the store's insert, not the decision)."""

    def storage_unavailable(self, error: StorageUnavailable) -> None:
        """A call raised :class:`~posledger.StorageUnavailable`: the store could not answer."""


def notify(observers: Iterable[Observer], call: Callable[[Observer], object]) -> None:
    """``call(observer)`` for each observer (an :func:`operator.methodcaller`, say); an
    observer that raises is logged, not raised."""
    for observer in observers:
        try:
            call(observer)
        except Exception:
            log.exception("observer %r failed; ignored", observer)
