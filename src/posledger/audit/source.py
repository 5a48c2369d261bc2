"""Where an audit reads: a Ledger, a ledger URL or a LedgerApplication, and its event log in pages.

An audit only reads: a URL is opened without creating tables, and a store without ledger tables
is an error naming it. The log is read in bulk pages (one page in memory at a time) up to its
end as of the first read, so a replay of a live store terminates.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification

from posledger.core.errors import InvalidInput
from posledger.core.events import PositionEvent
from posledger.core.model import PositionKey
from posledger.ledger import Ledger
from posledger.store.application import LedgerApplication, storage_errors
from posledger.store.decoding import StoredEventDecoder
from posledger.store.replay import LogRow, log_rows
from posledger.store.storage import settings_for

Source = str | Ledger | LedgerApplication
"""Where to read: a Ledger, a ledger URL, or an open LedgerApplication."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: positions in the notification log (total = its last id at start)."""
Decoder = Callable[[Notification], object]
"""Decodes one notification into its event (lazily, so a caller can report an undecodable row)."""

PAGE_SIZE = 5_000
"""Notifications per bulk read: large enough to amortise a round trip, small enough to keep the
page (raw JSON bytes) a few MB."""


def audit_storage_errors(what: str) -> contextlib.AbstractContextManager[None]:
    """Storage failures as :class:`~posledger.StorageUnavailable` naming ``what``; missing
    tables are not created, since an audit never writes."""
    return storage_errors(what, "no ledger there (an audit never creates tables)")


@contextmanager
def opened(source: Source) -> Iterator[LedgerApplication]:
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
    with audit_storage_errors(settings.description):
        app = LedgerApplication.for_settings(settings)
    try:
        yield app
    finally:
        app.close()


def key_events(source: Source | Iterable[PositionEvent], key: PositionKey | None) -> list[Any]:
    """One key's events, oldest first: read from a store, or picked from the events given
    (then ``key`` may be None: all of them)."""
    if isinstance(source, Ledger):
        if key is None:
            raise InvalidInput("pass the key whose history to read")
        return list(source.history(key))
    if isinstance(source, str | LedgerApplication):
        if key is None:
            raise InvalidInput("pass the key whose history to read")
        with opened(source) as app, audit_storage_errors(app.description):
            return list(app.events.get(key.stream_id))
    events = list(source)
    for event in events:
        if not isinstance(event, PositionEvent):
            raise InvalidInput(f"expected position events, got {type(event).__name__}")
    if key is not None:
        events = [e for e in events if e.originator_id == key.stream_id]
    return events


def log_pages(
    app: LedgerApplication,
    topics: Sequence[str],
    progress: Progress | None,
    page_size: int,
) -> Iterator[Sequence[LogRow]]:
    """The rows with one of ``topics`` up to the log's end as of the call, page by page, as
    stored (see :func:`posledger.store.replay.log_rows`): one page in memory at a time."""
    if page_size < 1:
        raise InvalidInput(f"page_size must be >= 1, got {page_size!r}")
    with audit_storage_errors(app.description):
        top = app.recorder.max_notification_id() or 0
    position = 0
    if progress is not None:
        progress(0, top)
    while position < top:
        with audit_storage_errors(app.description):
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


def notifications(
    app: LedgerApplication,
    topics: Sequence[str],
    progress: Progress | None,
    page_size: int,
) -> Iterator[tuple[Notification, Decoder]]:
    """Every notification of :func:`log_pages`, in order, with the decoder for it."""
    fast = StoredEventDecoder(app.mapper)

    def decode(notification: Notification) -> object:
        return fast(
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            notification.state,
        )

    for page in log_pages(app, topics, progress, page_size):
        for row in page:
            notification = Notification(
                id=row[0],
                originator_id=row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(row[1]),
                originator_version=row[2],
                topic=row[3],
                state=_stored_bytes(row[4]),
            )
            yield notification, decode


def _stored_bytes(state: object) -> bytes:
    """A row's state as bytes. SQLite keeps whatever type was written, so a state rewritten as
    TEXT comes back as ``str``: its UTF-8 bytes, as the ledger's own reads take it."""
    return state.encode("utf-8") if isinstance(state, str) else bytes(state)  # type: ignore[call-overload]
