"""A fake Bybit V5 REST server on 127.0.0.1, for tests that drive a real pybit session.

It checks HMAC signatures the way Bybit does, answers in Bybit's shapes (numbers as strings,
``retCode``/``retMsg``/``result``/``retExtInfo``/``time``, ``nextPageCursor`` paging), and keeps
an in-memory exchange that a test scripts: positions (one-way and hedge legs), open orders,
order history and executions. Faults can be armed per endpoint, so a test can prove that every
way a read can fail is told apart from "no position"::

    from pybit.unified_trading import HTTP
    from posledger.testing.fake_bybit import POSITIONS, FakeBybit, HttpError

    with FakeBybit() as fake:
        session = HTTP(api_key=fake.api_key, api_secret=fake.api_secret, testnet=False)
        session.endpoint = fake.url                     # or: session = fake.session()
        fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
        fake.inject(POSITIONS, HttpError(502))          # the next position read gets a 502

ccxt works against it too (``ccxt.bybit`` and ``ccxt.async_support.bybit``): it also answers
what ``load_markets`` reads, instruments-info (every category and status, paged; every symbol
the book names is listed, with its settle coin) and the coin list::

    exchange = ccxt.bybit(fake.ccxt_config())           # keys, and urls["api"] -> the fake
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import Message
from typing import Any

from posledger.testing.fake_http import (
    EPOCH,
    NOT_FOUND,
    DropConnection,
    FakeHttpServer,
    Fault,
    HttpError,
    NotJson,
    Number,
    Received,
    RecordedRequest,
    Reply,
    Row,
    Slow,
    TruncatedJson,
    json_reply,
    to_decimal,
    to_ms,
    to_text,
)

__all__ = [
    "CATEGORIES",
    "COIN_INFO",
    "EXECUTIONS",
    "INSTRUMENTS",
    "OPEN_ORDERS",
    "OPEN_STATUSES",
    "ORDER_HISTORY",
    "POSITIONS",
    "PUBLIC_ENDPOINTS",
    "SERVER_TIME",
    "WEEK_MS",
    "DropConnection",
    "FakeBybit",
    "FakeExecution",
    "FakeInstrument",
    "FakeOrder",
    "FakePosition",
    "Fault",
    "HttpError",
    "Listener",
    "NoList",
    "NoRetCode",
    "NotJson",
    "Number",
    "RecordedRequest",
    "Reply",
    "RetCode",
    "Row",
    "RowField",
    "Slow",
    "StuckCursor",
    "TruncatedJson",
    "json_reply",
    "to_ms",
]

POSITIONS = "/v5/position/list"
OPEN_ORDERS = "/v5/order/realtime"
ORDER_HISTORY = "/v5/order/history"
EXECUTIONS = "/v5/execution/list"
SERVER_TIME = "/v5/market/time"
INSTRUMENTS = "/v5/market/instruments-info"
COIN_INFO = "/v5/asset/coin/query-info"
PUBLIC_ENDPOINTS = (SERVER_TIME, INSTRUMENTS)
"""Answered without a signature, like Bybit's market endpoints."""

WEEK_MS = 7 * 24 * 3600 * 1000
"""Bybit serves executions and order history in windows of at most seven days."""

OPEN_STATUSES = ("New", "PartiallyFilled")
CATEGORIES = ("linear", "inverse", "option", "spot")
_CURSOR = re.compile(r"page_token=(\d+)&")


def _settle_coin(category: str, symbol: str) -> str:
    if category == "inverse":
        return symbol.removesuffix("USD")
    return "USDT" if symbol.endswith("USDT") else "USDC"


def _coins(category: str, symbol: str) -> tuple[str, str]:
    """Base and quote coin of a symbol named the way Bybit names them (BTCUSDT, BTCPERP, BTCUSD)."""
    if category == "inverse":
        return symbol.removesuffix("USD"), "USD"
    for quote, suffix in (("USDT", "USDT"), ("USDC", "USDC"), ("USDC", "PERP")):
        if symbol.endswith(suffix) and len(symbol) > len(suffix):
            return symbol.removesuffix(suffix), quote
    raise ValueError(f"{symbol}: cannot tell its base and quote coin; use add_instrument")


