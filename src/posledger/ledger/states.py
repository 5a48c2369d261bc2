"""The states a ledger object knows, kept coherent with the store by following its log.

Queries see other processes' writes because every read first catches up with the log; an
agreeing reconciliation costs no per-key reads because the states are already here. Opening
reads no key: keys are learnt when a query first needs all of them. The owner (the Ledger)
serialises every call with its lock.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterable

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from posledger.core.events import POSITION_TOPICS, KeyRegistered, PositionEvent
from posledger.core.model import PositionKey
from posledger.core.position import PositionState, evolve, key_of
from posledger.store.application import LedgerApplication
from posledger.store.corruption import DAMAGE, corrupted, reading_stream
from posledger.store.decoding import StoredEventDecoder
from posledger.store.replay import (
    LOG_END,
    load_states,
    log_rows,
    registered_ids,
    registered_keys,
)
from posledger.store.snapshot import PositionSnapshot, project_from_store

LOG_PAGE = 1_000


class _Keys(dict[uuid.UUID, PositionKey]):
    """Keys by stream id, with the named books of each account key indexed as they are learnt
    (an account without them, the usual case, is decided key by key: docs/books.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.named_books: dict[PositionKey, dict[str, PositionKey]] = {}

    def __setitem__(self, stream: uuid.UUID, key: PositionKey) -> None:
        super().__setitem__(stream, key)
        if key.book:
            self.named_books.setdefault(key.account_key, {})[key.book] = key

    def setdefault(self, stream: uuid.UUID, key: PositionKey) -> PositionKey:
        if stream not in self:
            self[stream] = key
        return self[stream]


class StateCache:
    """Every state this object has loaded or written, every key it has learnt, and how far it
    has read the store's log."""

    def __init__(self, app: LedgerApplication, snapshot_every: int) -> None:
        self.app = app
        self.snapshot_every = snapshot_every
        self.decoder = StoredEventDecoder(app.mapper)
        self.states: dict[uuid.UUID, PositionState] = {}
        self.keys = _Keys()
        self.every_key_known = False
        """``keys`` holds every key of the store (catch-up and our own writes keep it so)."""
        self.log_position = app.recorder.max_notification_id() or 0
        self.unsnapshotted: set[uuid.UUID] = set()
        """Streams this object changed since their last snapshot (snapshotted on close)."""

    def state(self, stream_id: uuid.UUID) -> PositionState | None:
        """The cached state, else the stored one (None for a stream never written)."""
        state = self.states.get(stream_id)
        if state is None:
            state = self.load(stream_id)
            if state is not None:
                self.states[stream_id] = state
                self.keys[stream_id] = state.key
        return state

    def load(self, stream_id: uuid.UUID, version: int | None = None) -> PositionState | None:
        """The stored state (through its latest snapshot), or StoreCorrupted naming the stream."""
        try:
            with reading_stream(stream_id, self.keys.get(stream_id), app=self.app):
                return self.app.repository.get(  # type: ignore[type-var]
                    stream_id, version=version, projector_func=project_from_store
                )
        except AggregateNotFoundError:
            return None

    def saved(self, state: PositionState) -> None:
        """Hold a state this object just saved."""
        stream = state.key.stream_id
        self.states[stream] = state
        self.keys[stream] = state.key
        self.unsnapshotted.add(stream)

    def forget(self, streams: Iterable[uuid.UUID]) -> None:
        """Drop states a refused save showed to be stale."""
        for stream in streams:
            self.states.pop(stream, None)

    def catch_up(self) -> None:
        """Apply what other writers (and other ledger objects) appended since we last looked."""
        while True:
            page = log_rows(self.app, self.log_position, LOG_END, POSITION_TOPICS, LOG_PAGE)
            for row in page:
                try:
                    event = self.decoder(row[1], row[2], row[3], row[4])
                    assert isinstance(event, PositionEvent)
                    self._follow(event)
                except DAMAGE as error:
                    stream = self.decoder.stream_id(row[1])
                    raise corrupted(stream, error, self.keys.get(stream), row[2]) from error
                self.log_position = row[0]
            if len(page) < LOG_PAGE:
                return

    def _follow(self, event: PositionEvent) -> None:
        stream = event.originator_id
        if isinstance(event, KeyRegistered):
            self.keys[stream] = key_of(event)
        state = self.states.get(stream)
        if state is None:
            if isinstance(event, KeyRegistered):
                self.states[stream] = evolve(None, event)
        elif event.originator_version == state.version + 1:
            self.states[stream] = evolve(state, event)
        elif event.originator_version > state.version + 1:
            del self.states[stream]

    def advance_log(self, notification_ids: Iterable[int | None]) -> None:
        """Skip re-reading our own save when nothing else was written in between."""
        ids = sorted(i for i in notification_ids if i is not None)
        if ids and ids[0] == self.log_position + 1 and ids[-1] - ids[0] == len(ids) - 1:
            self.log_position = ids[-1]

    def know_every_key(self) -> None:
        """Learn every key from its KeyRegistered event (an indexed read, not a log scan), once.
        Run after a catch-up; the log is followed from where the ledger opened it."""
        if not self.every_key_known:
            for stream, key in registered_keys(self.app).items():
                self.keys.setdefault(stream, key)
            self.every_key_known = True

    def load_missing(self, streams: Collection[uuid.UUID] | None = None) -> None:
        """Load the states not cached yet (of ``streams``, or of every key) in bulk. Every key's
        state names its key, so loading them all needs only the keys' stream ids."""
        every = streams is None
        if streams is None:
            streams = self.keys if self.every_key_known else registered_ids(self.app)
        missing = [s for s in streams if s not in self.states]
        if missing:
            for stream, state in load_states(self.app, missing).items():
                self.states[stream] = state
                self.keys[stream] = state.key
        if every:
            self.every_key_known = True

    def snapshot_if_due(self, previous_version: int, state: PositionState) -> None:
        """Snapshot a state we hold when a save crossed a multiple of the interval. A concurrent
        writer's identical snapshot wins harmlessly."""
        every = self.snapshot_every
        if self.app.snapshots is None or state.version // every == previous_version // every:
            return
        with contextlib.suppress(IntegrityError):
            self.app.snapshots.put([PositionSnapshot.take(state)])
        self.unsnapshotted.discard(state.key.stream_id)

    def snapshot_all(self, states: list[PositionState]) -> None:
        """Snapshot ``states`` in one transaction (one by one if some exist already)."""
        if self.app.snapshots is None or not states:
            return
        try:
            self.app.snapshots.put([PositionSnapshot.take(state) for state in states])
        except IntegrityError:  # some were snapshotted already (another writer, or due)
            for state in states:
                with contextlib.suppress(IntegrityError):
                    self.app.snapshots.put([PositionSnapshot.take(state)])
        self.unsnapshotted.difference_update(state.key.stream_id for state in states)

    def snapshot_changed(self) -> None:
        """Snapshot what this object changed since its last snapshots (on close), so the next
        open loads one row per key instead of replaying their tails."""
        self.snapshot_all([self.states[s] for s in self.unsnapshotted if s in self.states])
