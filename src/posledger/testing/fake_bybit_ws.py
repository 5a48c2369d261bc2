"""The private WebSocket of a :class:`~posledger.testing.fake_bybit.FakeBybit`, on 127.0.0.1.

Real pybit connects to it (``fake_ws.websocket(...)`` builds a ``pybit.unified_trading.WebSocket``
pointed at it), authenticates like on Bybit (``op: auth`` with ``[api_key, expires, signature]``,
the signature being hex HMAC-SHA256(secret, "GET/realtime" + expires), refused once expired),
answers ``op: ping`` with a pong, and after ``op: subscribe`` pushes the book's changes in Bybit's
V5 shapes (``{"id", "topic", "creationTime", "data": [row]}``, rows as the REST fake lists them
plus ``category``, and ``entryPrice`` for positions)::

    with FakeBybit() as fake, FakeBybitWebSocket(fake) as fake_ws:
        ws = fake_ws.websocket(ping_interval=2, ping_timeout=1)
        ws.execution_stream(print)
        fake_ws.drop(1, topic="execution")      # the next execution message is lost
        with fake_ws.outage():                  # every client cut off; reconnects wait
            fake.partial_fill(order_id, "1000")  # pushed to nobody

Faults: lost messages (:meth:`drop`), cut connections (:meth:`disconnect`, :meth:`outage`), a
connection that goes quiet and stops answering pings (:meth:`silence`), refused logins
(:meth:`refuse_auth`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from posledger.testing.fake_bybit import FakeBybit, FakeExecution, FakeOrder, FakePosition

PATH = "/v5/private"
TOPICS = ("position", "execution", "order", "wallet")
"""Private topics the fake knows; each also as ``topic.category`` (``position.linear``)."""

T = TypeVar("T")
Record = FakePosition | FakeOrder | FakeExecution


def websocket_row(record: Record) -> dict[str, Any]:
    """A record as the private stream pushes it: the REST row plus its ``category`` (the position
    stream calls the average price ``entryPrice``)."""
    row = {"category": record.category, **record.row()}
    if isinstance(record, FakePosition):
        row["entryPrice"] = row.pop("avgPrice")
    return row


@dataclass
class _Client:
    connection: ServerConnection
    conn_id: str
    authenticated: bool = False
    silent: bool = False
    topics: set[str] = field(default_factory=set)
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def wants(self, topic: str, category: str) -> bool:
        return topic in self.topics or f"{topic}.{category}" in self.topics


@dataclass
class _Drop:
    topic: str | None
    remaining: int


class FakeBybitWebSocket:
    """Bybit's private stream for one FakeBybit account; use it as a context manager."""

    def __init__(self, fake: FakeBybit, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self._address = (host, port)
        self._state = threading.Condition()
        self._clients: list[_Client] = []
        self._drops: list[_Drop] = []
        self._refusals = 0
        self._conn_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self.accepted = 0
        """Connections accepted so far."""
        self.logins = 0
        """Successful ``op: auth`` so far."""
        self.pushed: list[dict[str, Any]] = []
        """Every message the book produced, dropped ones included, oldest first."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._open: asyncio.Event | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake WebSocket is not running; use it as a context manager")
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}{PATH}"

    def start(self) -> FakeBybitWebSocket:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="fake-bybit-ws", daemon=True
            )
            self._loop = loop
            self._thread.start()
            self._server = self._call(self._listen())
            self._unsubscribe = self.fake.subscribe(self._on_change)
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._call(self._shut_down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> FakeBybitWebSocket:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def websocket(
        self, callback_function: Callable[[Any], None] | None = None, **options: Any
    ) -> Any:
        """A real ``pybit.unified_trading.WebSocket`` (private channel) signed with the fake's
        keys and connected to this server; ``options`` are pybit's (ping_interval, retries ...)."""
        settings: dict[str, Any] = {
            "channel_type": "private",
            "api_key": self.fake.api_key,
            "api_secret": self.fake.api_secret,
            "testnet": False,
        }
        if callback_function is not None:
            settings["callback_function"] = callback_function
        return _pointed_websocket_class()(self.url, **{**settings, **options})

    # faults and observation

    def drop(self, count: int = 1, *, topic: str | None = None) -> None:
        """Lose the next ``count`` messages (of ``topic``, or of any topic), for every client."""
        with self._state:
            self._drops.append(_Drop(topic, count))

    def disconnect(self, *, clean: bool = False) -> None:
        """Cut every connection: a reset (``clean`` False) or a close frame. Returns once cut."""
        self._call(self._cut(clean))

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Cut every connection; new ones are accepted but not answered (nor pushed to) until the
        block ends, so whatever the book does inside it reaches no client."""
        assert self._open is not None
        self._call(self._set_open(False))
        self._call(self._cut(False))
        try:
            yield
        finally:
            self._call(self._set_open(True))

    def silence(self) -> None:
        """The current connections go quiet: nothing read (pings unanswered), nothing pushed."""
        self._call(self._silence())

    def refuse_auth(self, count: int = 1) -> None:
        """Answer the next ``count`` logins with a failure, whatever their signature."""
        with self._state:
            self._refusals += count

    def subscribers(self, topic: str = "execution") -> int:
        """Connections logged in and subscribed to ``topic``, that are not silenced."""
        with self._state:
            return sum(
                1 for c in self._clients if c.authenticated and not c.silent and topic in c.topics
            )

    def wait_for(
        self, predicate: Callable[[FakeBybitWebSocket], bool], timeout: float = 10
    ) -> bool:
        """Wait until ``predicate(self)`` holds (re-checked on every connection change)."""
        with self._state:
            return self._state.wait_for(lambda: predicate(self), timeout)

    # the server

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _listen(self) -> Server:
        self._open = asyncio.Event()
        self._open.set()
        host, port = self._address
        return await serve(self._serve, host, port, ping_interval=None, close_timeout=1)

    async def _shut_down(self) -> None:
        with self._state:
            clients = list(self._clients)
        for client in clients:
            client.connection.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _set_open(self, is_open: bool) -> None:
        assert self._open is not None
        if is_open:
            self._open.set()
        else:
            self._open.clear()

    async def _cut(self, clean: bool) -> None:
        with self._state:
            clients = list(self._clients)
        for client in clients:
            if clean:
                with suppress(ConnectionClosed):
                    await client.connection.close(1000, "server closes the connection")
            else:
                client.connection.transport.abort()

    async def _silence(self) -> None:
        with self._state:
            for client in self._clients:
                client.silent = True
                client.connection.transport.pause_reading()
            self._state.notify_all()

    async def _serve(self, connection: ServerConnection) -> None:
        client = _Client(connection, conn_id=f"fake-conn-{next(self._conn_ids)}")
        with self._state:
            if connection.request is None or connection.request.path != PATH:
                return
            self._clients.append(client)
            self.accepted += 1
            self._state.notify_all()
        writer = asyncio.create_task(_write(client))
        try:
            assert self._open is not None
            await self._open.wait()
            async for message in connection:
                reply = self._answer(client, message)
                if not client.silent:
                    client.outbox.put_nowait(json.dumps(reply, separators=(",", ":")))
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with self._state:
                self._clients.remove(client)
                self._state.notify_all()

    def _answer(self, client: _Client, message: str | bytes) -> dict[str, Any]:
        try:
            request = json.loads(message)
            op, args = request.get("op"), request.get("args") or []
        except (ValueError, AttributeError):
            return {"success": False, "ret_msg": "error:invalid request", "conn_id": client.conn_id}
        base = {"req_id": request.get("req_id", ""), "conn_id": client.conn_id}
        if op == "ping":
            return {**base, "op": "pong", "args": [str(int(time.time() * 1000))]}
        if op == "auth":
            problem = self._login_problem(args)
            with self._state:
                client.authenticated = problem is None
                self.logins += problem is None
                self._state.notify_all()
            return {**base, "success": problem is None, "ret_msg": problem or "", "op": "auth"}
        if op in ("subscribe", "unsubscribe"):
            problem = self._subscription_problem(client, args)
            if problem is None:
                with self._state:
                    if op == "subscribe":
                        client.topics.update(args)
                    else:
                        client.topics.difference_update(args)
                    self._state.notify_all()
            return {**base, "success": problem is None, "ret_msg": problem or "", "op": op}
        return {**base, "success": False, "ret_msg": f"error:unknown op {op!r}", "op": op}

    def _login_problem(self, args: list[Any]) -> str | None:
        """Bybit's checks of ``op: auth``; the failure texts are the fake's own."""
        with self._state:
            if self._refusals:
                self._refusals -= 1
                return "error:refused by the fake"
        if len(args) != 3 or not isinstance(args[1], int):
            return "error:params error"
        key, expires, signature = args
        if key != self.fake.api_key:
            return "error:API key is invalid"
        if expires <= int(time.time() * 1000):
            return "error:request expired"
        secret = self.fake.api_secret.encode()
        expected = hmac.new(secret, f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
        if not isinstance(signature, str) or not hmac.compare_digest(expected, signature):
            return "error:signature verification failed"
        return None

    def _subscription_problem(self, client: _Client, args: list[Any]) -> str | None:
        if not client.authenticated:
            return "Request not authorized"
        for topic in args:
            if not isinstance(topic, str) or topic.split(".", 1)[0] not in TOPICS:
                return f"error:handler not found,topic:{topic}"
        return None

    def _on_change(self, topic: str, record: Record) -> None:
        """The book changed (called under its lock): make the message now, send it soon."""
        loop = self._loop
        if loop is None:
            return
        stamp = record.exec_ms if isinstance(record, FakeExecution) else record.updated_ms
        self.push(topic, [websocket_row(record)], category=record.category, stamp=stamp)

    def push(
        self, topic: str, data: list[Any], *, category: str = "linear", stamp: int = 0
    ) -> None:
        """Push one message of ``topic`` with these rows, whatever they hold (a malformed row,
        an unknown ``execType``), to the clients subscribed to it; armed drops apply."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the fake WebSocket is not running")
        message = {
            "id": f"fake-{next(self._message_ids)}",
            "topic": topic,
            "creationTime": stamp,
            "data": data,
        }
        with self._state:
            self.pushed.append(message)
            drop = next((d for d in self._drops if d.topic in (None, topic)), None)
            if drop is not None:
                drop.remaining -= 1
                if not drop.remaining:
                    self._drops.remove(drop)
                return
        loop.call_soon_threadsafe(self._broadcast, topic, category, message)

    def _broadcast(self, topic: str, category: str, message: dict[str, Any]) -> None:
        assert self._open is not None
        if not self._open.is_set():
            return
        with self._state:
            receivers = [
                c
                for c in self._clients
                if c.authenticated and not c.silent and c.wants(topic, category)
            ]
        for client in receivers:
            sent = {**message, "topic": topic if topic in client.topics else f"{topic}.{category}"}
            client.outbox.put_nowait(json.dumps(sent, separators=(",", ":")))


async def _write(client: _Client) -> None:
    """One writer per connection, so replies and pushes leave in the order they were made."""
    with suppress(ConnectionClosed):
        while True:
            await client.connection.send(await client.outbox.get())


_POINTED: list[type] = []


def _pointed_websocket_class() -> type:
    """pybit's private ``WebSocket`` with its URL replaced (pybit only builds ``wss://`` URLs of
    Bybit's hosts; every connection, reconnects included, goes through ``_connect``)."""
    if not _POINTED:
        from pybit.unified_trading import WebSocket  # type: ignore[import-untyped]

        class PointedWebSocket(WebSocket):  # type: ignore[misc]
            def __init__(self, url: str, **options: Any) -> None:
                self.fake_url = url
                super().__init__(**options)

            def _connect(self, url: str) -> None:
                super()._connect(self.fake_url)

        _POINTED.append(PointedWebSocket)
    return _POINTED[0]
