"""Audit: history, time travel, fast bulk replay, verification, DataFrames, plots.

Answers "what did we hold, when, and why did it change?" from the stored events alone:

- :func:`history_rows` explains one key event by event (sizes before/after, the evidence of every
  correction); :func:`state_at` time-travels to a version or a business time.
- :func:`replay_all` / :func:`replay` rebuild every key from the event log read in bulk pages
  (``select_notifications``), not one aggregate read per key, with memory bounded by the number
  of keys: a store of millions of events replays in a notebook.
- :func:`verify` replays everything and checks the ledger's invariants (sizes recomputed
  independently of ``evolve``, executions applied once with their markers, well-formed
  lifecycles, snapshot-based loads, the read-model table) and reports problems by key.
- :func:`to_dataframe` and :func:`plot_position` (pandas / matplotlib, imported lazily:
  ``pip install 'posledger[notebook]'``), and HTML renderings for notebooks
  (:func:`state_html`, :func:`history_html`).

Sources: a :class:`~posledger.Ledger`, a ledger URL (``sqlite:///…``, ``postgresql://…``; a
``memory://`` store lives inside its Ledger, so pass the Ledger), or a ``LedgerApplication``.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import attrs
from eventsourcing.persistence import (
    Notification,
)

from posledger.core.errors import InvalidInput, PosledgerError, StorageUnavailable
from posledger.core.events import (
    POSITION_TOPICS,
    Closed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExecutionSeen,
    ExitRequested,
    Filled,
    KeyRegistered,
    OpenRequested,
    OrderEnded,
    PartiallyFilled,
    PositionEvent,
    Reconciled,
    marker_id,
)
from posledger.core.model import Fill, PositionKey, Side, aware_utc
from posledger.core.position import LifecycleSummary, PositionState, evolve, key_of
from posledger.ledger import Ledger
from posledger.store.application import LedgerApplication, storage_errors
from posledger.store.decoding import StoredEventDecoder
from posledger.store.replay import LogRow, log_rows
from posledger.store.snapshot import project_from_store
from posledger.store.storage import settings_for

__all__ = [
    "HISTORY_COLUMNS",
    "PROBLEM_COLUMNS",
    "READ_MODEL_TABLE",
    "STATE_COLUMNS",
    "Check",
    "Evidence",
    "HistoryRow",
    "HistoryRows",
    "Problem",
    "VerifyReport",
    "evidence_text",
    "history_html",
    "history_record",
    "history_rows",
    "history_stream",
    "plot_position",
    "replay",
    "replay_all",
    "replay_events",
    "state_at",
    "state_html",
    "state_record",
    "to_dataframe",
    "verify",
    "verify_html",
]

Source = str | Ledger | LedgerApplication
"""Where to read: a Ledger, a ledger URL, or an open LedgerApplication."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: positions in the notification log (total = its last id at start)."""

ZERO = Decimal(0)
PAGE_SIZE = 5_000
"""Notifications per bulk read: large enough to amortise a round trip, small enough to keep the
page (raw JSON bytes) a few MB."""
READ_MODEL_TABLE = "posledger_positions"
NOTEBOOK_HINT = "pip install 'posledger[notebook]'"


# --- reading the store -------------------------------------------------------------------------


def _storage_errors(what: str) -> contextlib.AbstractContextManager[None]:
    return storage_errors(what, "no ledger there (an audit never creates tables)")


@contextmanager
def _application(source: Source) -> Iterator[LedgerApplication]:
    """The LedgerApplication behind ``source``; opened (and closed afterwards) for a URL."""
    if isinstance(source, Ledger):
        yield source.application
        return
    if isinstance(source, LedgerApplication):
        yield source
        return
    if not isinstance(source, str):
        raise InvalidInput(
            f"expected a Ledger, a ledger URL or a LedgerApplication, got {type(source).__name__}"
        )
    settings = settings_for(source, create_tables=False)  # an audit never writes
    if settings.scheme == "memory":
        raise InvalidInput(
            "a memory:// store lives inside the Ledger that opened it: pass that Ledger"
        )
    if settings.scheme == "sqlite":
        path = settings.env["SQLITE_DBNAME"]
        if path != ":memory:" and not Path(path).is_file():
            raise InvalidInput(f"no ledger at {settings.description}: {path} does not exist")
    with _storage_errors(settings.description):
        app = LedgerApplication.for_settings(settings)
    try:
        yield app
    finally:
        app.close()


Decoder = Callable[[Notification], object]


def _log(
    app: LedgerApplication,
    topics: Sequence[str],
    progress: Progress | None,
    page_size: int,
) -> Iterator[tuple[Notification, Decoder]]:
    """Every notification with one of ``topics`` up to the log's end as of the call, in order,
    read in pages. Yields the raw notification with the decoder (decode lazily, so a caller can
    report an undecodable row instead of stopping)."""
    fast = StoredEventDecoder(app.mapper)

    def decode(notification: Notification) -> object:
        return fast(
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            notification.state,
        )

    for page in _log_pages(app, topics, progress, page_size):
        for row in page:
            notification = Notification(
                id=row[0],
                originator_id=row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(row[1]),
                originator_version=row[2],
                topic=row[3],
                state=bytes(row[4]),
            )
            yield notification, decode


def _log_pages(
    app: LedgerApplication,
    topics: Sequence[str],
    progress: Progress | None,
    page_size: int,
) -> Iterator[Sequence[LogRow]]:
    """The rows of :func:`_log` page by page, as stored (see
    :func:`posledger.store.replay.log_rows`): one page in memory at a time."""
    if page_size < 1:
        raise InvalidInput(f"page_size must be >= 1, got {page_size!r}")
    with _storage_errors(app.description):
        top = app.recorder.max_notification_id() or 0
    position = 0
    if progress is not None:
        progress(0, top)
    while position < top:
        with _storage_errors(app.description):
            page = log_rows(app, position, top, topics, page_size)
        if not page:
            break
        yield page
        position = page[-1][0]
        if progress is not None:
            progress(min(position, top), top)
        if len(page) < page_size:
            break
    if progress is not None and position < top:
        progress(top, top)


def _position_events(
    app: LedgerApplication,
    states: dict[int, PositionState],
    progress: Progress | None,
    page_size: int,
) -> Iterator[tuple[PositionEvent, PositionState]]:
    """Every position event of the log with its key's state after it, folded into ``states``
    (keyed by the stream id's integer: hashing a UUID costs a Python call per event)."""
    decode = StoredEventDecoder(app.mapper)
    for page in _log_pages(app, POSITION_TOPICS, progress, page_size):
        for row in page:
            event = decode(row[1], row[2], row[3], row[4])
            if not isinstance(event, PositionEvent):  # pragma: no cover - topics filter them
                continue
            stream = event.originator_id.int
            try:
                state = evolve(states.get(stream), event)
            except ValueError as error:
                raise ValueError(
                    f"stream {event.originator_id} v{event.originator_version}: {error}; "
                    "run verify()"
                ) from error
            states[stream] = state
            yield event, state


# --- replay ------------------------------------------------------------------------------------


