"""Live updates: one follower of the store's notification log for the whole server, fanned out
to every open page as server-sent events, and the health endpoint.

Any process may write the store (the bot, ``posledger approve``, this server), so the log is
the one place every change shows. The follower reads its last id every ``interval`` seconds
while at least one page listens; when it moved, it reads the new rows' stream ids and tells
each page which keys changed, and the page fetches just those parts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from posledger.core.errors import StorageUnavailable
from posledger.core.events import POSITION_TOPICS
from posledger.ledger import Ledger
from posledger.store.application import storage_errors
from posledger.store.decoding import StoredEventDecoder
from posledger.store.replay import log_rows

log = logging.getLogger(__name__)

CHANGED_KEYS_LIMIT = 1_000
"""More new log rows than this in one poll: every part is refreshed instead of naming keys."""
KEEP_ALIVE_S = 15.0
QUEUE_SIZE = 64


def sse(event: str, data: object) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def log_position(ledger: Ledger) -> int:
    """The id of the store's last log row (0 when empty), or StorageUnavailable."""
    with storage_errors(ledger.settings.description):
        return ledger.application.recorder.max_notification_id() or 0


class LogWatcher:
    """Follows the notification log and tells every subscriber what changed."""

    def __init__(self, ledger: Ledger, interval: float) -> None:
        self.ledger = ledger
        self.interval = interval
        self.position: int | None = None
        """The last log id seen (None until the first successful read)."""
        self.problem: str | None = None
        """Why the store does not answer, while it does not."""
        self._decoder = StoredEventDecoder(ledger.application.mapper)
        self._subscribers: set[asyncio.Queue[str | None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = False

    def subscribe(self) -> asyncio.Queue[str | None]:
        """A queue of events for one page; None in it ends the page's stream."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)
        if self._ended:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(queue)

    def end_streams(self) -> None:
        """End every page's stream (the server is stopping; the pages reconnect to the next
        one). Safe from any thread and from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        self._ended = True
        for queue in self._subscribers:
            while queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    def hello(self) -> str:
        """What a page is told on connecting: where the log is, and whether the store answers."""
        return sse("hello", {"log": self.position, "problem": self.problem})

    async def run(self) -> None:
        """Poll while someone listens (started with the app, cancelled when it stops)."""
        self._loop = asyncio.get_running_loop()
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
            await self.poll()
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        try:
            position, keys = await run_in_threadpool(self._read, self.position)
        except StorageUnavailable as error:
            if self.problem is None:
                log.warning("web view: the store does not answer: %s", error)
                self._publish(sse("store", {"problem": str(error)}))
            self.problem = str(error)
            return
        if self.problem is not None:
            self.problem = None
            self._publish(sse("store", {"problem": None}))
        if position != self.position:  # from None: pages compare it with their own log
            self._publish(sse("changed", {"log": position, "keys": keys}))
        self.position = position

    def _read(self, after: int | None) -> tuple[int, list[str] | None]:
        """The log's last id, and the streams written since ``after`` (None: too many)."""
        position = log_position(self.ledger)
        if after is None:
            return position, None
        if position == after:
            return position, []
        with storage_errors(self.ledger.settings.description):
            rows = log_rows(
                self.ledger.application, after, position, POSITION_TOPICS, CHANGED_KEYS_LIMIT
            )
        if len(rows) == CHANGED_KEYS_LIMIT:
            return position, None
        return position, sorted({str(self._decoder.stream_id(row[1])) for row in rows})

    def _publish(self, message: str) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled page reloads on reconnect
                queue.put_nowait(message)


async def events(request: Request) -> StreamingResponse:
    """``GET /events``: the server-sent event stream a page listens to."""
    watcher: LogWatcher = request.app.state.web.watcher
    queue = watcher.subscribe()

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n" + watcher.hello()
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if message is None:
                    return
                yield message
        finally:
            watcher.unsubscribe(queue)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


def health(request: Request) -> JSONResponse:
    """``GET /health``: 200 with the log position when the store answers, else 503 and why."""
    ledger: Ledger = request.app.state.web.ledger
    try:
        position = log_position(ledger)
    except StorageUnavailable as error:
        return JSONResponse({"status": "unavailable", "reason": str(error)}, status_code=503)
    document = {
        "status": "ok",
        "store": ledger.settings.description,
        "log": position,
        "writable": request.app.state.web.guard.writable,
    }
    return JSONResponse(document)