@dataclass(frozen=True)
class FakeInstrument:
    """One tradable symbol of a category, as /v5/market/instruments-info lists it."""

    category: str
    symbol: str
    base: str
    quote: str
    settle_coin: str
    status: str = "Trading"
    qty_step: Decimal = Decimal("0.001")
    tick_size: Decimal = Decimal("0.01")

    def row(self) -> Row:
        lot = {
            "maxOrderQty": "1000000",
            "minOrderQty": to_text(self.qty_step),
            "qtyStep": to_text(self.qty_step),
            "postOnlyMaxOrderQty": "1000000",
            "maxMktOrderQty": "100000",
            "minNotionalValue": "5",
        }
        if self.category == "spot":
            return {
                "symbol": self.symbol,
                "baseCoin": self.base,
                "quoteCoin": self.quote,
                "innovation": "0",
                "status": self.status,
                "marginTrading": "both",
                "lotSizeFilter": {
                    "basePrecision": to_text(self.qty_step),
                    "quotePrecision": "0.00000001",
                    "minOrderQty": to_text(self.qty_step),
                    "maxOrderQty": "1000000",
                    "minOrderAmt": "1",
                    "maxOrderAmt": "2000000",
                },
                "priceFilter": {"tickSize": to_text(self.tick_size)},
            }
        perpetual = "InversePerpetual" if self.category == "inverse" else "LinearPerpetual"
        return {
            "symbol": self.symbol,
            "contractType": perpetual,
            "status": self.status,
            "baseCoin": self.base,
            "quoteCoin": self.quote,
            "launchTime": "1585526400000",
            "deliveryTime": "0",
            "deliveryFeeRate": "",
            "priceScale": "2",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": to_text(self.tick_size),
                "maxPrice": "1999999.80",
                "tickSize": to_text(self.tick_size),
            },
            "lotSizeFilter": lot,
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": self.settle_coin,
            "copyTrading": "both",
            "upperFundingRate": "0.00375",
            "lowerFundingRate": "-0.00375",
            "isPreListing": False,
            "preListingInfo": None,
        }


@dataclass(frozen=True)
class FakePosition:
    """One leg as the exchange holds it; ``side`` is "" when the leg is flat."""

    category: str
    symbol: str
    idx: int
    side: str
    size: Decimal
    avg_price: Decimal
    seq: int
    updated_ms: int
    settle_coin: str

    def row(self) -> Row:
        return {
            "positionIdx": self.idx,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": self.symbol,
            "side": self.side,
            "size": to_text(self.size),
            "avgPrice": to_text(self.avg_price),
            "positionValue": to_text(self.size * self.avg_price),
            "tradeMode": 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if self.size else 0,
            "leverage": "10",
            "positionBalance": "0",
            "markPrice": to_text(self.avg_price),
            "liqPrice": "",
            "bustPrice": "",
            "positionMM": "0",
            "positionIM": "0",
            "tpslMode": "Full",
            "takeProfit": "",
            "stopLoss": "",
            "trailingStop": "0",
            "unrealisedPnl": "0",
            "curRealisedPnl": "0",
            "cumRealisedPnl": "0",
            "seq": self.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "sessionAvgPrice": "",
            "createdTime": str(self.updated_ms),
            "updatedTime": str(self.updated_ms),
        }


