"""The exec_ids this process knows to be recorded, with their payloads.

The store's ``ExecutionSeen`` streams are the truth (a second writer of an exec_id fails on
the marker's unique version); this bounded cache only spares a read per duplicate. After a
refused save the ledger learns from the store which of a batch's exec_ids exist.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from posledger.core.decide import Marker
from posledger.core.events import ExecutionSeen, marker_id
from posledger.core.model import Fill, PositionKey
from posledger.store.application import LedgerApplication

SEEN_CACHE_SIZE = 65_536


class SeenExecutions:
    """A least-recently-used map of marker stream id to recorded payload."""

    def __init__(self, size: int = SEEN_CACHE_SIZE) -> None:
        self.size = size
        self._payloads: OrderedDict[uuid.UUID, str] = OrderedDict()
        self._lock = threading.Lock()
        """Callers of a group commit remember their exec_ids after it, outside the ledger's
        lock (taking it would wait for the next group's commit): the cache guards itself."""

    def get(self, marker: uuid.UUID) -> str | None:
        return self._payloads.get(marker)

    def remember(self, markers: Iterable[Marker]) -> None:
        with self._lock:
            for marker in markers:
                self._payloads[marker.stream_id] = marker.payload
                self._payloads.move_to_end(marker.stream_id)
            while len(self._payloads) > self.size:
                self._payloads.popitem(last=False)

    def learn(self, app: LedgerApplication, key: PositionKey, fills: Sequence[Fill]) -> None:
        """Read from the store the markers of those of ``fills`` not cached here."""
        for fill in fills:
            stream = marker_id(key.venue, key.account, fill.exec_id)
            if stream in self._payloads:
                continue
            for event in app.events.get(stream, limit=1):
                assert isinstance(event, ExecutionSeen)
                self.remember([Marker(stream, event.payload)])
