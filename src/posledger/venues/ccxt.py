"""Bybit and OKX through ccxt, blocking (``ccxt``) or asyncio (``ccxt.async_support``): complete
snapshots and normalised executions (for Bybit the same as
:class:`~posledger.venues.bybit.BybitVenue`'s), or an exception.

ccxt's unified methods are not complete reads: ``fetch_positions``, ``fetch_open_orders`` and
``fetch_my_trades`` return one page unless asked to paginate, their pagination stops silently
after ``paginationCalls`` requests, a reply without ``result.list`` comes back as ``[]``, and
their numbers are floats. So these venues send Bybit's V5 requests through ccxt's implicit API
(``private_get_v5_position_list`` ...: ccxt signs, sends and maps errors) and read the raw replies
with the very plans :class:`~posledger.venues.bybit.BybitVenue` uses (:class:`BybitReads`): every
page, ``Decimal`` from the raw strings, hedge legs from ``positionIdx``, ``seq`` kept, a settle
coin's coverage from instruments-info. Keys therefore hold Bybit's own symbols (``BTCUSDT``) and
``venue`` is ccxt's exchange id (``"bybit"``), exactly as with pybit, so a ledger keeps its keys
when a bot moves between pybit and ccxt. :func:`venue_symbol` and :func:`unified_symbol` map
between those symbols and ccxt's unified ones (``BTC/USDT:USDT``) through the loaded markets.

OKX is read the same way, with its own plans (:class:`~posledger.venues.okx.OkxReads`: OKX V5
``account/positions``, ``trade/orders-pending``, ``trade/fills-history`` and
``public/instruments`` through ``private_get_account_positions`` ...): keys hold OKX's
``instId`` (``BTC-USDT-SWAP``), ``venue`` is ``"okx"``, the category is ``swap`` or ``futures``
(linear) or ``inverse`` (coin-margined swaps and futures) and sizes are contracts × ``ctVal``
(ccxt's ``contractSize``). Every other exchange is refused: they report positions and trades in
other shapes (see docs/ccxt.md), and a venue that guessed at them could mistake an unread page
for a flat account.
Requires the ``ccxt`` extra (``pip install -e '.[ccxt]'``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from posledger.core.contract import INVERSE
from posledger.core.errors import ExchangeAuthFailed, ExchangeUnavailable, InvalidInput
from posledger.core.model import Fill, Snapshot, aware_utc
from posledger.core.money import MoneyRecord
from posledger.venues.bybit import AUTH_CODES as BYBIT_AUTH_CODES
from posledger.venues.bybit import (
    EXECUTION_LIST,
    INSTRUMENTS_INFO,
    OPEN_ORDERS,
    ORDER_HISTORY,
    POSITION_LIST,
    BybitReads,
    checked_result,
    reply_time,
)
from posledger.venues.bybit_money import CLOSED_PNL
from posledger.venues.common import (
    INSTRUMENTS_TTL,
    Call,
    Plan,
    ReplyTimes,
    Row,
    rejection,
    run,
    run_async,
    to_ms,
)
from posledger.venues.okx import AUTH_CODES as OKX_AUTH_CODES
from posledger.venues.okx import (
    FILLS_HISTORY,
    INST_TYPES,
    INSTRUMENTS,
    PENDING_ORDERS,
    POSITIONS,
    OkxReads,
    checked_reply,
)
from posledger.venues.okx_money import POSITIONS_HISTORY

SUPPORTED = ("bybit", "okx")
"""ccxt exchange ids these venues read; any other is refused when the venue is made."""

IMPLICIT_METHODS: Mapping[str, str] = {
    POSITION_LIST: "private_get_v5_position_list",
    OPEN_ORDERS: "private_get_v5_order_realtime",
    ORDER_HISTORY: "private_get_v5_order_history",
    EXECUTION_LIST: "private_get_v5_execution_list",
    INSTRUMENTS_INFO: "public_get_v5_market_instruments_info",
    CLOSED_PNL: "private_get_v5_position_closed_pnl",
}
"""ccxt's implicit-API method for each Bybit V5 endpoint a read uses."""

OKX_IMPLICIT_METHODS: Mapping[str, str] = {
    POSITIONS: "private_get_account_positions",
    PENDING_ORDERS: "private_get_trade_orders_pending",
    FILLS_HISTORY: "private_get_trade_fills_history",
    INSTRUMENTS: "public_get_public_instruments",
    POSITIONS_HISTORY: "private_get_account_positions_history",
}
"""ccxt's implicit-API method for each OKX V5 endpoint a read uses."""