def replay_events(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Generator[tuple[PositionEvent, PositionState], None, None]:
    """Every position event of the store in log order, with the state of its key after it.

    The log is read in bulk pages and folded with :func:`posledger.core.position.evolve`; only the
    latest state of each key is held, so memory grows with the number of keys, not events. The
    replay stops at the end of the log as it was when it started. A stream that cannot be folded
    (a version gap, a stream not starting with ``KeyRegistered``) raises ``ValueError``; use
    :func:`verify` to list every such problem instead."""
    with _application(source) as app:
        yield from _position_events(app, {}, progress, page_size)


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


def replay_all(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> dict[PositionKey, PositionState]:
    """The current state of every key, rebuilt from the whole event log in bulk (not through
    snapshots and not one read per key), in key order. Equals ``Ledger.positions()``."""
    states: dict[int, PositionState] = {}
    with _application(source) as app:
        for _ in _position_events(app, states, progress, page_size):
            pass
    return {s.key: s for s in sorted(states.values(), key=lambda s: str(s.key))}


def _key_events(source: Source | Iterable[PositionEvent], key: PositionKey | None) -> list[Any]:
    if isinstance(source, Ledger):
        if key is None:
            raise InvalidInput("pass the key whose history to read")
        return list(source.history(key))
    if isinstance(source, str | LedgerApplication):
        if key is None:
            raise InvalidInput("pass the key whose history to read")
        with _application(source) as app, _storage_errors(app.description):
            return list(app.events.get(key.stream_id))
    events = list(source)
    for event in events:
        if not isinstance(event, PositionEvent):
            raise InvalidInput(f"expected position events, got {type(event).__name__}")
    if key is not None:
        events = [e for e in events if e.originator_id == key.stream_id]
    return events


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
    for event in _key_events(source, key):
        if when is not None and event.timestamp > when:
            break
        if version is not None and event.originator_version > version:
            break
        state = evolve(state, event)
    return state


# --- history -----------------------------------------------------------------------------------


@attrs.frozen
class Evidence:
    """The exchange snapshot behind an ``ExchangeSnapshot`` or a ``Reconciled``."""

    taken_at: datetime
    side: str | None
    size: Decimal
    seq: int | None
    avg_price: Decimal | None
    confirmations: int

    @property
    def signed_size(self) -> Decimal:
        return _signed(self.side, self.size)


@attrs.frozen
class HistoryRow:
    """One event of a key, explained: what it was and what it did to the position.

    ``lifecycle`` is the lifecycle the key is in after the event (for ``Closed``, the one it
    records). ``reason``: ``Reconciled.kind``, ``Closed.reason``, ``OrderEnded.status``, the
    execution kind (``trade``, ``funding``, ``liquidation`` …), or ``suspect`` / ``agrees`` for
    an ``ExchangeSnapshot``. ``realized_pnl`` is the key's running total after the event."""

    key: PositionKey
    time: datetime
    version: int
    event: str
    lifecycle: int
    side_before: str | None
    size_before: Decimal
    side_after: str | None
    size_after: Decimal
    status: str
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    fee: Decimal | None = None
    exec_id: str | None = None
    order_id: str | None = None
    reason: str | None = None
    evidence: Evidence | None = None
    reduce_only: bool = False
    absorbed: bool = False
    overfill: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    @property
    def signed_size_before(self) -> Decimal:
        return _signed(self.side_before, self.size_before)

    @property
    def signed_size_after(self) -> Decimal:
        return _signed(self.side_after, self.size_after)

    @property
    def size_change(self) -> Decimal:
        """Signed change of the position (long positive)."""
        return self.signed_size_after - self.signed_size_before

    def _repr_html_(self) -> str:
        return history_html([self])


def _signed(side: str | Side | None, size: Decimal) -> Decimal:
    if not side or not size:
        return ZERO
    return size if Side(side) is Side.BUY else -size


def _side_value(side: Side | None) -> str | None:
    return side.value if side is not None else None


def _row(before: PositionState | None, event: PositionEvent, after: PositionState) -> HistoryRow:
    fields: dict[str, Any] = {}
    if isinstance(event, ExecutionEvent):
        fields.update(
            side=event.side,
            qty=event.qty,
            price=event.price,
            fee=event.fee,
            exec_id=event.exec_id,
            order_id=event.order_id or None,
            reason=event.kind,
            reduce_only=event.reduce_only,
            absorbed=event.absorbed,
            overfill=event.overfill,
        )
    elif isinstance(event, OpenRequested | ExitRequested):
        fields.update(
            side=event.side,
            qty=event.qty,
            price=event.price,
            order_id=event.order_id,
            reduce_only=isinstance(event, ExitRequested),
        )
    elif isinstance(event, OrderEnded):
        fields.update(order_id=event.order_id, reason=event.status)
    elif isinstance(event, ExchangeSnapshot):
        fields.update(
            reason="suspect" if event.suspect else "agrees",
            evidence=Evidence(
                taken_at=event.taken_at,
                side=event.side or None,
                size=event.size,
                seq=event.seq,
                avg_price=event.avg_price,
                confirmations=event.confirmations,
            ),
        )
    elif isinstance(event, Reconciled):
        fields.update(
            reason=event.kind,
            evidence=Evidence(
                taken_at=event.snapshot_taken_at,
                side=event.after_side or None,
                size=event.after_size,
                seq=event.snapshot_seq,
                avg_price=event.snapshot_avg_price,
                confirmations=event.confirmations,
            ),
        )
    elif isinstance(event, Closed):
        fields.update(reason=event.reason)
    return HistoryRow(
        key=after.key,
        time=event.timestamp,
        version=event.originator_version,
        event=type(event).__name__,
        lifecycle=event.lifecycle if isinstance(event, Closed) else after.lifecycle,
        side_before=_side_value(before.side) if before is not None else None,
        size_before=before.size if before is not None else ZERO,
        side_after=_side_value(after.side),
        size_after=after.size,
        status=after.status.value,
        realized_pnl=after.realized_pnl,
        **fields,
    )


class HistoryRows(list[HistoryRow]):
    """A plain list of :class:`HistoryRow` that a notebook shows as a table."""

    def _repr_html_(self) -> str:
        return history_html(self)


def history_rows(
    source: Source | Iterable[PositionEvent], key: PositionKey | None = None
) -> HistoryRows:
    """One :class:`HistoryRow` per event of ``key``, oldest first, folded with ``evolve`` (the
    sizes before/after are the ledger's own states). ``source`` is a Ledger, a URL, or the
    key's events (then ``key`` may be omitted; given, it selects that key's events)."""
    rows = HistoryRows()
    state: PositionState | None = None
    for event in _key_events(source, key):
        after = evolve(state, event)
        rows.append(_row(state, event, after))
        state = after
    return rows


def history_stream(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Generator[HistoryRow, None, None]:
    """Every key's :class:`HistoryRow` s in log order, from one bulk replay: memory grows with
    the number of keys, never with the number of events, so a whole store can be exported.
    A key's rows equal :func:`history_rows` for that key."""
    before: dict[uuid.UUID, PositionState] = {}
    for event, after in replay_events(source, progress=progress, page_size=page_size):
        yield _row(before.get(event.originator_id), event, after)
        before[event.originator_id] = after


# --- verify ------------------------------------------------------------------------------------


class Check(StrEnum):
    """The invariant a :class:`Problem` breaks."""

    SIZES = "sizes"
    """The size equals the signed sum of the size changes its events record."""
    EXECUTIONS = "executions"
    """Every exec_id applied once, with its ExecutionSeen marker (and no marker without it)."""
    LIFECYCLES = "lifecycles"
    """Streams start with KeyRegistered, versions are contiguous, every lifecycle end is followed
    by its Closed and lifecycles are numbered 1, 2, 3 …"""
    LEDGER = "ledger"
    """Loading a key the Ledger's way (latest snapshot plus tail) equals the bulk replay."""
    READ_MODEL = "read_model"
    """The ``posledger_positions`` table, where it exists, equals the replay."""
    DECODE = "decode"
    """A stored event that cannot be decoded."""


@attrs.frozen
class Problem:
    """One broken invariant. ``key`` is None only when no key can be named (a stream without
    ``KeyRegistered``, a marker pointing nowhere); ``version`` is the stream version involved."""

    key: PositionKey | None
    check: Check
    detail: str
    version: int | None = None

    def __str__(self) -> str:
        where = str(self.key) if self.key is not None else "(no key)"
        at = f" v{self.version}" if self.version is not None else ""
        return f"{where}{at} [{self.check}] {self.detail}"


@attrs.frozen
class VerifyReport:
    """What :func:`verify` found. ``ok`` when there is no problem."""

    problems: tuple[Problem, ...]
    keys_checked: int
    events_checked: int
    executions_checked: int
    markers_checked: int
    read_model_checked: bool
    snapshot_loads_checked: int
    """Keys loaded through their latest snapshot (check 4); keys without one are skipped."""
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    def for_key(self, key: PositionKey | None) -> list[Problem]:
        return [p for p in self.problems if p.key == key]

    def by_check(self, check: Check | str) -> list[Problem]:
        return [p for p in self.problems if p.check == check]

    @property
    def keys_with_problems(self) -> list[PositionKey | None]:
        seen: dict[str, PositionKey | None] = {}
        for problem in self.problems:
            seen.setdefault(str(problem.key), problem.key)
        return list(seen.values())

    def summary(self) -> str:
        checked = (
            f"{self.keys_checked} keys, {self.events_checked} events, "
            f"{self.executions_checked} executions, {self.markers_checked} markers"
        )
        extra = []
        if self.snapshot_loads_checked:
            extra.append(f"{self.snapshot_loads_checked} snapshot loads")
        if self.read_model_checked:
            extra.append(f"read model {READ_MODEL_TABLE}")
        also = f" (+ {', '.join(extra)})" if extra else ""
        if self.ok:
            return f"OK: {checked}{also} in {self.seconds:.2f}s"
        return (
            f"{len(self.problems)} problem(s) in {len(self.keys_with_problems)} key(s); "
            f"checked {checked}{also} in {self.seconds:.2f}s"
        )

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"  {p}" for p in self.problems)])

    def _repr_html_(self) -> str:
        return verify_html(self)


