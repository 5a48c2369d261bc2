"""The fake OKX's HTTP side: it checks signatures and passphrase, routes each request to the
account's book and answers in OKX's envelope, paged by ``after``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import Any

from posledger.testing.fake_http import (
    NOT_FOUND,
    FakeHttpServer,
    Fault,
    Received,
    RecordedRequest,
    Reply,
    Row,
    json_reply,
    to_ms,
)
from posledger.testing.fake_okx.account import OkxAccount
from posledger.testing.fake_okx.faults import IgnoredAfter
from posledger.testing.fake_okx.records import INST_TYPES

POSITIONS = "/api/v5/account/positions"
OPEN_ORDERS = "/api/v5/trade/orders-pending"
FILLS = "/api/v5/trade/fills-history"
INSTRUMENTS = "/api/v5/public/instruments"
SERVER_TIME = "/api/v5/public/time"
CURRENCIES = "/api/v5/asset/currencies"
POSITIONS_HISTORY = "/api/v5/account/positions-history"
PUBLIC_ENDPOINTS = (INSTRUMENTS, SERVER_TIME)

FILLS_SPAN = timedelta(days=90)
"""fills-history serves the last three months."""

HISTORY_SPAN = timedelta(days=90)
"""positions-history serves the positions updated in the last three months."""


class _ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class FakeOkx(OkxAccount, FakeHttpServer):
    """A scripted OKX V5 account behind a real HTTP server; use it as a context manager.

    ``clock`` stamps scripted events and decides what fills-history still serves; signatures
    are checked against the real wall clock. ``page_size`` caps every paged reply.
    """

    exchange = "OKX"

    def __init__(
        self,
        *,
        api_key: str = "fake-okx-key",
        api_secret: str = "fake-okx-secret",
        passphrase: str = "fake-okx-passphrase",
        clock: Callable[[], datetime] | None = None,
        page_size: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        FakeHttpServer.__init__(self, host=host, port=port, clock=clock)
        OkxAccount.__init__(self)
        self.api_key = api_key
        self.api_secret = api_secret
        self.passphrase = passphrase
        self.page_size = page_size

    # clients

    def ccxt_config(self, **config: Any) -> dict[str, Any]:
        """Settings that point a ``ccxt.okx`` (or ``ccxt.async_support.okx``) at this fake,
        signed with its keys and passphrase; ``config`` adds to or overrides them."""
        settings = {
            "apiKey": self.api_key,
            "secret": self.api_secret,
            "password": self.passphrase,
            "urls": {"api": {"rest": self.url}},
        }
        return {**settings, **config}

    # serving requests

    def _answer(self, request: Received, fault: Fault | None) -> Reply:
        params = request.params
        if isinstance(fault, IgnoredAfter):
            params = {k: v for k, v in params.items() if k != "after"}
        method, path = request.method, request.path
        public = path in PUBLIC_ENDPOINTS
        try:
            if not public:
                self._authenticate(method, request.target, request.body, request.headers)
        except _ApiError as error:
            self._record(RecordedRequest(method, path, params, authenticated=False))
            failed = {"code": error.code, "msg": error.message, "data": []}
            return replace(json_reply(failed), status=error.status)
        self._record(RecordedRequest(method, path, params, authenticated=not public))
        route = self._routes().get(path)
        if route is None or method != "GET":
            return NOT_FOUND
        try:
            with self._lock:
                envelope = {"code": "0", "msg": "", "data": route(params)}
        except _ApiError as error:
            envelope = {"code": error.code, "msg": error.message, "data": []}
        return json_reply(envelope) if fault is None else fault.render(envelope)

    def _routes(self) -> Mapping[str, Callable[[dict[str, str]], list[Row]]]:
        return {
            POSITIONS: self._positions,
            OPEN_ORDERS: self._open_orders,
            FILLS: self._fills,
            INSTRUMENTS: self._instruments,
            SERVER_TIME: lambda params: [{"ts": str(to_ms(self._clock()))}],
            CURRENCIES: self._currencies,
            POSITIONS_HISTORY: self._positions_history,
        }

    def _authenticate(self, method: str, target: str, body: bytes, headers: Message) -> None:
        """OKX V5: base64 HMAC-SHA256(secret, timestamp + method + path?query + body), an ISO
        timestamp within 30 s of the server's clock, and the key's passphrase."""
        if not headers.get("OK-ACCESS-KEY"):
            raise _ApiError("50103", "Request header OK-ACCESS-KEY cannot be empty.", 401)
        if headers.get("OK-ACCESS-KEY") != self.api_key:
            raise _ApiError("50111", "Invalid OK-ACCESS-KEY.", 401)
        if headers.get("OK-ACCESS-PASSPHRASE") != self.passphrase:
            raise _ApiError("50105", "Invalid OK-ACCESS-PASSPHRASE.", 401)
        stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
        try:
            sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise _ApiError("50112", "Invalid OK-ACCESS-TIMESTAMP.", 401) from None
        if abs(datetime.now(UTC) - sent) > timedelta(seconds=30):
            raise _ApiError("50102", "Timestamp request expired.", 401)
        origin = f"{stamp}{method}{target}".encode() + body
        digest = hmac.new(self.api_secret.encode(), origin, hashlib.sha256).digest()
        expected = base64.b64encode(digest).decode()
        if not hmac.compare_digest(expected, headers.get("OK-ACCESS-SIGN", "")):
            raise _ApiError("50113", "Invalid Sign.", 401)

    def _positions(self, params: dict[str, str]) -> list[Row]:
        """Every position of the type (or of up to ten instId): one reply, no paging, newest
        first."""
        inst_type = params.get("instType")
        if inst_type is not None and inst_type not in INST_TYPES:
            raise _ApiError("51000", "Parameter instType error")
        wanted = params["instId"].split(",") if params.get("instId") else None
        if wanted is not None and len(wanted) > 10:
            raise _ApiError("51000", "Parameter instId error")
        rows = [
            p
            for p in self._book.positions.values()
            if inst_type in (None, p.inst_type) and (wanted is None or p.inst_id in wanted)
        ]
        rows.sort(key=lambda p: (p.c_ms, p.pos_id), reverse=True)
        return [p.row() for p in rows]

    def _open_orders(self, params: dict[str, str]) -> list[Row]:
        """Pending orders, newest ordId first, paged by ``after`` (ordId)."""
        orders = [
            o
            for o in self._book.orders.values()
            if o.is_open
            and params.get("instType") in (None, o.inst_type)
            and params.get("instId") in (None, o.inst_id)
        ]
        return self._page([(int(o.ord_id), o.row()) for o in orders], params)

    def _fills(self, params: dict[str, str]) -> list[Row]:
        """Fills of the last three months, newest billId first, paged by ``after`` (billId),
        filtered by ``begin``/``end`` (ms, inclusive)."""
        inst_type = params.get("instType")
        if inst_type not in INST_TYPES:
            raise _ApiError("51000", "Parameter instType error")
        oldest = to_ms(self._clock() - FILLS_SPAN)
        begin, end = _int(params, "begin"), _int(params, "end")
        fills = [
            f
            for f in self._book.fills
            if f.inst_type == inst_type
            and f.ts >= oldest
            and params.get("instId") in (None, f.inst_id)
            and (begin is None or f.ts >= begin)
            and (end is None or f.ts <= end)
        ]
        return self._page([(int(f.bill_id), f.row()) for f in fills], params)

    def _positions_history(self, params: dict[str, str]) -> list[Row]:
        """The money records of positions updated in the last three months, newest ``uTime``
        first, paged by ``after`` / ``before`` (ms, strictly earlier / later), 100 a page."""
        inst_type = params.get("instType")
        if inst_type is not None and inst_type not in INST_TYPES:
            raise _ApiError("51000", "Parameter instType error")
        limit = _int(params, "limit") or 100
        if not 1 <= limit <= 100:
            raise _ApiError("51000", "Parameter limit error")
        oldest = to_ms(self._clock() - HISTORY_SPAN)
        after, before = _int(params, "after"), _int(params, "before")
        listed = [
            h
            for h in self.position_histories()
            if inst_type in (None, h.inst_type)
            and params.get("instId") in (None, h.inst_id)
            and h.u_ms >= oldest
            and (after is None or h.u_ms < after)
            and (before is None or h.u_ms > before)
        ]
        listed.sort(key=lambda h: h.u_ms, reverse=True)
        return [h.row() for h in listed[: min(limit, self.page_size or limit)]]

    def _instruments(self, params: dict[str, str]) -> list[Row]:
        """Listed instruments of a type; every instrument the book names is listed."""
        inst_type = params.get("instType")
        if inst_type not in INST_TYPES:
            raise _ApiError("51000", "Parameter instType error")
        return [
            i.row()
            for i in sorted(self._book.instruments.values(), key=lambda i: i.inst_id)
            if i.inst_type == inst_type and params.get("instId") in (None, i.inst_id)
        ]

    def _currencies(self, params: dict[str, str]) -> list[Row]:
        """asset/currencies (ccxt reads it while loading markets when keys are set)."""
        coins = {c for i in self._book.instruments.values() for c in i.underlying.split("-")}
        return [
            {"ccy": c, "name": c, "chain": f"{c}-{c}", "canDep": True, "canWd": True,
             "minWd": "0", "maxWd": "0", "fee": "0", "wdTickSz": "8"}
            for c in sorted(coins)
        ]  # fmt: skip

    def _page(self, rows: list[tuple[int, Row]], params: dict[str, str]) -> list[Row]:
        limit = _int(params, "limit") or 100
        if not 1 <= limit <= 100:
            raise _ApiError("51000", "Parameter limit error")
        after = _int(params, "after")
        ordered = sorted((r for r in rows if after is None or r[0] < after), reverse=True)
        return [row for _, row in ordered[: min(limit, self.page_size or limit)]]


def _int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name) or ""
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        raise _ApiError("51000", f"Parameter {name} error")
    return int(value)
