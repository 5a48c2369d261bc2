"""What the fake exchanges share: a threaded HTTP server on 127.0.0.1, armed faults that break
its replies in every way a read can fail, the record of what it was asked, and numbers and
times written the way exchanges write them (exact strings, epoch milliseconds).

An exchange's fake (:class:`~posledger.testing.fake_bybit.FakeBybit`,
:class:`~posledger.testing.fake_okx.FakeOkx`) subclasses :class:`FakeHttpServer` and answers
:meth:`FakeHttpServer._answer` by its own rules (signatures, envelopes, routes, error codes);
the faults here break any API, each exchange adds faults in its own envelope.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "COIN_PLACES",
    "EPOCH",
    "NOT_FOUND",
    "DropConnection",
    "FakeHttpServer",
    "Fault",
    "HttpError",
    "NotJson",
    "Number",
    "Received",
    "RecordedRequest",
    "Reply",
    "Row",
    "Slow",
    "TruncatedJson",
    "coin_value",
    "inverse_average",
    "json_reply",
    "to_decimal",
    "to_ms",
    "to_text",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Number = Decimal | str | int
"""A number as a test gives it to a fake: exact, never a float."""

Row = dict[str, Any]
"""One record as the exchange's JSON lists it."""


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (both exchanges' unit for every timestamp)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def to_decimal(value: Number) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise TypeError(f"use Decimal, str or int for exchange numbers, not {value!r}")
    return Decimal(value)


def to_text(value: Decimal) -> str:
    """A number as exchanges send it: a plain decimal string, never an exponent."""
    return format(value, "f")


_WIDE = Context(prec=60)
COIN_PLACES = Decimal("1E-8")
"""Coin amounts and inverse averages as the fakes write them: 8 decimal places."""


def coin_value(qty: Decimal, price: Decimal) -> Decimal:
    """What ``qty`` USD contracts at ``price`` are worth in the coin, to 8 places."""
    return _WIDE.divide(qty, price).quantize(COIN_PLACES) if price else Decimal(0)


def inverse_average(held: Decimal, avg: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """The average entry of an inverse (coin-margined) position of ``held`` contracts at ``avg``
    after ``qty`` more at ``price``: contracts over their coin value, a harmonic mean, as both
    exchanges compute it (Bybit's help centre: total contracts / total contract value in BTC)."""
    coin = _WIDE.add(_WIDE.divide(held, avg) if held else 0, _WIDE.divide(qty, price))
    return _WIDE.divide(held + qty, coin).quantize(COIN_PLACES).normalize()


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received: its path, its decoded query, and whether it was signed."""

    method: str
    path: str
    params: dict[str, str]
    authenticated: bool


@dataclass(frozen=True)
class Received:
    """One request as it reached the server: ``target`` is the path with its query, as sent."""

    method: str
    target: str
    path: str
    query: str
    params: dict[str, str]
    body: bytes
    headers: Message


@dataclass(frozen=True)
class Reply:
    """What the fake sends back, and how: in full, not at all, or cut short mid-body."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drop_connection: bool = False
    send_only: int | None = None


NOT_FOUND = Reply(status=404, body=b"404 page not found", content_type="text/plain")
"""The answer to a route the exchange does not know."""


def json_reply(envelope: Mapping[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(body=json.dumps(envelope, separators=(",", ":")).encode(), headers=headers)


class Fault:
    """An armed failure: it turns the reply the fake would have sent into a broken one."""

    @property
    def delay(self) -> float:
        """Seconds to wait before answering."""
        return 0.0

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply(envelope)


@dataclass(frozen=True)
class HttpError(Fault):
    """A gateway error page, as an exchange's CDN sends while the API is down."""

    status: int = 502
    body: str = "<html><head><title>502 Bad Gateway</title></head><body>502</body></html>"

    def render(self, envelope: dict[str, Any]) -> Reply:
        return Reply(status=self.status, body=self.body.encode(), content_type="text/html")


@dataclass(frozen=True)
class NotJson(Fault):
    """HTTP 200 whose body is not JSON at all (a maintenance page)."""

    body: str = "<html><body>Service maintenance</body></html>"

    def render(self, envelope: dict[str, Any]) -> Reply:
        return Reply(body=self.body.encode(), content_type="text/html")


@dataclass(frozen=True)
class TruncatedJson(Fault):
    """A complete HTTP reply whose JSON text stops half way."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        body = json_reply(envelope).body
        return Reply(body=body[: len(body) // 2])


@dataclass(frozen=True)
class Slow(Fault):
    """The normal reply, after ``seconds``: a client with a shorter timeout gives up first."""

    seconds: float = 1.0

    @property
    def delay(self) -> float:
        return self.seconds


@dataclass(frozen=True)
class DropConnection(Fault):
    """The connection closes with no reply, or (``mid_body``) after half the body was sent."""

    mid_body: bool = False

    def render(self, envelope: dict[str, Any]) -> Reply:
        body = json_reply(envelope).body
        if self.mid_body:
            return Reply(body=body, send_only=len(body) // 2)
        return Reply(drop_connection=True)


@dataclass
class _Armed:
    endpoint: str | None
    fault: Fault
    remaining: int | None
    skip: int


class FakeHttpServer(ABC):
    """A real HTTP server on a thread of its own, answering through :meth:`_answer`; use it as a
    context manager. ``exchange`` names it in errors and in its thread's name; ``clock`` (an
    aware UTC datetime source, the wall clock by default) is the exchange's time."""

    exchange = "HTTP"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._address = (host, port)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._faults: list[_Armed] = []
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    @property
    def url(self) -> str:
        """The base URL a client sends its requests to."""
        if self._server is None:
            raise RuntimeError(
                f"the fake {self.exchange} server is not running; use it as a context manager"
            )
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"fake-{self.exchange.lower()}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None and self._thread is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # faults and observation

    def inject(
        self, endpoint: str | None, fault: Fault, *, times: int | None = 1, after: int = 0
    ) -> None:
        """Arm ``fault`` for the next ``times`` calls of ``endpoint`` (None: any endpoint;
        ``times`` None: until :meth:`clear_faults`), after letting ``after`` calls through."""
        with self._lock:
            self._faults.append(_Armed(endpoint, fault, times, after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Requests received so far, oldest first (only those to ``endpoint`` if given)."""
        with self._lock:
            return [r for r in self._requests if endpoint in (None, r.path)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # serving requests

    @abstractmethod
    def _answer(self, request: Received, fault: Fault | None) -> Reply:
        """The exchange's reply to ``request``, broken by ``fault`` if one is due."""

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_fault(self, path: str) -> Fault | None:
        """The first armed fault due on this call; every call counts towards each ``after``."""
        with self._lock:
            due = None
            for armed in self._faults:
                if armed.endpoint not in (None, path):
                    continue
                if armed.skip:
                    armed.skip -= 1
                elif due is None:
                    due = armed
            if due is None:
                return None
            if due.remaining is not None:
                due.remaining -= 1
                if due.remaining == 0:
                    self._faults.remove(due)
            return due.fault

    def _serve(self, method: str, target: str, body: bytes, headers: Message) -> Reply:
        split = urlsplit(target)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        fault = self._take_fault(split.path)
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
        request = Received(method, target, split.path, split.query, params, body, headers)
        return self._answer(request, fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeHttpServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout) leaves a broken pipe behind; anything else is a bug
        in the fake and is printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :meth:`FakeHttpServer.requests` instead."""

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.fake._serve(method, self.path, body, self.headers)
        if reply.drop_connection:
            self._hang_up()
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.send_only is None:
            self.wfile.write(reply.body)
            return
        self.wfile.write(reply.body[: reply.send_only])
        self.wfile.flush()
        self._hang_up()

    def _hang_up(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