@attrs.define
class _Stream:
    """Running audit of one stream during :func:`verify`."""

    stream_id: uuid.UUID
    key: PositionKey | None
    state: PositionState | None = None
    broken: bool = False
    expected: Decimal = ZERO
    """Signed size recomputed from the event fields alone."""
    awaiting_close: LifecycleSummary | None = None
    awaiting_since: int = 0
    last_closed: int = 0
    events: int = 0


@attrs.frozen
class _Applied:
    stream_id: uuid.UUID
    version: int
    exec_id: str
    payload: str | None


@attrs.frozen
class _Marker:
    stream_id: uuid.UUID
    exec_id: str
    payload: str


def _payload(key: PositionKey, event: ExecutionEvent) -> str | None:
    """What the Ledger wrote in the execution's marker; None if the event is not a valid fill."""
    try:
        fill = Fill(
            exec_id=event.exec_id,
            order_id=event.order_id,
            side=event.side,
            qty=event.qty,
            price=event.price,
            exec_time=event.exec_time,
            fee=event.fee,
            kind=event.kind,
        )
    except (PosledgerError, ValueError, TypeError):
        return None
    return f"{key}|{fill.payload()}"


class _Verifier:
    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, _Stream] = {}
        self.problems: list[Problem] = []
        self.applied: dict[uuid.UUID, uuid.UUID] = {}
        """marker id -> the stream that applied it (first application), for duplicates."""
        self.unmatched: dict[uuid.UUID, _Applied] = {}
        """Applied executions whose marker has not been read yet."""
        self.markers: dict[uuid.UUID, _Marker] = {}
        """Markers whose execution has not been read yet."""
        self.events = 0
        self.executions = 0
        self.marker_count = 0

    def problem(
        self, stream: _Stream | None, check: Check, detail: str, version: int | None = None
    ) -> None:
        key = stream.key if stream is not None else None
        if stream is not None and key is None:
            detail = f"stream {stream.stream_id}: {detail}"
        self.problems.append(Problem(key, check, detail, version))

    def key_of_stream(self, stream_id: uuid.UUID) -> PositionKey | None:
        stream = self.streams.get(stream_id)
        return stream.key if stream is not None else None

    # -- the log ---------------------------------------------------------------------------

    def read(self, notification: Notification, decode: Decoder) -> None:
        try:
            event = decode(notification)
        except Exception as error:
            stream = self.streams.get(uuid.UUID(str(notification.originator_id)))
            self.problem(
                stream,
                Check.DECODE,
                f"notification {notification.id} ({notification.topic}) cannot be decoded: {error}",
                notification.originator_version,
            )
            if stream is not None:
                stream.broken = True
            return
        if isinstance(event, ExecutionSeen):
            self.marker(event)
        elif isinstance(event, PositionEvent):
            self.position_event(event)

    def position_event(self, event: PositionEvent) -> None:
        self.events += 1
        stream_id = event.originator_id
        version = event.originator_version
        stream = self.streams.get(stream_id)
        if stream is None:
            stream = _Stream(stream_id, None)
            self.streams[stream_id] = stream
            if isinstance(event, KeyRegistered):
                stream.key = key_of(event)
            if not isinstance(event, KeyRegistered) or version != 1:
                self.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"stream starts with {type(event).__name__} v{version}, not KeyRegistered v1",
                    version,
                )
                stream.broken = True
                return
        stream.events += 1
        if stream.broken:
            return
        state = stream.state
        if state is not None and version != state.version + 1:
            self.problem(
                stream,
                Check.LIFECYCLES,
                f"{type(event).__name__} has version {version} after v{state.version}: "
                "versions are not contiguous; the rest of the stream is not checked",
                version,
            )
            stream.broken = True
            return
        if state is not None and isinstance(event, KeyRegistered):
            self.problem(stream, Check.LIFECYCLES, "KeyRegistered again mid-stream", version)
        try:
            after = evolve(state, event)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            self.problem(
                stream,
                Check.LIFECYCLES,
                f"{type(event).__name__} cannot be applied: {error}; "
                "the rest of the stream is not checked",
                version,
            )
            stream.broken = True
            return
        if isinstance(event, KeyRegistered) and key_of(event).stream_id != stream_id:
            self.problem(
                stream,
                Check.LIFECYCLES,
                f"KeyRegistered names {key_of(event)}, whose stream is "
                f"{key_of(event).stream_id}, not this one",
                version,
            )
        self.check_size(stream, state, event, after)
        self.check_lifecycle(stream, state, event, after)
        if isinstance(event, ExecutionEvent):
            self.execution(stream, event)
        stream.state = after

    def check_size(
        self,
        stream: _Stream,
        before: PositionState | None,
        event: PositionEvent,
        after: PositionState,
    ) -> None:
        """Recompute the signed size from the event's own fields (not with evolve) and compare."""
        expected = stream.expected
        version = event.originator_version
        name = type(event).__name__
        if isinstance(event, PartiallyFilled | Filled):
            sign = Decimal(Side(event.side).sign)
            if event.absorbed:
                pass
            elif event.reduce_only:
                reducible = abs(expected) if expected * sign < 0 else ZERO
                taken = min(event.qty, reducible)
                expected += sign * taken
                beyond = event.qty - reducible
                if beyond > 0 and event.overfill < beyond:
                    self.problem(
                        stream,
                        Check.SIZES,
                        f"reduce-only {name} {event.exec_id} of {event.qty} against "
                        f"{reducible} held records overfill {event.overfill}, not {beyond}: "
                        "clipped silently",
                        version,
                    )
            else:
                expected += sign * event.qty
        elif isinstance(event, Reconciled):
            before_signed = _signed(event.before_side, event.before_size)
            after_signed = _signed(event.after_side, event.after_size)
            if event.after_size > 0 and not event.after_side:
                self.problem(
                    stream,
                    Check.SIZES,
                    f"Reconciled after_size {event.after_size} has no side",
                    version,
                )
            if before_signed != expected:
                self.problem(
                    stream,
                    Check.SIZES,
                    f"Reconciled({event.kind}) says the ledger held {before_signed:+} "
                    f"but the events before it imply {expected:+}",
                    version,
                )
                expected = after_signed
            else:
                expected += after_signed - before_signed
        if after.signed_size != expected:
            self.problem(
                stream,
                Check.SIZES,
                f"after {name} the replayed size is {after.signed_size:+} but the events' "
                f"size changes sum to {expected:+}",
                version,
            )
            expected = after.signed_size
        stream.expected = expected

    def check_lifecycle(
        self,
        stream: _Stream,
        before: PositionState | None,
        event: PositionEvent,
        after: PositionState,
    ) -> None:
        version = event.originator_version
        waiting = stream.awaiting_close
        if isinstance(event, Closed):
            if waiting is None:
                self.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"Closed(lifecycle {event.lifecycle}, {event.reason}) does not follow the "
                    "end of a lifecycle",
                    version,
                )
            else:
                if event.lifecycle != waiting.number:
                    self.problem(
                        stream,
                        Check.LIFECYCLES,
                        f"Closed records lifecycle {event.lifecycle}, but v{version - 1} ended "
                        f"lifecycle {waiting.number}",
                        version,
                    )
                figures = (event.realized_pnl, event.fees, event.funding)
                replayed = (waiting.realized_pnl, waiting.fees, waiting.funding)
                if figures != replayed:
                    self.problem(
                        stream,
                        Check.LIFECYCLES,
                        f"Closed(lifecycle {event.lifecycle}) records pnl/fees/funding "
                        f"{'/'.join(map(str, figures))}, the replay gives "
                        f"{'/'.join(map(str, replayed))}",
                        version,
                    )
            if event.lifecycle != stream.last_closed + 1:
                self.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"Closed(lifecycle {event.lifecycle}) follows lifecycle "
                    f"{stream.last_closed}: numbers must increase by one",
                    version,
                )
            stream.last_closed = event.lifecycle
            stream.awaiting_close = None
            return
        if waiting is not None:
            self.problem(
                stream,
                Check.LIFECYCLES,
                f"lifecycle {waiting.number} ended at v{stream.awaiting_since} but "
                f"{type(event).__name__} follows instead of Closed",
                version,
            )
            stream.awaiting_close = None
        ended = after.last_closed
        if before is not None and ended is not None and ended != before.last_closed:
            stream.awaiting_close = ended
            stream.awaiting_since = version

    def execution(self, stream: _Stream, event: ExecutionEvent) -> None:
        self.executions += 1
        key = stream.key
        assert key is not None
        seen_id = marker_id(key.venue, key.account, event.exec_id)
        first = self.applied.get(seen_id)
        version = event.originator_version
        if first is not None:
            where = self.key_of_stream(first)
            self.problem(
                stream,
                Check.EXECUTIONS,
                f"exec_id {event.exec_id!r} applied again ({type(event).__name__}); "
                f"first applied to {where if where is not None else first}",
                version,
            )
            return
        self.applied[seen_id] = stream.stream_id
        applied = _Applied(stream.stream_id, version, event.exec_id, _payload(key, event))
        marker = self.markers.pop(seen_id, None)
        if marker is None:
            self.unmatched[seen_id] = applied
        else:
            self.match(applied, marker)

    def marker(self, event: ExecutionSeen) -> None:
        self.marker_count += 1
        marker_id = event.originator_id
        marker = _Marker(event.stream_id, event.exec_id, event.payload)
        already = marker_id in self.applied and marker_id not in self.unmatched
        if already or marker_id in self.markers:
            self.problem(
                self.streams.get(event.stream_id),
                Check.EXECUTIONS,
                f"a second ExecutionSeen marker for exec_id {event.exec_id!r}",
            )
            return
        applied = self.unmatched.pop(marker_id, None)
        if applied is None:
            self.markers[marker_id] = marker
        else:
            self.match(applied, marker)

    def match(self, applied: _Applied, marker: _Marker) -> None:
        stream = self.streams.get(applied.stream_id)
        if marker.stream_id != applied.stream_id:
            self.problem(
                stream,
                Check.EXECUTIONS,
                f"the ExecutionSeen marker of {applied.exec_id!r} points at "
                f"{self.key_of_stream(marker.stream_id) or marker.stream_id}, not this key",
                applied.version,
            )
        elif marker.exec_id != applied.exec_id:
            self.problem(
                stream,
                Check.EXECUTIONS,
                f"the marker of {applied.exec_id!r} records exec_id {marker.exec_id!r}",
                applied.version,
            )
        elif applied.payload is not None and marker.payload != applied.payload:
            self.problem(
                stream,
                Check.EXECUTIONS,
                f"{applied.exec_id!r} was applied as {applied.payload!r} but its marker "
                f"records {marker.payload!r}",
                applied.version,
            )

    # -- the end of the log ----------------------------------------------------------------

    def finish(self) -> None:
        for stream in self.streams.values():
            if stream.awaiting_close is not None and not stream.broken:
                self.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"lifecycle {stream.awaiting_close.number} ended at "
                    f"v{stream.awaiting_since} but the stream ends without its Closed",
                    stream.awaiting_since,
                )
            if stream.key is None and stream.state is None and not stream.broken:
                self.problem(stream, Check.LIFECYCLES, "stream without KeyRegistered")
        for applied in self.unmatched.values():
            self.problem(
                self.streams.get(applied.stream_id),
                Check.EXECUTIONS,
                f"exec_id {applied.exec_id!r} was applied without its ExecutionSeen marker "
                "(a replayed WebSocket message would be applied again)",
                applied.version,
            )
        for marker in self.markers.values():
            owner = self.streams.get(marker.stream_id)
            target = "" if owner is not None else f" (stream {marker.stream_id} is unknown)"
            self.problems.append(
                Problem(
                    owner.key if owner is not None else None,
                    Check.EXECUTIONS,
                    f"ExecutionSeen marker of exec_id {marker.exec_id!r} without an applied "
                    f"execution{target}: that execution would be skipped as a duplicate",
                )
            )

    def states(self) -> dict[uuid.UUID, PositionState]:
        return {
            s.stream_id: s.state
            for s in self.streams.values()
            if s.state is not None and not s.broken and s.key is not None
        }


