"""The fake Bybit's HTTP side: it checks signatures, routes each request to the account's book
and answers in Bybit's envelope, one page at a time."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import datetime
from email.message import Message
from typing import Any

from posledger.testing.fake_bybit.account import BybitAccount
from posledger.testing.fake_bybit.params import (
    ApiError,
    category_of,
    order_matches,
    page,
    settle_filter,
    window,
)
from posledger.testing.fake_bybit.records import (
    FakeInstrument,
    FakeOrder,
    coins_of,
    settle_coin_of,
)
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

POSITIONS = "/v5/position/list"
OPEN_ORDERS = "/v5/order/realtime"
ORDER_HISTORY = "/v5/order/history"
EXECUTIONS = "/v5/execution/list"
SERVER_TIME = "/v5/market/time"
INSTRUMENTS = "/v5/market/instruments-info"
COIN_INFO = "/v5/asset/coin/query-info"
CLOSED_PNL = "/v5/position/closed-pnl"
DOCUMENTED_STATUS_FILTERS = ("Trading", "PreLaunch")
"""The ``status`` filters instruments-info documents for linear and inverse."""
PUBLIC_ENDPOINTS = (SERVER_TIME, INSTRUMENTS)
"""Answered without a signature, like Bybit's market endpoints."""


class FakeBybit(BybitAccount, FakeHttpServer):
    """A scripted Bybit V5 account behind a real HTTP server; use it as a context manager.

    ``clock`` (an aware UTC datetime source) stamps scripted events and the replies' ``time``;
    signatures are checked against the real wall clock, like Bybit does. ``page_size`` caps
    every page, so paging is exercised with a handful of rows. ``unsorted_ties`` lists the
    executions of one millisecond against their ``seq``, as Bybit warns its list may ("Response
    items will have sorting issues when 'execTime' is the same", Get Trade History).
    ``realtime_keeps_closed`` False makes ``/v5/order/realtime`` forget closed orders, as Bybit's
    does after a server release or restart ("filled, cancelled, and rejected orders of Unified
    account should only be queried through order history", Get Open & Closed Orders).
    ``refuse_undocumented_statuses`` answers instruments-info with retCode 10001 for a
    ``status`` filter it does not document (``Delivering``, ``Closed``; Bybit's own answer to
    them is not known).
    """

    exchange = "Bybit"

    def __init__(
        self,
        *,
        api_key: str = "fake-api-key",
        api_secret: str = "fake-api-secret",
        clock: Callable[[], datetime] | None = None,
        page_size: int | None = None,
        unsorted_ties: bool = False,
        refuse_undocumented_statuses: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        FakeHttpServer.__init__(self, host=host, port=port, clock=clock)
        BybitAccount.__init__(self)
        self.api_key = api_key
        self.api_secret = api_secret
        self.page_size = page_size
        self.unsorted_ties = unsorted_ties
        self.realtime_keeps_closed = True
        self.refuse_undocumented_statuses = refuse_undocumented_statuses

    # clients

    def session(self, **options: Any) -> Any:
        """A real ``pybit.unified_trading.HTTP`` signed with this fake's keys and pointed at it.

        pybit pauses 3 s before each retry by default; here it retries at once unless
        ``options`` (any HTTP argument: max_retries, retry_codes, timeout ...) say otherwise."""
        from pybit.unified_trading import HTTP  # type: ignore[import-untyped]

        settings: dict[str, Any] = {
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "testnet": False,
            "max_retries": 2,
            "retry_delay": 0,
            "timeout": 2,
        }
        http = HTTP(**{**settings, **options})
        http.endpoint = self.url
        return http

    def ccxt_config(self, **config: Any) -> dict[str, Any]:
        """Settings that point a ``ccxt.bybit`` (or ``ccxt.async_support.bybit``) at this fake,
        signed with its keys: ``ccxt.bybit(fake.ccxt_config(timeout=2000))``. ``config`` adds
        to or overrides them."""
        hosts = ("spot", "futures", "v2", "public", "private")
        settings = {
            "apiKey": self.api_key,
            "secret": self.api_secret,
            "urls": {"api": dict.fromkeys(hosts, self.url)},
        }
        return {**settings, **config}

    # serving requests

    def _answer(self, request: Received, fault: Fault | None) -> Reply:
        post = request.method == "POST"
        payload = request.body.decode("utf-8", "replace") if post else request.query
        envelope = self._envelope_for(
            request.method, request.path, request.params, payload, request.headers
        )
        if envelope is None:
            return NOT_FOUND
        return json_reply(envelope) if fault is None else fault.render(envelope)

    def _envelope_for(
        self, method: str, path: str, params: dict[str, str], payload: str, headers: Message
    ) -> Row | None:
        """The answer to one request; None for a route Bybit would not know (HTTP 404)."""
        routes: dict[str, Callable[[dict[str, str]], Row]] = {
            POSITIONS: self._positions,
            OPEN_ORDERS: self._open_orders,
            ORDER_HISTORY: self._order_history,
            EXECUTIONS: self._executions,
            INSTRUMENTS: self._instruments,
            COIN_INFO: self._coin_info,
            CLOSED_PNL: self._closed_pnl,
        }
        public = path in PUBLIC_ENDPOINTS
        try:
            if not public:
                self._authenticate(payload, headers)
        except ApiError as error:
            self._record(RecordedRequest(method, path, params, authenticated=False))
            return self._envelope(error.code, error.message, {})
        self._record(RecordedRequest(method, path, params, authenticated=not public))
        if path == SERVER_TIME:
            return self._envelope(0, "OK", self._server_time())
        route = routes.get(path)
        if route is None or method != "GET":
            return None
        try:
            with self._lock:
                return self._envelope(0, "OK", route(params))
        except ApiError as error:
            return self._envelope(error.code, error.message, {})

    def _envelope(self, code: int, message: str, result: Row) -> Row:
        return {
            "retCode": code,
            "retMsg": message,
            "result": result,
            "retExtInfo": {},
            "time": to_ms(self._clock()),
        }

    def _authenticate(self, payload: str, headers: Message) -> None:
        """Bybit V5 HMAC: hex HMAC-SHA256(secret, timestamp + key + recv_window + payload)."""
        key = headers.get("X-BAPI-API-KEY")
        if key != self.api_key:
            raise ApiError(10003, "API key is invalid.")
        stamp = headers.get("X-BAPI-TIMESTAMP", "")
        recv_window = headers.get("X-BAPI-RECV-WINDOW", "5000")
        now = int(time.time() * 1000)
        if not (stamp.isdigit() and recv_window.isdigit()) or not (
            now - int(recv_window) <= int(stamp) < now + 1000
        ):
            raise ApiError(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{stamp}],server_timestamp[{now}],recv_window[{recv_window}]",
            )
        origin = f"{stamp}{key}{recv_window}{payload}"
        expected = hmac.new(self.api_secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("X-BAPI-SIGN", "")):
            raise ApiError(10004, f"error sign! origin_string[{origin}]")

    def _server_time(self) -> Row:
        now = self._clock()
        nanos = to_ms(now) * 1_000_000
        return {"timeSecond": str(nanos // 1_000_000_000), "timeNano": str(nanos)}

    def _positions(self, params: dict[str, str]) -> Row:
        category = category_of(params)
        symbol, settle = params.get("symbol"), settle_filter(category, params)
        if category == "linear" and not (symbol or settle):
            raise ApiError(
                10001, "Missing some parameters that must be filled in, symbol or settleCoin"
            )
        if symbol:
            legs = (1, 2) if (category, symbol) in self._book.hedged else (0,)
            rows = [self._leg(category, symbol, idx) for idx in legs]
        else:
            rows = sorted(
                (
                    p
                    for p in self._book.positions.values()
                    if p.category == category and p.size and settle in (None, p.settle_coin)
                ),
                key=lambda p: (p.symbol, p.idx),
            )
        return page(
            category,
            [p.row() for p in rows],
            params,
            default=20,
            maximum=200,
            page_size=self.page_size,
        )

    def _open_orders(self, params: dict[str, str]) -> Row:
        """Open orders; by ``orderId`` (which takes priority over the other filters) a closed
        one too, unless forgotten. Linear needs ``symbol``, ``baseCoin`` or ``settleCoin``, even
        with ``orderId`` ("For linear, either symbol, baseCoin, settleCoin is required")."""
        category = category_of(params)
        order_id = params.get("orderId")
        filters = ("symbol", "baseCoin", "settleCoin")
        if category == "linear" and not any(params.get(f) for f in filters):
            raise ApiError(
                10001,
                "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin",
            )
        orders = [
            o
            for o in self._book.orders.values()
            if o.category == category
            and (
                o.order_id == order_id and (o.is_open or self.realtime_keeps_closed)
                if order_id
                else o.is_open and order_matches(o, params)
            )
        ]
        return self._orders_page(category, orders, params)

    def _order_history(self, params: dict[str, str]) -> Row:
        """Closed orders only (Bybit's unified account) created in the window, by ``orderId``
        too: without ``startTime``/``endTime`` the last seven days ("startTime and endTime are
        not passed, return 7 days by default", Get Order History)."""
        category = category_of(params)
        order_id = params.get("orderId")
        start, end = window(params, to_ms(self._clock()))
        orders = [
            o
            for o in self._book.orders.values()
            if o.category == category
            and not o.is_open
            and start <= o.created_ms <= end
            and (o.order_id == order_id if order_id else order_matches(o, params))
        ]
        return self._orders_page(category, orders, params)

    def _orders_page(self, category: str, orders: list[FakeOrder], params: dict[str, str]) -> Row:
        """Orders newest first, paged as Bybit pages them (20 by default, at most 50)."""
        orders.sort(key=lambda o: (o.created_ms, o.order_id), reverse=True)
        return page(
            category,
            [o.row() for o in orders],
            params,
            default=20,
            maximum=50,
            page_size=self.page_size,
        )

    def _executions(self, params: dict[str, str]) -> Row:
        """Newest first (by ``seq`` within a millisecond, unless ``unsorted_ties``), within a
        window of at most seven days, like Bybit."""
        category = category_of(params)
        start, end = window(params, to_ms(self._clock()))
        wanted = {
            "symbol": params.get("symbol"),
            "order_id": params.get("orderId"),
            "exec_type": params.get("execType"),
        }
        executions = [
            e
            for e in self._book.executions
            if e.category == category
            and start <= e.exec_ms <= end
            and all(value in (None, getattr(e, name)) for name, value in wanted.items())
        ]
        tie = -1 if self.unsorted_ties else 1
        executions.sort(key=lambda e: (e.exec_ms, tie * e.seq), reverse=True)
        return page(
            category,
            [e.row() for e in executions],
            params,
            default=50,
            maximum=100,
            page_size=self.page_size,
        )

    def _closed_pnl(self, params: dict[str, str]) -> Row:
        """The book's closed-pnl records created in a window of at most seven days, newest
        first, paged as Bybit pages them (50 by default, at most 100)."""
        category = category_of(params)
        start, end = window(params, to_ms(self._clock()))
        records = [
            r
            for r in self._book.closed_pnl
            if r.category == category
            and start <= r.created_ms <= end
            and params.get("symbol") in (None, r.symbol)
        ]
        records.sort(key=lambda r: r.created_ms, reverse=True)
        return page(
            category,
            [r.row() for r in records],
            params,
            default=50,
            maximum=100,
            page_size=self.page_size,
        )

    def _instruments(self, params: dict[str, str]) -> Row:
        """Listed symbols of a category, by symbol; a symbol the book names is listed too."""
        category = category_of(params)
        named = {(p.category, p.symbol) for p in self._book.positions.values()}
        named |= {(o.category, o.symbol) for o in self._book.orders.values()}
        named |= {(e.category, e.symbol) for e in self._book.executions}
        named |= {(r.category, r.symbol) for r in self._book.closed_pnl}
        instruments = dict(self._book.instruments)
        for leg_category, symbol in named - instruments.keys():
            settle = settle_coin_of(leg_category, symbol)
            try:
                base, quote = coins_of(leg_category, symbol)
            except ValueError:  # a name that tells no coins still settles somewhere
                base, quote = symbol, settle
            instruments[(leg_category, symbol)] = FakeInstrument(
                leg_category, symbol, base, quote, settle
            )
        status = params.get("status") or "Trading"
        if self.refuse_undocumented_statuses and status not in DOCUMENTED_STATUS_FILTERS:
            raise ApiError(10001, f"params error: status {status!r} invalid")
        listed = sorted(
            (
                i
                for i in instruments.values()
                if i.category == category
                and i.status == status
                and params.get("symbol") in (None, i.symbol)
                and params.get("baseCoin") in (None, i.base)
            ),
            key=lambda i: i.symbol,
        )
        return page(
            category,
            [i.row() for i in listed],
            params,
            default=500,
            maximum=1000,
            page_size=self.page_size,
        )

    def _coin_info(self, params: dict[str, str]) -> Row:
        """/v5/asset/coin/query-info: the coins the listed instruments use (ccxt reads it while
        loading markets when keys are set); no chains."""
        coins = {c for i in self._book.instruments.values() for c in (i.base, i.quote)}
        rows = [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in sorted(coins)]
        return {"rows": rows}
