"""A fake OKX V5 REST server on 127.0.0.1, for tests that drive a real ``ccxt.okx``.

It checks signatures the way OKX does (``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``,
``OK-ACCESS-TIMESTAMP`` and ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of timestamp + method +
request path with its query + body), answers in OKX's shapes (``{"code": "0", "msg": "",
"data": [...]}``, numbers as strings, sizes in contracts) and keeps an in-memory account a test
scripts: instruments (with ``ctVal``), positions (net or long/short legs, cross or isolated),
open orders (paged by ``after`` ordId) and fills (paged by ``after`` billId). Faults can be armed
per endpoint, so a test can prove every way a read can fail is told apart from "no position"::

    import ccxt
    from posledger.testing.fake_okx import POSITIONS, FakeOkx, HttpError

    with FakeOkx() as fake:
        exchange = ccxt.okx(fake.ccxt_config())          # keys, passphrase, urls -> the fake
        fake.add_instrument("BTC-USDT-SWAP", ct_val="0.01")
        fake.set_position("BTC-USDT-SWAP", "-3", "43000")  # net mode: short 3 contracts
        fake.inject(POSITIONS, HttpError(502))           # the next position read gets a 502

It also answers what ccxt's ``load_markets`` reads: public instruments of every type and, with
keys set, the currency list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from collections.abc import Callable, Mapping
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
    "CURRENCIES",
    "FILLS",
    "INSTRUMENTS",
    "OPEN_ORDERS",
    "POSITIONS",
    "DropConnection",
    "ErrorCode",
    "FakeOkx",
    "Fault",
    "HttpError",
    "IgnoredAfter",
    "NoCode",
    "NoData",
    "NotJson",
    "RowField",
    "Slow",
    "TruncatedJson",
]

POSITIONS = "/api/v5/account/positions"
OPEN_ORDERS = "/api/v5/trade/orders-pending"
FILLS = "/api/v5/trade/fills-history"
INSTRUMENTS = "/api/v5/public/instruments"
SERVER_TIME = "/api/v5/public/time"
CURRENCIES = "/api/v5/asset/currencies"
PUBLIC_ENDPOINTS = (INSTRUMENTS, SERVER_TIME)

FILLS_SPAN = timedelta(days=90)
"""fills-history serves the last three months."""

INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")
OPEN_STATES = ("live", "partially_filled")


@dataclass(frozen=True)
class FakeInstrument:
    """One instrument as public/instruments lists it."""

    inst_id: str
    inst_type: str
    ct_val: Decimal
    ct_mult: Decimal
    settle: str
    lot_sz: Decimal = Decimal("0.01")
    tick_sz: Decimal = Decimal("0.1")

    @property
    def underlying(self) -> str:
        return "-".join(self.inst_id.split("-")[:2])

    @property
    def expiry_ms(self) -> str:
        """A future's delivery time (08:00 UTC of the date in its id); "" for a swap."""
        if self.inst_type != "FUTURES":
            return ""
        day = datetime.strptime(self.inst_id.split("-")[2], "%y%m%d").replace(tzinfo=UTC)
        return str(to_ms(day + timedelta(hours=8)))

    def row(self) -> Row:
        base, quote = self.underlying.split("-")
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "uly": self.underlying,
            "instFamily": self.underlying,
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": self.settle,
            "ctVal": to_text(self.ct_val),
            "ctMult": to_text(self.ct_mult),
            "ctValCcy": base if self.settle == quote else quote,
            "ctType": "linear" if self.settle == quote else "inverse",
            "optType": "",
            "stk": "",
            "listTime": "1606468572000",
            "expTime": self.expiry_ms,
            "lever": "100",
            "tickSz": to_text(self.tick_sz),
            "lotSz": to_text(self.lot_sz),
            "minSz": to_text(self.lot_sz),
            "alias": "",
            "state": "live",
            "maxLmtSz": "100000000",
            "maxMktSz": "10000",
        }