def _differences(left: PositionState, right: PositionState) -> list[str]:
    out = []
    for field in attrs.fields(PositionState):
        a, b = getattr(left, field.name), getattr(right, field.name)
        if a != b:
            out.append(f"{field.name}: {_short(a)} vs {_short(b)}")
    return out


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_ledger_loads(
    app: LedgerApplication, verifier: _Verifier, states: Mapping[uuid.UUID, PositionState]
) -> int:
    """Load every key that has a snapshot the Ledger's way (its latest snapshot plus the tail)
    and compare with the bulk replay; returns how many were loaded. A key without a snapshot
    loads by folding the very events the replay folded, so it is not read a second time."""
    snapshots = app.snapshots
    loads = 0
    for stream_id, replayed in states.items():
        stream = verifier.streams[stream_id]
        try:
            with _storage_errors(app.description):
                if snapshots is not None and not any(
                    True for _ in snapshots.get(stream_id, desc=True, limit=1)
                ):
                    continue
                loads += 1
                loaded = app.repository.get(  # type: ignore[type-var]
                    stream_id, projector_func=project_from_store
                )
        except StorageUnavailable:
            raise
        except Exception as error:
            verifier.problem(
                stream, Check.LEDGER, f"loading it through its snapshot fails: {error}"
            )
            continue
        if loaded != replayed:
            differences = _differences(loaded, replayed)  # type: ignore[arg-type]
            verifier.problem(
                stream,
                Check.LEDGER,
                "the snapshot-based load differs from the bulk replay: "
                + "; ".join(differences[:6]),
                getattr(loaded, "version", None),
            )
    return loads