@dataclass(frozen=True)
class FakeOrder:
    """An order; open while its status is New or PartiallyFilled."""

    category: str
    symbol: str
    order_id: str
    side: str
    qty: Decimal
    price: Decimal
    idx: int
    order_type: str
    reduce_only: bool
    status: str
    cum_exec_qty: Decimal
    created_ms: int
    updated_ms: int
    settle_coin: str

    @property
    def leaves_qty(self) -> Decimal:
        return self.qty - self.cum_exec_qty if self.is_open else Decimal(0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def row(self) -> Row:
        return {
            "orderId": self.order_id,
            "orderLinkId": "",
            "blockTradeId": "",
            "symbol": self.symbol,
            "price": to_text(self.price),
            "qty": to_text(self.qty),
            "side": self.side,
            "isLeverage": "",
            "positionIdx": self.idx,
            "orderStatus": self.status,
            "createType": "CreateByUser",
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": to_text(self.price) if self.cum_exec_qty else "",
            "leavesQty": to_text(self.leaves_qty),
            "leavesValue": to_text(self.leaves_qty * self.price),
            "cumExecQty": to_text(self.cum_exec_qty),
            "cumExecValue": to_text(self.cum_exec_qty * self.price),
            "cumExecFee": "0",
            "timeInForce": "GTC",
            "orderType": self.order_type,
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "",
            "takeProfit": "",
            "stopLoss": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": to_text(self.price),
            "reduceOnly": self.reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(self.created_ms),
            "updatedTime": str(self.updated_ms),
        }


@dataclass(frozen=True)
class FakeExecution:
    """One execution record, as /v5/execution/list reports it (it carries no positionIdx)."""

    category: str
    symbol: str
    exec_id: str
    order_id: str
    side: str
    exec_qty: Decimal
    exec_price: Decimal
    exec_fee: Decimal
    exec_ms: int
    exec_type: str
    seq: int
    leaves_qty: Decimal
    closed_size: Decimal
    order_type: str
    is_maker: bool

    @property
    def exec_time(self) -> datetime:
        """``exec_ms`` as an aware UTC datetime, as a bot's execution feed would stamp it."""
        return EPOCH + timedelta(milliseconds=self.exec_ms)

    def row(self) -> Row:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderLinkId": "",
            "side": self.side,
            "orderPrice": to_text(self.exec_price),
            "orderQty": to_text(self.exec_qty + self.leaves_qty),
            "leavesQty": to_text(self.leaves_qty),
            "createType": "CreateByUser",
            "orderType": self.order_type,
            "stopOrderType": "UNKNOWN",
            "execFee": to_text(self.exec_fee),
            "execId": self.exec_id,
            "execPrice": to_text(self.exec_price),
            "execQty": to_text(self.exec_qty),
            "execType": self.exec_type,
            "execValue": to_text(self.exec_qty * self.exec_price),
            "execTime": str(self.exec_ms),
            "feeCurrency": "",
            "isMaker": self.is_maker,
            "feeRate": "0.00055",
            "tradeIv": "",
            "markIv": "",
            "markPrice": to_text(self.exec_price),
            "indexPrice": "",
            "underlyingPrice": "",
            "blockTradeId": "",
            "closedSize": to_text(self.closed_size),
            "seq": self.seq,
            "extraFees": "",
        }


@dataclass(frozen=True)
class RetCode(Fault):
    """HTTP 200 with a non-zero ``retCode`` (10006 rate limit, 10002 timestamp, 10016 ...).

    The rate-limit reset header is sent ``reset_after_ms`` ahead: pybit sleeps until then
    before retrying a 10006 (and two seconds when the header is missing)."""

    code: int = 10006
    message: str = "Too many visits!"
    reset_after_ms: int = 100

    def render(self, envelope: dict[str, Any]) -> Reply:
        reset = int(time.time() * 1000) + self.reset_after_ms
        headers = (("X-Bapi-Limit-Status", "0"), ("X-Bapi-Limit-Reset-Timestamp", str(reset)))
        failed = {**envelope, "retCode": self.code, "retMsg": self.message, "result": {}}
        return json_reply(failed, headers)


@dataclass(frozen=True)
class NoRetCode(Fault):
    """A JSON body without ``retCode``/``retMsg``: pybit returns it as if it had succeeded."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k not in ("retCode", "retMsg")})


@dataclass(frozen=True)
class NoList(Fault):
    """A successful envelope whose ``result`` lacks ``list``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        result = {k: v for k, v in envelope["result"].items() if k != "list"}
        return json_reply({**envelope, "result": result})


@dataclass(frozen=True)
class RowField(Fault):
    """Every listed row gets ``name`` set to ``value`` (or removed, for ``remove=True``): a
    malformed number ("1,5", a JSON float), an unknown side, a missing field."""

    name: str
    value: Any = None
    remove: bool = False

    def render(self, envelope: dict[str, Any]) -> Reply:
        rows = []
        for row in envelope["result"].get("list", []):
            changed = {k: v for k, v in row.items() if k != self.name}
            if not self.remove:
                changed[self.name] = self.value
            rows.append(changed)
        return json_reply({**envelope, "result": {**envelope["result"], "list": rows}})