@dataclass(frozen=True)
class FakePosition:
    """One position row: ``pos`` contracts, signed in net mode."""

    inst_id: str
    inst_type: str
    pos_side: str
    mgn_mode: str
    pos: Decimal
    avg_px: Decimal
    pos_id: str
    c_ms: int
    u_ms: int

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "mgnMode": self.mgn_mode,
            "posId": self.pos_id,
            "posSide": self.pos_side,
            "pos": to_text(self.pos),
            "posCcy": "",
            "availPos": to_text(abs(self.pos)),
            "avgPx": to_text(self.avg_px) if self.pos else "",
            "upl": "0",
            "uplRatio": "0",
            "lever": "10",
            "liqPx": "",
            "markPx": to_text(self.avg_px),
            "imr": "0",
            "margin": "",
            "mgnRatio": "",
            "mmr": "0",
            "notionalUsd": "0",
            "ccy": "USDT",
            "adl": "1",
            "realizedPnl": "0",
            "cTime": str(self.c_ms),
            "uTime": str(self.u_ms),
        }


@dataclass(frozen=True)
class FakeOrder:
    """An order; pending while its state is live or partially_filled."""

    inst_id: str
    inst_type: str
    ord_id: str
    side: str
    pos_side: str
    sz: Decimal
    px: Decimal
    reduce_only: bool
    state: str
    acc_fill_sz: Decimal
    c_ms: int
    u_ms: int

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "ordId": self.ord_id,
            "clOrdId": "",
            "tag": "",
            "px": to_text(self.px),
            "sz": to_text(self.sz),
            "ordType": "limit",
            "side": self.side,
            "posSide": self.pos_side,
            "tdMode": "cross",
            "accFillSz": to_text(self.acc_fill_sz),
            "fillPx": "",
            "fillSz": "0",
            "avgPx": "",
            "state": self.state,
            "lever": "10",
            "fee": "0",
            "feeCcy": "USDT",
            "reduceOnly": "true" if self.reduce_only else "false",
            "cTime": str(self.c_ms),
            "uTime": str(self.u_ms),
        }


@dataclass(frozen=True)
class FakeFill:
    """One fills-history row (``fillSz`` in contracts, ``fee`` negative when paid)."""

    inst_id: str
    inst_type: str
    trade_id: str
    ord_id: str
    bill_id: str
    side: str
    pos_side: str
    fill_sz: Decimal
    fill_px: Decimal
    fee: Decimal
    ts: int
    sub_type: str

    @property
    def exec_time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ts)

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "tradeId": self.trade_id,
            "ordId": self.ord_id,
            "clOrdId": "",
            "billId": self.bill_id,
            "subType": self.sub_type,
            "tag": "",
            "fillPx": to_text(self.fill_px),
            "fillSz": to_text(self.fill_sz),
            "fillIdxPx": "",
            "fillPnl": "0",
            "side": self.side,
            "posSide": self.pos_side,
            "execType": "M",
            "feeCcy": "USDT",
            "fee": to_text(self.fee),
            "ts": str(self.ts),
            "fillTime": str(self.ts),
        }


# faults in OKX's envelope (HttpError, NotJson, TruncatedJson, Slow, DropConnection: any API)


@dataclass(frozen=True)
class ErrorCode(Fault):
    """An OKX error: ``code`` (50011 rate limit, 50013 system busy, 50001 unavailable ...) with
    HTTP ``status`` (429 for rate limits, else 200)."""

    code: str = "50011"
    message: str = "Too Many Requests"
    status: int = 200

    def render(self, envelope: dict[str, Any]) -> Reply:
        body = json_reply({"code": self.code, "msg": self.message, "data": []}).body
        return Reply(status=self.status, body=body)


@dataclass(frozen=True)
class NoCode(Fault):
    """A JSON body without ``code``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k != "code"})


@dataclass(frozen=True)
class NoData(Fault):
    """``code`` "0" without ``data``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k != "data"})