# --- the read model ----------------------------------------------------------------------------


_KEY_COLUMNS = ("venue", "account", "category", "symbol", "idx")
_READ_MODEL_FIELDS: dict[str, Callable[[PositionState], object]] = {
    "size": lambda s: s.size,
    "signed_size": lambda s: s.signed_size,
    "side": lambda s: _side_value(s.side),
    "status": lambda s: s.status.value,
    "version": lambda s: s.version,
    "lifecycle": lambda s: s.lifecycle,
    "avg_entry_price": lambda s: s.avg_entry_price,
    "realized_pnl": lambda s: s.realized_pnl,
    "fees": lambda s: s.fees,
    "funding": lambda s: s.funding,
    "lifecycle_realized_pnl": lambda s: s.lifecycle_realized_pnl,
    "lifecycle_fees": lambda s: s.lifecycle_fees,
    "lifecycle_funding": lambda s: s.lifecycle_funding,
    "opened_at": lambda s: s.opened_at,
    "updated_at": lambda s: s.updated_at,
    "overfills": lambda s: s.overfills,
    "pending_orders": lambda s: len(s.pending_orders),
}


def _read_model_rows(app: LedgerApplication) -> list[dict[str, Any]] | None:
    """The rows of the read-model table in the same store, or None where there is none."""
    datastore = getattr(app.recorder, "datastore", None)
    if datastore is None:
        return None
    module = type(datastore).__module__
    with _storage_errors(app.description):
        if module.startswith("eventsourcing.sqlite"):
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name=?",
                    (READ_MODEL_TABLE,),
                )
                if cursor.fetchone() is None:
                    return None
                cursor.execute(f'SELECT * FROM "{READ_MODEL_TABLE}"')
                return [dict(row) for row in cursor.fetchall()]
        if module.startswith("eventsourcing.postgres"):
            from psycopg import sql

            schema = datastore.schema
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    "SELECT 1 FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name = %s",
                    (schema, READ_MODEL_TABLE),
                )
                if cursor.fetchone() is None:
                    return None
                cursor.execute(
                    sql.SQL("SELECT * FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(READ_MODEL_TABLE)
                    )
                )
                return [dict(row) for row in cursor.fetchall()]
    return None


def _same(expected: object, stored: object) -> bool:
    if expected is None or stored is None:
        return (expected is None or expected == "") and (stored is None or stored == "")
    if isinstance(expected, Decimal):
        try:
            return Decimal(str(stored)) == expected
        except ArithmeticError:
            return False
    if isinstance(expected, datetime):
        if isinstance(stored, str):
            try:
                stored = datetime.fromisoformat(stored)
            except ValueError:
                return False
        return isinstance(stored, datetime) and stored.tzinfo is not None and stored == expected
    if isinstance(expected, str):
        return str(stored).lower() == expected
    if isinstance(expected, int):
        try:
            return int(str(stored)) == expected
        except ValueError:
            return False
    return stored == expected


def _check_read_model(
    rows: list[dict[str, Any]], verifier: _Verifier, states: Mapping[uuid.UUID, PositionState]
) -> None:
    """Compare the read-model rows with the replay, column by column for the columns it has
    (``size``, ``side``, ``status``, ``version``, ``avg_entry_price`` …); the table holds one row
    per key, so a missing row is a problem too (a read model that is behind shows up here)."""
    if not rows:
        columns: set[str] = set()
    else:
        columns = set(rows[0])
    by_stream: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        stream_id = _row_stream(row)
        if stream_id is None:
            verifier.problems.append(
                Problem(
                    None,
                    Check.READ_MODEL,
                    f"{READ_MODEL_TABLE} row without a recognisable key "
                    f"({', '.join(_KEY_COLUMNS)} or stream_id): {_short(row, 120)}",
                )
            )
            continue
        by_stream[stream_id] = row
    compared = [name for name in _READ_MODEL_FIELDS if name in columns]
    for stream_id, state in states.items():
        stream = verifier.streams[stream_id]
        found = by_stream.pop(stream_id, None)
        if found is None:
            verifier.problem(
                stream,
                Check.READ_MODEL,
                f"{READ_MODEL_TABLE} has no row for this key "
                f"(replay: {state.status.value} {state.signed_size:+} at v{state.version})",
            )
            continue
        wrong = [
            f"{name}: table {found[name]!r}, replay {_READ_MODEL_FIELDS[name](state)!s}"
            for name in compared
            if not _same(_READ_MODEL_FIELDS[name](state), found[name])
        ]
        if wrong:
            verifier.problem(
                stream,
                Check.READ_MODEL,
                f"{READ_MODEL_TABLE} differs from the replay: " + "; ".join(wrong),
                state.version,
            )
    for stream_id, row in by_stream.items():
        known = verifier.streams.get(stream_id)
        if known is not None and (known.broken or known.key is None):
            continue  # already reported; nothing sound to compare with
        verifier.problems.append(
            Problem(
                _row_key(row),
                Check.READ_MODEL,
                f"{READ_MODEL_TABLE} has a row for a key the event log does not hold",
            )
        )


def _row_key(row: Mapping[str, Any]) -> PositionKey | None:
    if all(name in row for name in _KEY_COLUMNS):
        try:
            return PositionKey(**{name: row[name] for name in _KEY_COLUMNS})
        except (PosledgerError, ValueError, TypeError):
            return None
    if "position_idx" in row and all(name in row for name in _KEY_COLUMNS[:4]):
        try:
            fields = {name: row[name] for name in _KEY_COLUMNS[:4]}
            return PositionKey(idx=row["position_idx"], **fields)
        except (PosledgerError, ValueError, TypeError):
            return None
    return None


def _row_stream(row: Mapping[str, Any]) -> uuid.UUID | None:
    key = _row_key(row)
    if key is not None:
        return key.stream_id
    for name in ("stream_id", "originator_id"):
        value = row.get(name)
        if value is not None:
            try:
                return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            except ValueError:
                return None
    return None


