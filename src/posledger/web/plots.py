"""A key's position plot (:func:`posledger.audit.plot_position`) rendered on the server as SVG.

matplotlib draws through its object API on a figure of its own (no pyplot state shared between
threads), one drawing at a time, and a drawing is kept per key and version: a page that
refreshes redraws nothing the key has not changed since.
"""

from __future__ import annotations

import importlib
import io
import threading
from collections import OrderedDict
from collections.abc import Sequence

from posledger.audit.history import HistoryRow
from posledger.audit.plot import plot_position

CACHED_PLOTS = 64


class Plots:
    """SVG drawings of keys, by (stream id, version)."""

    def __init__(self, limit: int = CACHED_PLOTS) -> None:
        self.limit = limit
        self._drawn: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def svg(self, stream: str, rows: Sequence[HistoryRow]) -> bytes:
        """The plot of a key's history ``rows`` (its stream id names it in the cache)."""
        wanted = (stream, rows[-1].version)
        with self._lock:
            if wanted not in self._drawn:
                self._drawn[wanted] = _draw(rows)
                while len(self._drawn) > self.limit:
                    self._drawn.popitem(last=False)
            self._drawn.move_to_end(wanted)
            return self._drawn[wanted]


def _draw(rows: Sequence[HistoryRow]) -> bytes:
    figure = importlib.import_module("matplotlib.figure").Figure(
        figsize=(11, 5), layout="constrained"
    )
    plot_position(rows, ax=figure.subplots())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()