class Reads(Protocol):
    """An exchange's read plans (:class:`BybitReads`, :class:`~posledger.venues.okx.OkxReads`)."""

    def snapshot(self, taken_at: datetime) -> Plan[Snapshot]: ...

    def executions(self, start_ms: int, end_ms: int) -> Plan[list[Fill]]: ...

    def money(self, start_ms: int, end_ms: int) -> Plan[list[MoneyRecord]]: ...


@attrs.frozen
class Dialect:
    """How one exchange's raw replies are requested and checked, and where its error bodies
    keep their code."""

    methods: Mapping[str, str]
    checked: Callable[[str, Any], Row]
    code_field: str
    auth_codes: frozenset[int | str]
    reply_time: Callable[[str, Row], datetime | None]


def _untimed(what: str, reply: Row) -> None:
    """OKX V5 replies (``code``, ``msg``, ``data``) carry no server time."""


DIALECTS: Mapping[str, Dialect] = {
    "bybit": Dialect(IMPLICIT_METHODS, checked_result, "retCode", BYBIT_AUTH_CODES, reply_time),
    "okx": Dialect(OKX_IMPLICIT_METHODS, checked_reply, "code", OKX_AUTH_CODES, _untimed),
}
"""Each supported exchange id's requests, reply checks and reply times."""