def verify(
    source: Source,
    *,
    progress: Progress | None = None,
    check_ledger: bool = True,
    check_read_model: bool = True,
    page_size: int = PAGE_SIZE,
) -> VerifyReport:
    """Replay the whole store and check its invariants, reporting every problem by key.

    1. ``sizes``: each key's size equals the signed sum of the size changes its events record,
       recomputed from the event fields without ``evolve`` (fills: reduce-only ones never flip and
       are clipped at the position, with the excess recorded as overfill; absorbed ones change
       nothing; funding changes nothing; ``Reconciled``: after - before, where ``before`` must be
       what the events before it imply).
    2. ``executions``: no exec_id applied twice (per venue and account, the ledger's dedup
       scope), every applied execution has its ``ExecutionSeen`` marker pointing at its key with
       the same payload, and no marker lacks its execution.
    3. ``lifecycles``: a stream starts with ``KeyRegistered``, versions are contiguous, every
       lifecycle end is followed by its ``Closed`` (with the replayed figures), numbered 1, 2, …
    4. ``ledger``: loading a key the Ledger's way, through its latest snapshot plus the events
       after it, equals the bulk replay (keys without a snapshot load by the same fold).
    5. ``read_model``: the ``posledger_positions`` table, if the store has one, equals the replay.

    Memory: the replay holds one state per key; the execution check holds one small entry per
    execution (its marker id)."""
    started = time.perf_counter()
    verifier = _Verifier()
    topics = (*POSITION_TOPICS, ExecutionSeen.TOPIC)
    read_model = False
    loads = 0
    with _application(source) as app:
        for notification, decode in _log(app, topics, progress, page_size):
            verifier.read(notification, decode)
        verifier.finish()
        states = verifier.states()
        if check_ledger:
            loads = _check_ledger_loads(app, verifier, states)
        if check_read_model:
            rows = _read_model_rows(app)
            if rows is not None:
                read_model = True
                _check_read_model(rows, verifier, states)
    problems = sorted(
        verifier.problems,
        key=lambda p: (str(p.key) if p.key is not None else "~", p.version or 0),
    )
    return VerifyReport(
        problems=tuple(problems),
        keys_checked=len(verifier.streams),
        events_checked=verifier.events,
        executions_checked=verifier.executions,
        markers_checked=verifier.marker_count,
        read_model_checked=read_model,
        snapshot_loads_checked=loads,
        seconds=time.perf_counter() - started,
    )


# --- DataFrames --------------------------------------------------------------------------------


