"""Bulk replay and time travel: every key's states rebuilt from the event log read in pages.

Only the latest state of each key is held, so memory grows with the number of keys, not events:
a store of millions of events replays in a notebook.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from datetime import datetime

from posledger.audit.source import (
    PAGE_SIZE,
    Progress,
    Source,
    key_events,
    log_pages,
    opened,
)
from posledger.core.errors import InvalidInput
from posledger.core.events import POSITION_TOPICS, PositionEvent
from posledger.core.model import PositionKey, aware_utc
from posledger.core.position import PositionState, evolve
from posledger.ledger import Ledger
from posledger.store.application import LedgerApplication
from posledger.store.corruption import DAMAGE, corrupted, reading_stream
from posledger.store.decoding import StoredEventDecoder
from posledger.store.gc_pause import gc_paused


def position_events(
    app: LedgerApplication,
    states: dict[int, PositionState],
    progress: Progress | None,
    page_size: int,
) -> Iterator[tuple[PositionEvent, PositionState]]:
    """Every position event of the log with its key's state after it, folded into ``states``
    (keyed by the stream id's integer: hashing a UUID costs a Python call per event)."""
    decode = StoredEventDecoder(app.mapper)
    for page in log_pages(app, POSITION_TOPICS, progress, page_size):
        for row in page:
            try:
                event = decode(row[1], row[2], row[3], row[4])
                assert isinstance(event, PositionEvent)  # the topics are position events'
                stream = event.originator_id.int
                state = evolve(states.get(stream), event)
            except DAMAGE as error:
                before = states.get(decode.stream_id(row[1]).int)
                key = None if before is None else before.key
                raise corrupted(row[1], error, key, row[2]) from error
            states[stream] = state
            yield event, state


def replay_events(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Generator[tuple[PositionEvent, PositionState], None, None]:
    """Every position event of the store in log order, with the state of its key after it.

    The log is read in bulk pages and folded with :func:`posledger.core.position.evolve`; only the
    latest state of each key is held, so memory grows with the number of keys, not events. The
    replay stops at the end of the log as it was when it started. A stream that cannot be decoded
    or folded (a version gap, a stream not starting with ``KeyRegistered``, a damaged row) raises
    :class:`~posledger.StoreCorrupted` naming it; :func:`verify` lists every such problem."""
    with opened(source) as app:
        yield from position_events(app, {}, progress, page_size)


def replay(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Generator[PositionState, None, None]:
    """The state of a key after each position event, in log order, for every key (stream it:
    build a whole account's time series without holding its events). For the final state of
    every key use :func:`replay_all`."""
    for _, state in replay_events(source, progress=progress, page_size=page_size):
        yield state


@gc_paused()
def replay_all(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> dict[PositionKey, PositionState]:
    """The current state of every key, rebuilt from the whole event log in bulk (not through
    snapshots and not one read per key), in key order. Equals ``Ledger.positions()``."""
    states: dict[int, PositionState] = {}
    with opened(source) as app:
        for _ in position_events(app, states, progress, page_size):
            pass
    return {s.key: s for s in sorted(states.values(), key=lambda s: str(s.key))}


def state_at(
    source: Source | Iterable[PositionEvent],
    key: PositionKey,
    *,
    at: datetime | None = None,
    version: int | None = None,
) -> PositionState | None:
    """The key's state as of business time ``at`` (its events up to the first one stamped later),
    at stream ``version``, or now. None if the key had no events by then."""
    if version is not None and at is not None:
        raise InvalidInput("pass version= or at=, not both")
    if isinstance(source, Ledger):
        return source.position(key, version=version, at=at)
    when = aware_utc(at, "at") if at is not None else None
    state: PositionState | None = None
    with reading_stream(key.stream_id, key):
        for event in key_events(source, key):
            if when is not None and event.timestamp > when:
                break
            if version is not None and event.originator_version > version:
                break
            state = evolve(state, event)
    return state