@dataclass(frozen=True)
class RowField(Fault):
    """Every listed row gets ``name`` set to ``value`` (or removed, for ``remove=True``)."""

    name: str
    value: Any = None
    remove: bool = False

    def render(self, envelope: dict[str, Any]) -> Reply:
        rows = []
        for row in envelope.get("data", []):
            changed = {k: v for k, v in row.items() if k != self.name}
            if not self.remove:
                changed[self.name] = self.value
            rows.append(changed)
        return json_reply({**envelope, "data": rows})


@dataclass(frozen=True)
class IgnoredAfter(Fault):
    """The server answers as if ``after`` had not been sent, so every page is the first one:
    paging would never end."""


class _ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class _Book:
    instruments: dict[str, FakeInstrument] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], FakePosition] = field(default_factory=dict)
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    fills: list[FakeFill] = field(default_factory=list)


class FakeOkx(FakeHttpServer):
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
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.api_secret = api_secret
        self.passphrase = passphrase
        self.page_size = page_size
        self._clock = clock or (lambda: datetime.now(UTC))
        self._book = _Book()
        self._ids = itertools.count(600_000_000_000_000_001)

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

    # scripting the account

    def add_instrument(
        self,
        inst_id: str,
        *,
        ct_val: Number = "1",
        ct_mult: Number = "1",
        settle: str | None = None,
        lot_sz: Number = "0.01",
    ) -> FakeInstrument:
        """List an instrument (``BTC-USDT-SWAP``, ``BTC-USD-251226``); its type and settle
        currency follow from its name unless given."""
        parts = inst_id.split("-")
        inst_type = "SWAP" if parts[-1] == "SWAP" else "FUTURES" if len(parts) == 3 else "SPOT"
        coin = parts[0] if parts[1] == "USD" else parts[1]
        listed = FakeInstrument(
            inst_id=inst_id,
            inst_type=inst_type,
            ct_val=to_decimal(ct_val),
            ct_mult=to_decimal(ct_mult),
            settle=settle or coin,
            lot_sz=to_decimal(lot_sz),
        )
        with self._lock:
            self._book.instruments[inst_id] = listed
        return listed

    def set_position(
        self,
        inst_id: str,
        pos: Number,
        avg_px: Number = 0,
        *,
        pos_side: str = "net",
        mgn_mode: str = "cross",
        at: datetime | None = None,
    ) -> FakePosition:
        """Make the account hold ``pos`` contracts (signed in net mode). ``pos`` 0 leaves a
        listed zero row, as OKX does for an isolated position after a margin transfer."""
        contracts = to_decimal(pos)
        if pos_side != "net" and contracts < 0:
            raise ValueError(f"{inst_id}: a {pos_side} leg holds a positive pos")
        with self._lock:
            instrument = self._instrument(inst_id)
            when = to_ms(at or self._clock())
            held = self._book.positions.get((inst_id, pos_side, mgn_mode))
            position = FakePosition(
                inst_id=inst_id,
                inst_type=instrument.inst_type,
                pos_side=pos_side,
                mgn_mode=mgn_mode,
                pos=contracts,
                avg_px=to_decimal(avg_px),
                pos_id=held.pos_id if held is not None else str(next(self._ids)),
                c_ms=held.c_ms if held is not None else when,
                u_ms=when,
            )
            self._book.positions[(inst_id, pos_side, mgn_mode)] = position
            return position

    def add_open_order(
        self,
        inst_id: str,
        side: str,
        sz: Number,
        px: Number,
        *,
        pos_side: str = "net",
        reduce_only: bool = False,
        at: datetime | None = None,
    ) -> str:
        """A resting order of ``sz`` contracts; returns its ``ordId``."""
        with self._lock:
            instrument = self._instrument(inst_id)
            when = to_ms(at or self._clock())
            order = FakeOrder(
                inst_id=inst_id,
                inst_type=instrument.inst_type,
                ord_id=str(next(self._ids)),
                side=side,
                pos_side=pos_side,
                sz=to_decimal(sz),
                px=to_decimal(px),
                reduce_only=reduce_only,
                state="live",
                acc_fill_sz=Decimal(0),
                c_ms=when,
                u_ms=when,
            )
            self._book.orders[order.ord_id] = order
            return order.ord_id

    def partial_fill(
        self,
        ord_id: str,
        sz: Number,
        *,
        fee: Number = 0,
        trade_id: str | None = None,
        at: datetime | None = None,
    ) -> FakeFill:
        """Fill ``sz`` contracts of an open order: the position moves AND the fill is recorded
        (``fee`` as OKX writes it: negative when paid)."""
        amount = to_decimal(sz)
        with self._lock:
            order = self._book.orders[ord_id]
            if not order.is_open or not 0 < amount <= order.sz - order.acc_fill_sz:
                raise ValueError(f"{ord_id}: cannot fill {sz}")
            when = to_ms(at or self._clock())
            self._move(order.inst_id, order.pos_side, order.side, amount, order.px, when)
            filled = order.acc_fill_sz + amount
            state = "filled" if filled == order.sz else "partially_filled"
            self._book.orders[ord_id] = replace(order, acc_fill_sz=filled, state=state, u_ms=when)
            return self._record_fill(
                order.inst_id, order.side, order.pos_side, amount, order.px, fee, when,
                ord_id=ord_id, trade_id=trade_id, sub_type="1" if order.side == "buy" else "2",
            )  # fmt: skip

    def add_fill(
        self,
        inst_id: str,
        side: str,
        sz: Number,
        px: Number,
        *,
        pos_side: str = "net",
        fee: Number = 0,
        sub_type: str | None = None,
        ord_id: str | None = None,
        trade_id: str | None = None,
        at: datetime | None = None,
    ) -> FakeFill:
        """Record a fill without moving any position (history a test scripts directly)."""
        with self._lock:
            self._instrument(inst_id)
            return self._record_fill(
                inst_id, side, pos_side, to_decimal(sz), to_decimal(px), fee,
                to_ms(at or self._clock()), ord_id=ord_id or str(next(self._ids)),
                trade_id=trade_id, sub_type=sub_type or ("1" if side == "buy" else "2"),
            )  # fmt: skip

    # the book

    def _instrument(self, inst_id: str) -> FakeInstrument:
        listed = self._book.instruments.get(inst_id)
        return listed if listed is not None else self.add_instrument(inst_id)

    def _record_fill(
        self,
        inst_id: str,
        side: str,
        pos_side: str,
        sz: Decimal,
        px: Decimal,
        fee: Number,
        ts: int,
        *,
        ord_id: str,
        trade_id: str | None,
        sub_type: str,
    ) -> FakeFill:
        bill_id = str(next(self._ids))
        recorded = FakeFill(
            inst_id=inst_id,
            inst_type=self._book.instruments[inst_id].inst_type,
            trade_id=trade_id or f"t{bill_id[-6:]}",
            ord_id=ord_id,
            bill_id=bill_id,
            side=side,
            pos_side=pos_side,
            fill_sz=sz,
            fill_px=px,
            fee=to_decimal(fee),
            ts=ts,
            sub_type=sub_type,
        )
        self._book.fills.append(recorded)
        return recorded

    def _move(
        self, inst_id: str, pos_side: str, side: str, sz: Decimal, px: Decimal, ms: int
    ) -> None:
        """A fill's effect on its leg (the cross-margin row), which disappears at zero."""
        key = (inst_id, pos_side, "cross")
        held = self._book.positions.get(key)
        pos = held.pos if held is not None else Decimal(0)
        if pos_side == "net":
            after = pos + (sz if side == "buy" else -sz)
        else:
            adds = (side == "buy") == (pos_side == "long")
            after = pos + sz if adds else pos - sz
            if after < 0:
                raise ValueError(f"{inst_id} {pos_side}: fill would push the leg past zero")
        if after == 0:
            self._book.positions.pop(key, None)
            return
        if held is None or pos == 0 or (after > 0) != (pos > 0):
            avg = px
        elif abs(after) > abs(pos):
            avg = (abs(pos) * held.avg_px + sz * px) / abs(after)
        else:
            avg = held.avg_px
        moment = EPOCH + timedelta(milliseconds=ms)
        self.set_position(inst_id, after, avg, pos_side=pos_side, at=moment)

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