def _optional(module: str, purpose: str) -> Any:
    """Import a notebook dependency on first use, with the install hint if it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"{purpose} needs {module.split('.')[0]}: {NOTEBOOK_HINT}") from error


HISTORY_COLUMNS = (
    "key",
    "time",
    "version",
    "event",
    "lifecycle",
    "side_before",
    "size_before",
    "side_after",
    "size_after",
    "signed_size_before",
    "signed_size_after",
    "size_change",
    "status",
    "side",
    "qty",
    "price",
    "fee",
    "exec_id",
    "order_id",
    "reason",
    "reduce_only",
    "absorbed",
    "overfill",
    "realized_pnl",
    "evidence_taken_at",
    "evidence_side",
    "evidence_size",
    "evidence_seq",
    "evidence_avg_price",
    "evidence_confirmations",
)
STATE_COLUMNS = (
    "key",
    "venue",
    "account",
    "category",
    "symbol",
    "idx",
    "status",
    "side",
    "size",
    "signed_size",
    "avg_entry_price",
    "realized_pnl",
    "fees",
    "funding",
    "lifecycle",
    "lifecycle_realized_pnl",
    "lifecycle_fees",
    "lifecycle_funding",
    "pending_orders",
    "opened_at",
    "updated_at",
    "version",
    "overfills",
    "suspect_size",
    "suspect_count",
)
PROBLEM_COLUMNS = ("key", "check", "version", "detail")
_TIME_COLUMNS = ("time", "evidence_taken_at", "opened_at", "updated_at")
_INT_COLUMNS = ("version", "lifecycle", "idx", "pending_orders", "overfills")
_NULLABLE_INT_COLUMNS = ("evidence_seq", "evidence_confirmations", "suspect_count")
_BOOL_COLUMNS = ("reduce_only", "absorbed")


def history_record(row: HistoryRow) -> dict[str, Any]:
    """One history row as a flat record with :data:`HISTORY_COLUMNS` (exact values)."""
    evidence = row.evidence
    return {
        "key": str(row.key),
        "time": row.time,
        "version": row.version,
        "event": row.event,
        "lifecycle": row.lifecycle,
        "side_before": row.side_before,
        "size_before": row.size_before,
        "side_after": row.side_after,
        "size_after": row.size_after,
        "signed_size_before": row.signed_size_before,
        "signed_size_after": row.signed_size_after,
        "size_change": row.size_change,
        "status": row.status,
        "side": row.side,
        "qty": row.qty,
        "price": row.price,
        "fee": row.fee,
        "exec_id": row.exec_id,
        "order_id": row.order_id,
        "reason": row.reason,
        "reduce_only": row.reduce_only,
        "absorbed": row.absorbed,
        "overfill": row.overfill,
        "realized_pnl": row.realized_pnl,
        "evidence_taken_at": evidence.taken_at if evidence else None,
        "evidence_side": evidence.side if evidence else None,
        "evidence_size": evidence.size if evidence else None,
        "evidence_seq": evidence.seq if evidence else None,
        "evidence_avg_price": evidence.avg_price if evidence else None,
        "evidence_confirmations": evidence.confirmations if evidence else None,
    }


def _problem_record(problem: Problem) -> dict[str, Any]:
    return {
        "key": str(problem.key) if problem.key is not None else None,
        "check": problem.check.value,
        "version": problem.version,
        "detail": problem.detail,
    }


def state_record(state: PositionState) -> dict[str, Any]:
    """One position state as a flat record with :data:`STATE_COLUMNS` (exact values)."""
    key = state.key
    return {
        "key": str(key),
        "venue": key.venue,
        "account": key.account,
        "category": key.category,
        "symbol": key.symbol,
        "idx": key.idx,
        "status": state.status.value,
        "side": _side_value(state.side),
        "size": state.size,
        "signed_size": state.signed_size,
        "avg_entry_price": state.avg_entry_price,
        "realized_pnl": state.realized_pnl,
        "fees": state.fees,
        "funding": state.funding,
        "lifecycle": state.lifecycle,
        "lifecycle_realized_pnl": state.lifecycle_realized_pnl,
        "lifecycle_fees": state.lifecycle_fees,
        "lifecycle_funding": state.lifecycle_funding,
        "pending_orders": len(state.pending_orders),
        "opened_at": state.opened_at,
        "updated_at": state.updated_at,
        "version": state.version,
        "overfills": state.overfills,
        "suspect_size": _signed(state.suspect.side, state.suspect.size) if state.suspect else None,
        "suspect_count": state.suspect.count if state.suspect else None,
    }


def to_dataframe(
    items: Iterable[HistoryRow]
    | Iterable[PositionState]
    | Mapping[Any, PositionState]
    | Iterable[Problem]
    | VerifyReport,
) -> Any:
    """A pandas DataFrame of history rows (one per event), of position states (one per key; a
    ``replay_all`` dict works too), or of a verify report's problems. Quantities, prices and PnL
    stay ``Decimal`` (object columns, never float: convert explicitly with ``.astype(float)``
    for plotting); times are ``datetime64[…, UTC]``; ``key`` is the key's text form. An empty
    input gives the history columns."""
    pandas = _optional("pandas", "to_dataframe")
    if isinstance(items, VerifyReport):
        items = items.problems
    values: list[object] = list(items.values() if isinstance(items, Mapping) else items)
    columns: tuple[str, ...]
    if values and all(isinstance(v, PositionState) for v in values):
        columns = STATE_COLUMNS
        records = [state_record(v) for v in values if isinstance(v, PositionState)]
    elif values and all(isinstance(v, Problem) for v in values):
        frame = pandas.DataFrame.from_records(
            [_problem_record(v) for v in values if isinstance(v, Problem)],
            columns=list(PROBLEM_COLUMNS),
        )
        frame["version"] = frame["version"].astype("Int64")
        return frame
    elif all(isinstance(v, HistoryRow) for v in values):
        columns = HISTORY_COLUMNS
        records = [history_record(v) for v in values if isinstance(v, HistoryRow)]
    else:
        kinds = sorted({type(v).__name__ for v in values})
        raise InvalidInput(
            f"to_dataframe takes HistoryRow, PositionState or Problem items, got {kinds}"
        )
    frame = pandas.DataFrame.from_records(records, columns=list(columns))
    for name in columns:
        if name in _TIME_COLUMNS:
            frame[name] = pandas.to_datetime(frame[name], utc=True)
        elif name in _INT_COLUMNS:
            frame[name] = frame[name].astype("int64")
        elif name in _NULLABLE_INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif name in _BOOL_COLUMNS:
            frame[name] = frame[name].astype(bool)
        elif frame[name].dtype != object and not len(frame):
            frame[name] = frame[name].astype(object)
    return frame


# --- plots -------------------------------------------------------------------------------------


def _qty(value: Decimal) -> str:
    """A signed quantity as people write it: +3160, -0.5, 0."""
    return f"{value:+f}" if value else "0"


_LONG, _SHORT, _LEDGER = "#2e7d32", "#c62828", "#1f3b73"
_EXCHANGE, _CORRECTION, _MUTED = "#ef6c00", "#6a1b9a", "#9e9e9e"


def plot_position(
    source: Source | Iterable[PositionEvent] | Sequence[HistoryRow],
    key: PositionKey | None = None,
    ax: Any = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """Plot one key's size over time: the ledger's size as a step line (long above zero, short
    below), the exchange's snapshots as diamonds (hollow while suspect), every correction as a
    vertical line labelled with its kind, and fills as ticks along the bottom. Returns the axes
    (a new figure when ``ax`` is None).

    ``since`` / ``until`` zoom the time axis (a correction minutes after an open held for hours
    is otherwise a sliver at the right edge); the title still counts the whole history."""
    pyplot = _optional("matplotlib.pyplot", "plot_position")
    mdates = importlib.import_module("matplotlib.dates")
    Line2D = importlib.import_module("matplotlib.lines").Line2D
    Patch = importlib.import_module("matplotlib.patches").Patch

    values = list(source) if isinstance(source, list | tuple) else None
    if values is not None and values and all(isinstance(v, HistoryRow) for v in values):
        rows: list[HistoryRow] = values
    else:
        rows = history_rows(source, key)  # type: ignore[arg-type]
    if not rows:
        raise InvalidInput(f"{key}: no events to plot")
    the_key = rows[-1].key
    own_figure = ax is None
    if own_figure:
        _, ax = pyplot.subplots(figsize=(11, 5), layout="constrained")
    axes: Any = ax  # matplotlib's stubs do not take datetimes as coordinates

    # Events are in stream order; a late execution carries its (earlier) exchange time. The
    # ledger's line changes when the event was recorded, i.e. not before anything preceding it.
    times: list[datetime] = []
    for r in rows:
        times.append(max(r.time, times[-1]) if times else r.time)
    start = min(r.time for r in rows)
    end = times[-1]
    span = end - start if end > start else timedelta(minutes=1)
    right = end + span * 0.04
    view_start = aware_utc(since, "since") if since is not None else start - span * 0.02
    view_end = aware_utc(until, "until") if until is not None else right
    if view_end <= view_start:
        raise InvalidInput(f"nothing to show between {view_start} and {view_end}")
    view_span = view_end - view_start
    times.append(max(right, view_end))
    sizes = [float(r.signed_size_after) for r in rows]
    sizes.append(sizes[-1])

    axes.axhline(0, color=_MUTED, linewidth=0.8, zorder=1)
    for part, color in (
        ([max(v, 0.0) for v in sizes], _LONG),
        ([min(v, 0.0) for v in sizes], _SHORT),
    ):
        axes.fill_between(
            times, part, 0, step="post", color=color, alpha=0.10, linewidth=0, zorder=1
        )
    axes.step(times, sizes, where="post", color=_LEDGER, linewidth=2.2, zorder=3)

    snapshots = [r for r in rows if r.event == "ExchangeSnapshot" and r.evidence is not None]
    confirmed = [r for r in snapshots if r.reason != "suspect"]
    confirmed += [r for r in rows if r.event == "Reconciled" and r.evidence is not None]
    suspect = [r for r in snapshots if r.reason == "suspect"]
    marker = {"marker": "D", "s": 58, "zorder": 5, "linewidths": 1.6}
    if confirmed:
        axes.scatter(
            [r.evidence.taken_at for r in confirmed if r.evidence],
            [float(r.evidence.signed_size) for r in confirmed if r.evidence],
            color=_EXCHANGE,
            edgecolors=_EXCHANGE,
            **marker,
        )
    for r in suspect:
        assert r.evidence is not None
        axes.scatter(
            [r.evidence.taken_at],
            [float(r.evidence.signed_size)],
            facecolors="white",
            edgecolors=_EXCHANGE,
            **marker,
        )
        axes.annotate(
            f"{r.evidence.confirmations}",
            (r.evidence.taken_at, float(r.evidence.signed_size)),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=_EXCHANGE,
        )

    corrections = [r for r in rows if r.event == "Reconciled"]
    label_y = 0.97
    for r in corrections:
        if not view_start <= r.time <= view_end:
            continue
        axes.axvline(r.time, color=_CORRECTION, linestyle="--", linewidth=1.3, zorder=2)
        text = f"{r.reason}\n{_qty(r.signed_size_before)} → {_qty(r.signed_size_after)}"
        near_end = r.time > view_start + view_span * 0.8
        axes.annotate(
            text,
            (r.time, label_y),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if near_end else 4, 0),
            textcoords="offset points",
            ha="right" if near_end else "left",
            va="top",
            fontsize=8.5,
            color=_CORRECTION,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": _CORRECTION, "lw": 0.8},
            zorder=6,
        )
        label_y = 0.80 if label_y > 0.9 else 0.97

    fills = [r for r in rows if r.event in ("Filled", "PartiallyFilled")]
    transform = axes.get_xaxis_transform()
    marks = (
        ([r.time for r in fills if r.side == "buy" and not r.absorbed], _LONG),
        ([r.time for r in fills if r.side == "sell" and not r.absorbed], _SHORT),
        ([r.time for r in fills if r.absorbed], _MUTED),
    )
    for ticks, color in marks:
        if ticks:
            axes.plot(
                ticks,
                [0.025] * len(ticks),
                linestyle="none",
                marker="|",
                markersize=11,
                markeredgewidth=1.6,
                color=color,
                transform=transform,
                zorder=4,
            )

    low, high = min(min(sizes), 0.0), max(max(sizes), 0.0)
    for r in snapshots:
        if r.evidence is not None:
            low = min(low, float(r.evidence.signed_size))
            high = max(high, float(r.evidence.signed_size))
    pad = (high - low) * 0.12 or 1.0
    axes.set_ylim(low - pad * 1.6, high + pad * 3.0 if corrections else high + pad)
    axes.set_xlim(view_start, view_end)

    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.grid(True, axis="y", color="#e0e0e0", linewidth=0.8)
    axes.set_axisbelow(True)
    for spine in ("top", "right"):
        axes.spines[spine].set_visible(False)
    axes.set_xlabel("time (UTC)")
    axes.set_ylabel("position size  (+ long / − short)")
    last = rows[-1]
    axes.set_title(
        f"{the_key.symbol} #{the_key.idx}   {the_key.venue} / {the_key.account} / "
        f"{the_key.category}\nnow {last.status} {_qty(last.signed_size_after)} after "
        f"{_count(len(rows), 'event')}, {_count(len(fills), 'fill')}, "
        f"{_count(len(corrections), 'correction')}",
        loc="left",
        fontsize=11,
    )

    handles: list[Any] = [Line2D([], [], color=_LEDGER, linewidth=2.2, label="ledger size")]
    if any(v > 0 for v in sizes):
        handles.append(Patch(facecolor=_LONG, alpha=0.25, label="long"))
    if any(v < 0 for v in sizes):
        handles.append(Patch(facecolor=_SHORT, alpha=0.25, label="short"))
    if confirmed:
        handles.append(
            Line2D([], [], linestyle="none", marker="D", color=_EXCHANGE, label="exchange")
        )
    if suspect:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="D",
                markerfacecolor="white",
                markeredgecolor=_EXCHANGE,
                label="exchange, suspect (n = confirmations)",
            )
        )
    if corrections:
        handles.append(
            Line2D([], [], color=_CORRECTION, linestyle="--", label="correction (Reconciled)")
        )
    if fills:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="|",
                markersize=10,
                markeredgewidth=1.6,
                color=_MUTED,
                label="fills (green buy, red sell)",
            )
        )
    if own_figure:  # room to the right of the plot
        axes.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9
        )
    else:  # someone else's layout: stay inside the axes
        axes.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
    return axes


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- HTML for notebooks --------------------------------------------------------------------------


_TABLE_STYLE = (
    "border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px"
)
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return html.escape(value.isoformat(sep=" "))
    if isinstance(value, Decimal):
        return html.escape(format(value, "f"))
    return html.escape(str(value))


def state_html(state: PositionState) -> str:
    """An HTML table of one PositionState (for ``_repr_html_``); every value escaped."""
    pending = ", ".join(
        f"{o.order_id} {o.side.value} {_cell(o.filled)}/{_cell(o.qty)}"
        + (" reduce-only" if o.reduce_only else "")
        for o in state.pending_orders
    )
    suspect = state.suspect
    rows: list[tuple[str, object]] = [
        ("key", state.key),
        ("status", state.status.value),
        ("side", _side_value(state.side)),
        ("size", state.size),
        ("avg entry price", state.avg_entry_price),
        ("realized PnL (total)", state.realized_pnl),
        ("fees (total)", state.fees),
        ("funding (total)", state.funding),
        ("lifecycle", state.lifecycle),
        (
            "lifecycle PnL / fees / funding",
            f"{_cell(state.lifecycle_realized_pnl)} / {_cell(state.lifecycle_fees)} / "
            f"{_cell(state.lifecycle_funding)}",
        ),
        ("opened at", state.opened_at),
        ("pending orders", pending or None),
        (
            "suspect",
            f"{_qty(_signed(suspect.side, suspect.size))} seen {suspect.count}×"
            if suspect
            else None,
        ),
        ("overfills", state.overfills or None),
        ("version", state.version),
        ("updated at", state.updated_at),
    ]
    body = "".join(
        f'<tr><th style="{_CELL}">{html.escape(name)}</th><td style="{_CELL}">{_cell(value)}'
        "</td></tr>"
        for name, value in rows
        if value is not None
    )
    return f'<table style="{_TABLE_STYLE}">{body}</table>'


def evidence_text(evidence: Evidence | None) -> str | None:
    """Evidence in a few words: ``-3160 @ 2025-10-13 09:31:00 seq 12 (2×)``."""
    if evidence is None:
        return None
    text = f"{_qty(evidence.signed_size)} @ {evidence.taken_at:%Y-%m-%d %H:%M:%S}"
    if evidence.seq is not None:
        text += f" seq {evidence.seq}"
    if evidence.confirmations:
        text += f" ({evidence.confirmations}×)"
    return text


_HISTORY_HTML_COLUMNS: tuple[tuple[str, Callable[[HistoryRow], object]], ...] = (
    ("v", lambda r: r.version),
    ("time", lambda r: r.time),
    ("event", lambda r: r.event),
    ("lc", lambda r: r.lifecycle),
    (
        "size",
        lambda r: (
            f"{_qty(r.signed_size_before)} → {_qty(r.signed_size_after)}"
            if r.size_change
            else _qty(r.signed_size_after)
        ),
    ),
    ("side", lambda r: r.side),
    ("qty", lambda r: r.qty),
    ("price", lambda r: r.price),
    ("fee", lambda r: r.fee),
    ("exec_id", lambda r: r.exec_id),
    ("order_id", lambda r: r.order_id),
    ("reason", lambda r: r.reason),
    ("evidence", lambda r: evidence_text(r.evidence)),
    (
        "flags",
        lambda r: (
            " ".join(
                flag
                for flag, on in (
                    ("reduce-only", r.reduce_only),
                    ("absorbed", r.absorbed),
                    (f"overfill {r.overfill:f}", r.overfill > 0),
                )
                if on
            )
            or None
        ),
    ),
)


def history_html(rows: Iterable[HistoryRow]) -> str:
    """An HTML table of history rows (for ``_repr_html_``); every value escaped. Size changes
    show as before → after; corrections are highlighted."""
    head = "".join(f'<th style="{_CELL}">{html.escape(n)}</th>' for n, _ in _HISTORY_HTML_COLUMNS)
    lines = []
    for row in rows:
        shade = (
            "background:#f3e5f5"
            if row.event == "Reconciled"
            else "background:#fff3e0"
            if row.reason == "suspect"
            else "background:#f5f5f5"
            if row.event == "Closed"
            else ""
        )
        cells = "".join(
            f'<td style="{_CELL}">{_cell(get(row))}</td>' for _, get in _HISTORY_HTML_COLUMNS
        )
        lines.append(f'<tr style="{shade}">{cells}</tr>')
    return f'<table style="{_TABLE_STYLE}"><tr>{head}</tr>{"".join(lines)}</table>'


def verify_html(report: VerifyReport) -> str:
    """An HTML rendering of a :class:`VerifyReport`: its summary, then one row per problem."""
    colour = "#2e7d32" if report.ok else "#c62828"
    summary = f'<p style="color:{colour};font-weight:bold">{html.escape(report.summary())}</p>'
    if report.ok:
        return summary
    head = "".join(f'<th style="{_CELL}">{name}</th>' for name in ("key", "v", "check", "detail"))
    lines = "".join(
        "<tr>"
        + "".join(
            f'<td style="{_CELL}">{_cell(value)}</td>'
            for value in (
                p.key if p.key is not None else "(no key)",
                p.version,
                p.check.value,
                p.detail,
            )
        )
        + "</tr>"
        for p in report.problems
    )
    return f'{summary}<table style="{_TABLE_STYLE}"><tr>{head}</tr>{lines}</table>'


def _show_states_as_tables_in_notebooks() -> None:
    """Let Jupyter render a PositionState with :func:`state_html`: registered from here, so the
    domain type knows nothing of presentation."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(PositionState, state_html)


_show_states_as_tables_in_notebooks()