@dataclass(frozen=True)
class StuckCursor(Fault):
    """``nextPageCursor`` always points back at the first page: paging would never end."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        result = {**envelope["result"], "nextPageCursor": _cursor(0)}
        return json_reply({**envelope, "result": result})


class _ApiError(Exception):
    """A Bybit error answer: HTTP 200 with this ``retCode`` and ``retMsg``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _cursor(offset: int) -> str:
    """Bybit's cursors are URL-encoded tokens; pybit sends them back verbatim."""
    return f"page_token%3D{offset}%26"


@dataclass
class _Book:
    """The exchange's state. Every access holds the fake's lock."""

    positions: dict[tuple[str, str, int], FakePosition] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    executions: list[FakeExecution] = field(default_factory=list)
    hedged: set[tuple[str, str]] = field(default_factory=set)
    instruments: dict[tuple[str, str], FakeInstrument] = field(default_factory=dict)


Listener = Callable[[str, FakePosition | FakeOrder | FakeExecution], None]
"""Told each change of the book as (topic, record): "position", "order" or "execution"."""


class FakeBybit(FakeHttpServer):
    """A scripted Bybit V5 account behind a real HTTP server; use it as a context manager.

    ``clock`` (an aware UTC datetime source) stamps scripted events and the replies' ``time``;
    signatures are checked against the real wall clock, like Bybit does. ``page_size`` caps
    every page, so paging is exercised with a handful of rows.
    """

    exchange = "Bybit"

    def __init__(
        self,
        *,
        api_key: str = "fake-api-key",
        api_secret: str = "fake-api-secret",
        clock: Callable[[], datetime] | None = None,
        page_size: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.api_secret = api_secret
        self.page_size = page_size
        self._clock = clock or (lambda: datetime.now(UTC))
        self._book = _Book()
        self._seq = itertools.count(1000)
        self._ids = itertools.count(1)
        self._listeners: list[Listener] = []

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

    # scripting the exchange

    def set_hedge_mode(self, symbol: str, hedge: bool = True, *, category: str = "linear") -> None:
        """Switch a symbol between one-way (positionIdx 0) and hedge mode (legs 1 and 2)."""
        with self._lock:
            held = [p for p in self._stored_legs(category, symbol) if p.size]
            if held:
                raise ValueError(f"{symbol}: Bybit switches position mode only while flat")
            if hedge:
                self._book.hedged.add((category, symbol))
            else:
                self._book.hedged.discard((category, symbol))

    def set_position(
        self,
        symbol: str,
        side: str,
        size: Number,
        avg_price: Number = 0,
        *,
        idx: int = 0,
        category: str = "linear",
        seq: int | None = None,
        at: datetime | None = None,
    ) -> FakePosition:
        """Make the exchange hold this leg, whatever it held before (``size`` 0: flat)."""
        amount = to_decimal(size)
        if amount < 0 or (amount > 0) != (side in ("Buy", "Sell")):
            raise ValueError(f"{symbol}: size {size} with side {side!r}")
        with self._lock:
            self._check_leg(category, symbol, idx, side if amount else "")
            position = FakePosition(
                category=category,
                symbol=symbol,
                idx=idx,
                side=side if amount else "",
                size=amount,
                avg_price=to_decimal(avg_price) if amount else Decimal(0),
                seq=next(self._seq) if seq is None else seq,
                updated_ms=to_ms(at or self._clock()),
                settle_coin=_settle_coin(category, symbol),
            )
            self._book.positions[(category, symbol, idx)] = position
            self._notify("position", position)
            return position

    def position(self, symbol: str, idx: int = 0, *, category: str = "linear") -> FakePosition:
        """The leg as the exchange holds it now (a flat leg if it was never set)."""
        with self._lock:
            return self._leg(category, symbol, idx)

    def add_open_order(
        self,
        symbol: str,
        side: str,
        qty: Number,
        price: Number,
        *,
        idx: int = 0,
        order_id: str | None = None,
        category: str = "linear",
        order_type: str = "Limit",
        reduce_only: bool = False,
        at: datetime | None = None,
    ) -> str:
        """A resting order (status New); returns its id."""
        with self._lock:
            self._check_leg(category, symbol, idx, "")
            created = to_ms(at or self._clock())
            order = FakeOrder(
                category=category,
                symbol=symbol,
                order_id=order_id or f"order-{next(self._ids)}",
                side=side,
                qty=to_decimal(qty),
                price=to_decimal(price),
                idx=idx,
                order_type=order_type,
                reduce_only=reduce_only,
                status="New",
                cum_exec_qty=Decimal(0),
                created_ms=created,
                updated_ms=created,
                settle_coin=_settle_coin(category, symbol),
            )
            self._book.orders[order.order_id] = order
            self._notify("order", order)
            return order.order_id

    def cancel_order(self, order_id: str, *, at: datetime | None = None) -> None:
        """End a resting order: Cancelled, or PartiallyFilledCanceled if it had fills."""
        with self._lock:
            order = self._open_order(order_id)
            status = "PartiallyFilledCanceled" if order.cum_exec_qty else "Cancelled"
            updated = to_ms(at or self._clock())
            self._book.orders[order_id] = replace(order, status=status, updated_ms=updated)
            self._notify("order", self._book.orders[order_id])

    def order(self, order_id: str) -> FakeOrder:
        with self._lock:
            return self._book.orders[order_id]

    def partial_fill(
        self,
        order_id: str,
        qty: Number,
        *,
        price: Number | None = None,
        fee: Number = 0,
        exec_id: str | None = None,
        is_maker: bool = True,
        at: datetime | None = None,
    ) -> FakeExecution:
        """Execute part (or the rest) of an open order: the leg's size moves AND the execution
        is recorded, so a test can make the exchange move while the client misses the fill."""
        amount = to_decimal(qty)
        with self._lock:
            order = self._open_order(order_id)
            if not 0 < amount <= order.leaves_qty:
                raise ValueError(f"{order_id}: cannot fill {qty}, {order.leaves_qty} left")
            when = to_ms(at or self._clock())
            fill_price = order.price if price is None else to_decimal(price)
            seq = next(self._seq)
            closed = self._trade(order, amount, fill_price, seq, when)
            cum = order.cum_exec_qty + amount
            status = "Filled" if cum == order.qty else "PartiallyFilled"
            order = replace(order, cum_exec_qty=cum, status=status, updated_ms=when)
            self._book.orders[order_id] = order
            execution = FakeExecution(
                category=order.category,
                symbol=order.symbol,
                exec_id=exec_id or f"exec-{next(self._ids)}",
                order_id=order_id,
                side=order.side,
                exec_qty=amount,
                exec_price=fill_price,
                exec_fee=to_decimal(fee),
                exec_ms=when,
                exec_type="Trade",
                seq=seq,
                leaves_qty=order.qty - cum,
                closed_size=closed,
                order_type=order.order_type,
                is_maker=is_maker,
            )
            self._book.executions.append(execution)
            self._notify("order", order)
            self._notify("execution", execution)
            self._notify("position", self._leg(order.category, order.symbol, order.idx))
            return execution

    def add_execution(
        self,
        symbol: str,
        side: str,
        qty: Number,
        price: Number,
        *,
        exec_type: str = "Trade",
        idx: int = 0,
        order_id: str | None = None,
        exec_id: str | None = None,
        fee: Number = 0,
        leaves_qty: Number = 0,
        closed_size: Number = 0,
        order_type: str = "Market",
        is_maker: bool = False,
        seq: int | None = None,
        category: str = "linear",
        at: datetime | None = None,
    ) -> FakeExecution:
        """Record an execution only (positions are untouched). Its order, if new, is put in the
        order history with ``idx`` as its positionIdx, so hedge legs can be looked up; a funding
        execution has no real order."""
        with self._lock:
            when = to_ms(at or self._clock())
            oid = f"order-{next(self._ids)}" if order_id is None else order_id
            if oid and oid not in self._book.orders and exec_type != "Funding":
                self._book.orders[oid] = FakeOrder(
                    category=category,
                    symbol=symbol,
                    order_id=oid,
                    side=side,
                    qty=to_decimal(qty) + to_decimal(leaves_qty),
                    price=to_decimal(price),
                    idx=idx,
                    order_type=order_type,
                    reduce_only=False,
                    status="Filled",
                    cum_exec_qty=to_decimal(qty),
                    created_ms=when,
                    updated_ms=when,
                    settle_coin=_settle_coin(category, symbol),
                )
            execution = FakeExecution(
                category=category,
                symbol=symbol,
                exec_id=exec_id or f"exec-{next(self._ids)}",
                order_id=oid,
                side=side,
                exec_qty=to_decimal(qty),
                exec_price=to_decimal(price),
                exec_fee=to_decimal(fee),
                exec_ms=when,
                exec_type=exec_type,
                seq=next(self._seq) if seq is None else seq,
                leaves_qty=to_decimal(leaves_qty),
                closed_size=to_decimal(closed_size),
                order_type=order_type,
                is_maker=is_maker,
            )
            self._book.executions.append(execution)
            self._notify("execution", execution)
            return execution

    def settle_funding(
        self,
        symbol: str,
        *,
        fee: Number,
        price: Number,
        idx: int = 0,
        exec_id: str | None = None,
        category: str = "linear",
        at: datetime | None = None,
    ) -> FakeExecution:
        """A funding execution on a held leg: ``execQty`` is the whole position size, the side
        is the position's, the size does not change, and the ``orderId`` is synthetic, shaped
        like Bybit's ("1682553600-BTCUSDT-592334-Sell") and in no order list."""
        with self._lock:
            leg = self._leg(category, symbol, idx)
            if not leg.size:
                raise ValueError(f"{symbol}#{idx}: funding needs a held position")
            when = at or self._clock()
            return self.add_execution(
                symbol,
                leg.side,
                leg.size,
                price,
                exec_type="Funding",
                idx=idx,
                order_id=f"{to_ms(when) // 1000}-{symbol}-592334-{leg.side}",
                exec_id=exec_id,
                fee=fee,
                order_type="UNKNOWN",
                category=category,
                at=when,
            )

    def add_instrument(
        self,
        symbol: str,
        *,
        category: str = "linear",
        base: str | None = None,
        quote: str | None = None,
        settle_coin: str | None = None,
        status: str = "Trading",
        qty_step: Number = "0.001",
    ) -> FakeInstrument:
        """List a symbol in instruments-info. Every symbol a position, order or execution names
        is listed anyway (coins read from its name); this adds others, spot twins, or a symbol
        whose coins its name does not tell (``base``/``quote``/``settle_coin``)."""
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}")
        named_base, named_quote = (base, quote) if base and quote else _coins(category, symbol)
        settle = settle_coin or ("" if category == "spot" else _settle_coin(category, symbol))
        instrument = FakeInstrument(
            category=category,
            symbol=symbol,
            base=named_base,
            quote=named_quote,
            settle_coin=settle,
            status=status,
            qty_step=to_decimal(qty_step),
        )
        with self._lock:
            self._book.instruments[(category, symbol)] = instrument
        return instrument

    # observation

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(topic, record)`` after each change of the book, under the fake's lock
        (so it must not block): a partial fill tells its order, execution and position, in that
        order. Returns the function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, topic: str, record: FakePosition | FakeOrder | FakeExecution) -> None:
        for listener in list(self._listeners):
            listener(topic, record)

    # the exchange's rules

    def _check_leg(self, category: str, symbol: str, idx: int, side: str) -> None:
        """Bybit's position-mode rules; a hedge leg on a flat one-way symbol switches it."""
        if idx not in (0, 1, 2):
            raise ValueError(f"positionIdx must be 0, 1 or 2, not {idx}")
        if side and idx and side != ("Buy" if idx == 1 else "Sell"):
            raise ValueError(f"{symbol}: hedge leg {idx} cannot hold side {side}")
        hedged = (category, symbol) in self._book.hedged
        if idx == 0 and hedged:
            raise ValueError(f"{symbol} is in hedge mode: use idx 1 (long) or 2 (short)")
        if idx and not hedged:
            if any(p.size for p in self._stored_legs(category, symbol)):
                raise ValueError(f"{symbol} holds a one-way position; it cannot take hedge legs")
            self._book.hedged.add((category, symbol))

    def _stored_legs(self, category: str, symbol: str) -> list[FakePosition]:
        return [
            p for p in self._book.positions.values() if (p.category, p.symbol) == (category, symbol)
        ]

    def _leg(self, category: str, symbol: str, idx: int) -> FakePosition:
        """The stored leg, or the flat row Bybit shows for a never-traded one (seq -1)."""
        return self._book.positions.get((category, symbol, idx)) or FakePosition(
            category=category,
            symbol=symbol,
            idx=idx,
            side="",
            size=Decimal(0),
            avg_price=Decimal(0),
            seq=-1,
            updated_ms=0,
            settle_coin=_settle_coin(category, symbol),
        )

    def _open_order(self, order_id: str) -> FakeOrder:
        order = self._book.orders.get(order_id)
        if order is None or not order.is_open:
            raise ValueError(f"{order_id} is not an open order")
        return order

    def _trade(self, order: FakeOrder, qty: Decimal, price: Decimal, seq: int, ms: int) -> Decimal:
        """Move the order's leg by one execution; returns the size it closed."""
        leg = self._leg(order.category, order.symbol, order.idx)
        held = leg.size if leg.side == "Buy" else -leg.size
        delta = qty if order.side == "Buy" else -qty
        after = held + delta
        if order.idx and (after < 0 if order.idx == 1 else after > 0):
            raise ValueError(f"{order.order_id}: would push hedge leg {order.idx} past zero")
        closed = min(abs(held), qty) if held * delta < 0 else Decimal(0)
        if held * delta >= 0:
            avg = (abs(held) * leg.avg_price + qty * price) / (abs(held) + qty)
        elif held * after > 0:
            avg = leg.avg_price
        else:
            avg = price
        side = "" if after == 0 else ("Buy" if after > 0 else "Sell")
        self._book.positions[(leg.category, leg.symbol, leg.idx)] = replace(
            leg,
            side=side,
            size=abs(after),
            avg_price=avg if after else Decimal(0),
            seq=seq,
            updated_ms=ms,
        )
        return closed

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
        }
        public = path in PUBLIC_ENDPOINTS
        try:
            if not public:
                self._authenticate(payload, headers)
        except _ApiError as error:
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
        except _ApiError as error:
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
            raise _ApiError(10003, "API key is invalid.")
        stamp = headers.get("X-BAPI-TIMESTAMP", "")
        window = headers.get("X-BAPI-RECV-WINDOW", "5000")
        now = int(time.time() * 1000)
        if not (stamp.isdigit() and window.isdigit()) or not (
            now - int(window) <= int(stamp) < now + 1000
        ):
            raise _ApiError(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{stamp}],server_timestamp[{now}],recv_window[{window}]",
            )
        origin = f"{stamp}{key}{window}{payload}"
        expected = hmac.new(self.api_secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("X-BAPI-SIGN", "")):
            raise _ApiError(10004, f"error sign! origin_string[{origin}]")

    def _server_time(self) -> Row:
        now = self._clock()
        nanos = to_ms(now) * 1_000_000
        return {"timeSecond": str(nanos // 1_000_000_000), "timeNano": str(nanos)}

    def _positions(self, params: dict[str, str]) -> Row:
        category = _category(params)
        symbol, settle = params.get("symbol"), params.get("settleCoin")
        if category == "linear" and not (symbol or settle):
            raise _ApiError(
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
        return self._page(category, [p.row() for p in rows], params, default=20, maximum=200)

    def _open_orders(self, params: dict[str, str]) -> Row:
        category = _category(params)
        order_id = params.get("orderId")
        filters = ("symbol", "baseCoin", "settleCoin")
        if category == "linear" and not order_id and not any(params.get(f) for f in filters):
            raise _ApiError(
                10001,
                "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin",
            )
        orders = [
            o
            for o in self._book.orders.values()
            if o.category == category
            and (o.order_id == order_id if order_id else o.is_open)
            and _matches(o, params)
        ]
        orders.sort(key=lambda o: (o.created_ms, o.order_id), reverse=True)
        return self._page(category, [o.row() for o in orders], params, default=20, maximum=50)

    def _order_history(self, params: dict[str, str]) -> Row:
        """Closed orders only (Bybit's unified account); ``orderId`` finds one at any age."""
        category = _category(params)
        order_id = params.get("orderId")
        if order_id:
            orders = [
                o
                for o in self._book.orders.values()
                if o.order_id == order_id and o.category == category and not o.is_open
            ]
        else:
            start, end = self._window(params)
            orders = [
                o
                for o in self._book.orders.values()
                if o.category == category
                and not o.is_open
                and start <= o.created_ms <= end
                and _matches(o, params)
            ]
        orders.sort(key=lambda o: (o.created_ms, o.order_id), reverse=True)
        return self._page(category, [o.row() for o in orders], params, default=20, maximum=50)

    def _executions(self, params: dict[str, str]) -> Row:
        """Newest first, within a window of at most seven days, like Bybit."""
        category = _category(params)
        start, end = self._window(params)
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
        executions.sort(key=lambda e: (e.exec_ms, e.seq), reverse=True)
        return self._page(category, [e.row() for e in executions], params, default=50, maximum=100)

    def _instruments(self, params: dict[str, str]) -> Row:
        """Listed symbols of a category, by symbol; a symbol the book names is listed too."""
        category = _category(params)
        named = {(p.category, p.symbol) for p in self._book.positions.values()}
        named |= {(o.category, o.symbol) for o in self._book.orders.values()}
        named |= {(e.category, e.symbol) for e in self._book.executions}
        instruments = dict(self._book.instruments)
        for leg_category, symbol in named - instruments.keys():
            settle = _settle_coin(leg_category, symbol)
            try:
                base, quote = _coins(leg_category, symbol)
            except ValueError:  # a name that tells no coins still settles somewhere
                base, quote = symbol, settle
            instruments[(leg_category, symbol)] = FakeInstrument(
                leg_category, symbol, base, quote, settle
            )
        status = params.get("status") or "Trading"
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
        return self._page(category, [i.row() for i in listed], params, default=500, maximum=1000)

    def _coin_info(self, params: dict[str, str]) -> Row:
        """/v5/asset/coin/query-info: the coins the listed instruments use (ccxt reads it while
        loading markets when keys are set); no chains."""
        coins = {c for i in self._book.instruments.values() for c in (i.base, i.quote)}
        rows = [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in sorted(coins)]
        return {"rows": rows}

    def _window(self, params: dict[str, str]) -> tuple[int, int]:
        start, end = _optional_int(params, "startTime"), _optional_int(params, "endTime")
        if end is None:
            end = to_ms(self._clock()) if start is None else start + WEEK_MS
        if start is None:
            start = end - WEEK_MS
        if end - start > WEEK_MS:
            raise _ApiError(
                10001, "The time range between startTime and endTime cannot exceed 7 days"
            )
        if end < start:
            raise _ApiError(10001, "startTime should be less than endTime")
        return start, end

    def _page(
        self, category: str, rows: list[Row], params: dict[str, str], *, default: int, maximum: int
    ) -> Row:
        limit = _optional_int(params, "limit") or default
        if not 1 <= limit <= maximum:
            raise _ApiError(10001, f"params error: limit must be in [1, {maximum}]")
        size = min(limit, self.page_size or limit)
        cursor = params.get("cursor", "")
        match = _CURSOR.fullmatch(cursor)
        if cursor and match is None:
            raise _ApiError(10001, "params error: cursor invalid")
        offset = int(match.group(1)) if match else 0
        end = offset + size
        return {
            "list": rows[offset:end],
            "nextPageCursor": _cursor(end) if end < len(rows) else "",
            "category": category,
        }


def _category(params: dict[str, str]) -> str:
    category = params.get("category", "")
    if category not in CATEGORIES:
        raise _ApiError(10001, f"params error: category {category!r} invalid")
    return category


def _matches(order: FakeOrder, params: dict[str, str]) -> bool:
    symbol, settle = params.get("symbol"), params.get("settleCoin")
    return symbol in (None, order.symbol) and settle in (None, order.settle_coin)


def _optional_int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not value.lstrip("-").isdigit():
        raise _ApiError(10001, f"params error: {name} must be an integer")
    return int(value)