_MARKET_FLAGS: Mapping[str, str] = {"futures": "future"}
"""A category whose ccxt market flag is spelled otherwise (OKX ``futures``: ``future``)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _in_category(market: Mapping[str, Any], category: str) -> bool:
    """ccxt lists Bybit's spot and derivative markets under one id (AGIUSDT): tell them apart.
    OKX ids differ per market type (``BTC-USDT``, ``BTC-USDT-SWAP``); the check holds as well.
    Category ``inverse`` holds the coin-margined swaps and futures (ccxt's ``inverse`` flag), so
    OKX's ``swap`` and ``futures`` hold only the others (docs/design.md#inverse)."""
    if category == "spot":
        return bool(market.get("spot"))
    if category == "option":
        return bool(market.get("option"))
    if not market.get("contract") or market.get("option"):
        return False
    if category == INVERSE:
        return bool(market.get("inverse"))
    return bool(market.get(_MARKET_FLAGS.get(category, category))) and not market.get("inverse")


def venue_symbol(exchange: Any, unified: str, category: str) -> str:
    """The exchange's symbol (a key's ``symbol``) for ccxt's unified one: ``BTC/USDT:USDT`` →
    ``BTCUSDT`` (Bybit) or ``BTC-USDT-SWAP`` (OKX, category ``swap``).

    A symbol that already is a market id of ``category`` is returned as it is. Markets must be
    loaded (``exchange.load_markets()``)."""
    markets = _markets(exchange)
    market = markets.get(unified)
    if market is not None and _in_category(market, category):
        return str(market["id"])
    by_id = exchange.markets_by_id or {}
    if any(_in_category(m, category) for m in by_id.get(unified, ())):
        return unified
    raise InvalidInput(f"{exchange.id} has no {category} market {unified!r}")


def unified_symbol(exchange: Any, symbol: str, category: str) -> str:
    """ccxt's unified symbol for Bybit's ``symbol`` in ``category``: ``BTCUSDT`` → ``BTC/USDT:USDT``
    for linear (``AGI/USDT`` is the spot market of the same id). Markets must be loaded."""
    _markets(exchange)
    for market in (exchange.markets_by_id or {}).get(symbol, ()):
        if _in_category(market, category):
            return str(market["symbol"])
    raise InvalidInput(f"{exchange.id} has no {category} market with id {symbol!r}")


def _markets(exchange: Any) -> Mapping[str, Any]:
    if not exchange.markets:
        raise InvalidInput(f"{exchange.id} markets are not loaded: call load_markets() first")
    markets: Mapping[str, Any] = exchange.markets
    return markets


def _unavailable(venue: str, call: Call, error: Exception) -> ExchangeUnavailable:
    """A failed ccxt request as posledger's error, with the cause chained by the caller. ccxt
    raises an error code (Bybit's ``retCode``, OKX's ``code``) as an ExchangeError whose message
    ends in the exchange's body: its code makes it an :class:`ExchangeRejected` (an
    :class:`ExchangeAuthFailed` for one refusing the credentials). ccxt's AuthenticationError
    without a body (no key configured: nothing was sent) is one as well."""
    message = f"{venue} {call.what}: {type(error).__name__}: {error}"
    code = _ret_code(str(error), venue)
    if code is not None:
        return rejection(message, code, DIALECTS[venue].auth_codes)
    if _refuses_credentials(error):
        return ExchangeAuthFailed(message)
    return ExchangeUnavailable(message)


def _refuses_credentials(error: Exception) -> bool:
    from ccxt.base.errors import AuthenticationError  # type: ignore[import-untyped]

    return isinstance(error, AuthenticationError)


def _ret_code(message: str, venue: str) -> int | str | None:
    """The code in the exchange's body that ends ccxt's message (``bybit {"retCode":…}``); ccxt
    puts a hint between the two for some codes (Bybit's 10005: which permissions to grant)."""
    prefix, _, text = message.partition(" ")
    if prefix != venue:
        return None
    start = text.find("{")
    while start >= 0:
        try:
            reply = json.loads(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        code = reply.get(DIALECTS[venue].code_field) if isinstance(reply, dict) else None
        return code if isinstance(code, int | str) and not isinstance(code, bool) else None
    return None


class _CcxtExchange:
    """What the blocking and the asyncio venue share: settings, symbol mapping, requests."""

    def __init__(
        self,
        exchange: Any,
        *,
        account: str,
        category: str,
        settle_coin: str | None = None,
        symbols: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        hedge_mode: bool | None = None,
        instruments_ttl: timedelta = INSTRUMENTS_TTL,
    ) -> None:
        exchange_id = getattr(exchange, "id", None)
        if exchange_id not in SUPPORTED:
            raise InvalidInput(
                f"posledger reads positions and executions through ccxt for {SUPPORTED} only, "
                f"not {exchange_id!r}: other exchanges report contracts, hedge sides and pages "
                f"differently (see docs/ccxt.md)"
            )
        if exchange_id == "okx" and category not in INST_TYPES:
            raise InvalidInput(f"okx category must be in {sorted(INST_TYPES)}, not {category!r}")
        if exchange_id == "okx" and hedge_mode is not None:
            raise InvalidInput("okx reports each fill's leg (posSide): leave hedge_mode None")
        if isinstance(symbols, str):
            raise InvalidInput("symbols must be a collection of symbols, not one string")
        if symbols is not None and not (symbols := tuple(symbols)):
            raise InvalidInput("symbols must name at least one symbol (None covers them all)")
        self.exchange = exchange
        self.venue = str(exchange_id)
        self.account = account
        self.category = category
        self.settle_coin = settle_coin
        self.requested_symbols = None if symbols is None else tuple(symbols)
        self.hedge_mode = hedge_mode
        self.instruments_ttl = instruments_ttl
        self._clock = clock or _utc_now
        self.dialect = DIALECTS[str(exchange_id)]
        self._reads: Reads | None = None

    @property
    def needs_markets(self) -> bool:
        """Unified symbols (``BTC/USDT:USDT``) can only be mapped with the markets loaded."""
        return any("/" in symbol for symbol in self.requested_symbols or ())

    def _reads_with_markets(self) -> Reads:
        """The plans, made once (they remember order legs and instruments between reads)."""
        if self._reads is None:
            symbols = self.requested_symbols
            if symbols is not None and self.needs_markets:
                symbols = tuple(venue_symbol(self.exchange, s, self.category) for s in symbols)
            self._reads = self._reads_of(symbols)
        return self._reads

    def _reads_of(self, symbols: tuple[str, ...] | None) -> Reads:
        """This exchange's plans over the venue's settings (OKX's need the clock: fills-history
        reaches back three months from now)."""
        if self.venue == "okx":
            return OkxReads(
                venue=self.venue,
                account=self.account,
                category=self.category,
                clock=self._now,
                settle_coin=self.settle_coin,
                symbols=symbols,
                instruments_ttl=self.instruments_ttl,
            )
        return BybitReads(
            venue=self.venue,
            account=self.account,
            category=self.category,
            settle_coin=self.settle_coin,
            symbols=symbols,
            hedge_mode=self.hedge_mode,
            instruments_ttl=self.instruments_ttl,
            clock=self._now,
        )

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "clock")

    def _range(self, since: datetime, until: datetime | None) -> tuple[int, int]:
        start = to_ms(aware_utc(since, "since"))
        return start, to_ms(self._now() if until is None else aware_utc(until, "until"))

    def _request(self, call: Call) -> tuple[Any, dict[str, Any]]:
        method = getattr(self.exchange, self.dialect.methods[call.endpoint])
        return method, {name: value for name, value in call.query.items() if value is not None}

    def _checked(self, call: Call, reply: Any, times: ReplyTimes | None) -> Row:
        """The checked reply, its time (if the exchange tells it) told to ``times``."""
        result = self.dialect.checked(call.what, reply)
        if times is not None:
            times.saw(self.dialect.reply_time(call.what, reply))
        return result

    def _load_failure(self, error: Exception) -> ExchangeUnavailable:
        return _unavailable(self.venue, Call("load_markets", "markets", {}), error)


class CcxtVenue(_CcxtExchange):
    """One Bybit or OKX account and category through an injected blocking ``ccxt.bybit`` or
    ``ccxt.okx`` (OKX categories: ``swap``, ``futures``, ``inverse``).

    ``symbols`` None covers the category (with ``settle_coin``: the symbols settling in it); a
    list, in unified (``BTC/USDT:USDT``) or the exchange's spelling (``BTCUSDT``,
    ``BTC-USDT-SWAP``), covers only those. ``hedge_mode`` (Bybit only) None asks the exchange
    per symbol; OKX fills carry their leg.
    """

    def fetch_snapshot(self) -> Snapshot:
        """Every position and open order, every page, or ExchangeUnavailable; ``taken_at`` is
        the exchange's clock where its replies tell it (Bybit: the earliest reply's ``time``),
        else (OKX) the venue's clock, read before the first position request."""
        reads = self._ready()
        times = ReplyTimes()
        plan = reads.snapshot(self._now())
        return times.stamp(run(plan, lambda call: self._answer(call, times)))

    def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        """Every execution (trades, funding, ADL, liquidations ...) in ``[since, until]``,
        oldest first, with ``symbol`` (the exchange's) and ``idx`` set."""
        reads = self._ready()
        return run(reads.executions(*self._range(since, until)), self._answer)

    def fetch_money(self, since: datetime, until: datetime | None = None) -> list[MoneyRecord]:
        """The exchange's money records in ``[since, until]``, oldest first, each on its key
        (Bybit: closed-pnl; OKX: positions-history; docs/money.md), or ExchangeUnavailable."""
        reads = self._ready()
        return run(reads.money(*self._range(since, until)), self._answer)

    def venue_symbol(self, unified: str) -> str:
        """``BTC/USDT:USDT`` → ``BTCUSDT`` in this venue's category (loads markets if needed)."""
        self._load_markets()
        return venue_symbol(self.exchange, unified, self.category)

    def unified_symbol(self, symbol: str) -> str:
        """``BTCUSDT`` → ``BTC/USDT:USDT`` in this venue's category (loads markets if needed)."""
        self._load_markets()
        return unified_symbol(self.exchange, symbol, self.category)

    def _ready(self) -> Reads:
        if self._reads is None and self.needs_markets:
            self._load_markets()
        return self._reads_with_markets()

    def _load_markets(self) -> None:
        if self.exchange.markets:
            return
        try:
            self.exchange.load_markets()
        except Exception as error:
            raise self._load_failure(error) from error

    def _answer(self, call: Call, times: ReplyTimes | None = None) -> Row:
        method, query = self._request(call)
        try:
            reply = method(query)
        except Exception as error:
            raise _unavailable(self.venue, call, error) from error
        return self._checked(call, reply, times)


class AsyncCcxtVenue(_CcxtExchange):
    """:class:`CcxtVenue` over an injected ``ccxt.async_support.bybit`` (or ``.okx``): the reads
    are coroutines that never block the event loop. The exchange stays the caller's to close."""

    async def fetch_snapshot(self) -> Snapshot:
        """Every position and open order, every page, or ExchangeUnavailable; ``taken_at`` as
        :meth:`CcxtVenue.fetch_snapshot`."""
        reads = await self._ready()
        times = ReplyTimes()
        plan = reads.snapshot(self._now())
        return times.stamp(await run_async(plan, lambda call: self._answer(call, times)))

    async def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        """Every execution in ``[since, until]``, oldest first, with ``symbol`` and ``idx``."""
        reads = await self._ready()
        return await run_async(reads.executions(*self._range(since, until)), self._answer)

    async def fetch_money(
        self, since: datetime, until: datetime | None = None
    ) -> list[MoneyRecord]:
        """The exchange's money records in ``[since, until]``, as
        :meth:`CcxtVenue.fetch_money`."""
        reads = await self._ready()
        return await run_async(reads.money(*self._range(since, until)), self._answer)

    async def venue_symbol(self, unified: str) -> str:
        await self._load_markets()
        return venue_symbol(self.exchange, unified, self.category)

    async def unified_symbol(self, symbol: str) -> str:
        await self._load_markets()
        return unified_symbol(self.exchange, symbol, self.category)

    async def _ready(self) -> Reads:
        if self._reads is None and self.needs_markets:
            await self._load_markets()
        return self._reads_with_markets()

    async def _load_markets(self) -> None:
        if self.exchange.markets:
            return
        try:
            await self.exchange.load_markets()
        except Exception as error:
            raise self._load_failure(error) from error

    async def _answer(self, call: Call, times: ReplyTimes | None = None) -> Row:
        method, query = self._request(call)
        try:
            reply = await method(query)
        except Exception as error:
            raise _unavailable(self.venue, call, error) from error
        return self._checked(call, reply, times)
