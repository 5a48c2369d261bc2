"""Pausing Python's cyclic garbage collector during a bulk load or import.

A cold load of ten thousand keys or a backfill chunk allocates hundreds of thousands of small
objects (parsed JSON, decimals, states, events) that stay alive. Each allocation burst lets the
collector run, and its older generations walk every live object of the process, the bot's own
included: measured on a cold reconcile of 10,000 keys, a third of the time. These objects form
no cycles (their refcounts free them), so nothing is lost by leaving any cycle to the
collector's next run after the pause.

The pause is process-wide (so is the collector) and bounded by the bulk call; nested or
concurrent pauses restore the collector when the last one ends, and only if it was enabled
when the first began: a process that disabled it keeps it disabled.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (see the module's docstring)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
