"""Bybit V5 through pybit: complete snapshots and normalised executions, or an exception.

pybit turns only some failures into exceptions: a JSON body without ``retCode`` comes back as if
it had succeeded, a code in ``ignore_codes`` is returned as data, retried codes end in a
``FailedRequestError`` and a rate-limit reset in the past makes it raise ``ValueError``. So this
adapter checks every reply itself and turns anything short of a complete answer into
:class:`~posledger.ExchangeUnavailable` (:class:`~posledger.ExchangeRejected` for a non-zero
``retCode``) with the cause chained. It never returns ``None`` or part of a read.

The reads themselves (paging, parsing, hedge legs, settle-coin coverage) are written once, as
plans in :class:`BybitReads`, which the ccxt venues (:mod:`posledger.venues.ccxt`) drive too.

Requires the ``bybit`` extra (``pip install -e '.[bybit]'``); the pybit session is injected,
so tests point it at :mod:`posledger.testing.fake_bybit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import attrs

from posledger.core.contract import INVERSE
from posledger.core.errors import (
    ExchangeMalformed,
    ExchangeRejected,
    ExchangeTruncated,
    ExchangeUnavailable,
    InvalidInput,
)
from posledger.core.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    Side,
    Snapshot,
    aware_utc,
    text,
)
from posledger.core.money import MoneyRecord
from posledger.venues.base import complete_snapshot
from posledger.venues.bybit_money import (
    CLOSED_PNL,
    CLOSED_PNL_PAGE,
    CLOSED_PNL_SPAN,
    ClosedPnl,
    closed_pnl_from_row,
)
from posledger.venues.common import (
    INSTRUMENTS_TTL,
    Call,
    Plan,
    ReplyTimes,
    Row,
    covered_symbols,
    parsed_row,
    refuse_older_than,
    rejection,
    run,
    time_from_ms,
    to_ms,
    unique_records,
    unreadable,
)

EXEC_KINDS: Mapping[str, ExecKind] = {
    "Trade": ExecKind.TRADE,
    "AdlTrade": ExecKind.ADL,
    "BustTrade": ExecKind.LIQUIDATION,
    "Delivery": ExecKind.DELIVERY,
    "Settle": ExecKind.SETTLE,
    "Funding": ExecKind.FUNDING,
    "BlockTrade": ExecKind.BLOCK_TRADE,
    "MovePosition": ExecKind.MOVE_POSITION,
    "FutureSpread": ExecKind.SPREAD_TRADE,
    "CorporateAction": ExecKind.CORPORATE_ACTION,
    "ForwardSplitSettle": ExecKind.CORPORATE_ACTION,
    "ReverseSplitSettle": ExecKind.CORPORATE_ACTION,
}
"""Bybit's ``execType`` values and what each is (docs/design.md#exec-types). Any other value
(``UNKNOWN``, ``Dividend``, a type Bybit adds later) is read as :attr:`ExecKind.UNKNOWN`: it
moves size by its signed quantity, keeps its raw ``execType`` and is flagged, so one execution
posledger does not know blocks no read."""

WINDOW_MS = 7 * 24 * 3600 * 1000
"""Bybit serves executions and order history at most seven days per request."""

POSITIONS_PAGE, ORDERS_PAGE, EXECUTIONS_PAGE = 200, 50, 100
"""The largest page Bybit allows per endpoint: fewest requests per complete read."""

ORDER_LEG_MEMORY = 10_000
"""Order ids whose positionIdx is remembered (an order never changes leg); oldest forgotten."""

_FLAT_SIDES = ("", "None")
"""Bybit writes "" for a flat leg (unified accounts) or "None" (classic accounts)."""

T = TypeVar("T")

log = logging.getLogger("posledger.venues.bybit")

POSITION_LIST = "/v5/position/list"
OPEN_ORDERS = "/v5/order/realtime"
ORDER_HISTORY = "/v5/order/history"
EXECUTION_LIST = "/v5/execution/list"
INSTRUMENTS_INFO = "/v5/market/instruments-info"

AUTH_CODES = frozenset({10003, 10004, 10005, 10007, 10010, 33004})
"""``retCode`` s that refuse the credentials themselves, raised as
:class:`~posledger.ExchangeAuthFailed`: invalid key (10003), bad signature (10004), permission
denied (10005), authentication failed (10007), IP not bound to the key (10010), key expired
(33004). A clock out of ``recv_window`` (10002) is not one: pybit retries it."""

INSTRUMENTS_PAGE = 1000
INSTRUMENT_STATUSES = ("Trading", "PreLaunch", "Delivering", "Closed")
"""instruments-info lists only ``Trading`` symbols unless asked: a position (or a ledger key) on
a symbol being delivered or delisted must still fall inside its settle coin's coverage."""

DOCUMENTED_STATUS_FILTERS = frozenset({"Trading", "PreLaunch"})
"""The ``status`` filters instruments-info documents for linear and inverse (the enum lists
``Delivering`` and ``Closed`` as statuses, not as filters). A refusal of another one degrades
the coverage instead of failing the read."""

PARAMS_ERROR = 10001
"""Bybit's ``retCode`` for a request parameter it refuses."""


class BybitSession(Protocol):
    """The part of ``pybit.unified_trading.HTTP`` this adapter uses."""

    def get_positions(self, **query: Any) -> Any: ...

    def get_open_orders(self, **query: Any) -> Any: ...

    def get_executions(self, **query: Any) -> Any: ...

    def get_order_history(self, **query: Any) -> Any: ...

    def get_instruments_info(self, **query: Any) -> Any: ...

    def get_closed_pnl(self, **query: Any) -> Any: ...


def _pybit_rejection() -> type[Exception]:
    """pybit's exception for an answer with a non-zero ``retCode``; fails early without pybit."""
    try:
        from pybit.exceptions import InvalidRequestError  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(
            "posledger.venues.bybit needs pybit: pip install -e '.[bybit]'"
        ) from error
    rejection: type[Exception] = InvalidRequestError
    return rejection


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BybitReads:
    """Bybit V5 account reads as plans (see :mod:`posledger.venues.common`), whatever client
    sends them: pybit for :class:`BybitVenue`, ccxt's implicit API for the ccxt venues. It
    remembers what later reads reuse: order legs and the symbols settling in ``settle_coin``.

    ``symbols`` None covers the whole category, or with ``settle_coin`` every symbol settling in
    it (read from instruments-info, every status, cached for ``instruments_ttl``); a list covers
    only those symbols, read one by one so flat legs come back as explicit flat rows.
    ``hedge_mode`` None asks the exchange per symbol; True/False skips the question. ``clock``
    tells how far back the money records reach (closed-pnl serves two years).

    Bybit filters linear reads by ``settleCoin`` itself. Inverse reads are documented by
    category alone (``/v5/position/list?category=inverse`` lists every held position), so an
    inverse venue with a settle coin (the base coin: ``BTC`` for BTCUSD and BTCUSDH26) reads the
    whole category and keeps the rows of the symbols settling in it.
    """

    def __init__(
        self,
        *,
        venue: str,
        account: str,
        category: str,
        settle_coin: str | None = None,
        symbols: Iterable[str] | None = None,
        hedge_mode: bool | None = None,
        instruments_ttl: timedelta = INSTRUMENTS_TTL,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.symbols = covered_symbols(symbols)
        self.clock = clock or _utc_now
        self.venue = venue
        self.account = account
        self.category = category
        self.settle_coin = settle_coin
        self.hedge_mode = hedge_mode
        self.instruments_ttl = instruments_ttl
        self._order_legs: dict[str, int] = {}
        self._coins: SettleCoins | None = None

    def snapshot(self, taken_at: datetime) -> Plan[Snapshot]:
        """Every position and open order, every page, as a snapshot taken at ``taken_at``."""
        rows: list[Row] = []
        for scope in self._scopes():
            rows.extend((yield from self._read_all("position list", POSITION_LIST, scope)))
        orders: list[Row] = []
        for scope in self._scopes():
            orders.extend((yield from self._read_all("open orders", OPEN_ORDERS, scope)))
        positions = [parsed("position", row, position_from_row) for row in rows]
        coverage, caveats = yield from self._coverage(taken_at, {p.symbol for p in positions})
        self._remember_legs(orders)
        if coverage is not None:  # an inverse read by category lists other coins too
            positions = [p for p in positions if p.symbol in coverage]
            orders = [row for row in orders if parsed("open order", row, _symbol) in coverage]
        return complete_snapshot(
            "Bybit",
            self,
            taken_at=taken_at,
            positions=positions,
            symbols=coverage,
            open_order_ids=[parsed("open order", row, _order_id) for row in orders],
            caveats=caveats,
        )

    def executions(self, start_ms: int, end_ms: int) -> Plan[list[Fill]]:
        """Every execution in ``[start_ms, end_ms]`` in the order Bybit applied them
        (:meth:`Fill.exchange_order`: its list is out of order within a millisecond),
        deduplicated by ``execId``, with ``symbol`` and ``idx`` set; read in windows of at most
        seven days."""
        windows = list(_windows(start_ms, end_ms))
        fills: list[Fill] = []
        for window_start, window_end in windows:
            rows: list[Row] = []
            for scope in self._execution_scopes():
                query = {**scope, "startTime": window_start, "endTime": window_end}
                rows.extend((yield from self._read_all("executions", EXECUTION_LIST, query)))
            fills.extend(parsed("execution", row, fill_from_row) for row in reversed(rows))
        unique = sorted(_deduplicated(fills), key=Fill.exchange_order)
        return (yield from self._with_legs(unique, windows))

    def money(self, start_ms: int, end_ms: int) -> Plan[list[MoneyRecord]]:
        """Every closed-pnl record created in ``[start_ms, end_ms]`` (docs/money.md), oldest
        first, each once, on its leg (the closing order's side in hedge mode), read in windows
        of at most seven days; with a settle coin only its symbols'. A read reaching past the
        two years Bybit serves is refused."""
        now = self.clock()
        refuse_older_than("Bybit", "closed-pnl", start_ms, now, CLOSED_PNL_SPAN)
        rows: list[Row] = []
        for window_start, window_end in _windows(start_ms, end_ms):
            for scope in self._execution_scopes():
                query = {**scope, "startTime": window_start, "endTime": window_end}
                rows.extend((yield from self._read_all("closed pnl", CLOSED_PNL, query)))
        closes = [parsed("closed pnl", row, self._closed_pnl) for row in rows]
        symbols = {c.record.key.symbol for c in closes}
        coverage, _ = yield from self._coverage(now, symbols, listed_by_coin=False)
        covered = [c for c in closes if coverage is None or c.record.key.symbol in coverage]
        hedged: dict[str, bool] = {}
        for symbol in sorted({c.record.key.symbol for c in covered}):
            hedged[symbol] = yield from self._is_hedged(symbol)
        records = [c.on_leg(hedged[c.record.key.symbol]) for c in covered]
        inside = [r for r in records if start_ms <= to_ms(r.closed_at) <= end_ms]
        return unique_records("Bybit", inside)

    def _closed_pnl(self, row: Row) -> ClosedPnl:
        return closed_pnl_from_row(row, self.venue, self.account, self.category)

    def _coverage(
        self, now: datetime, listed: set[str], *, listed_by_coin: bool = True
    ) -> Plan[tuple[frozenset[str] | None, tuple[str, ...]]]:
        """The symbols the snapshot speaks for, and its caveats. With a settle coin, the symbols
        settling in it: a key settling in another coin is never judged (and so never closed) by
        this read. A listed position on a symbol the cache does not know makes it read the list
        again; one instruments-info still does not know, or (where Bybit filtered by settle coin
        itself) one settling in another coin, fails the read, unless a status filter was
        refused and Bybit filtered by settle coin: then it is covered on the list's word.
        ``listed_by_coin`` False says the rows were listed without the settle-coin filter
        (closed-pnl has none)."""
        if self.symbols is not None:
            return frozenset(self.symbols), ()
        if self.settle_coin is None:
            return None, ()
        known = self._coins
        if known is None or known.stale(now, self.instruments_ttl, listed):
            known = self._coins = yield from self._settle_coins(now)
        coins = known.coins
        settling = frozenset(symbol for symbol, coin in coins.items() if coin == self.settle_coin)
        filtered = listed_by_coin and bool(self._settle_filter())
        unknown = listed - (settling if filtered else coins.keys())
        if unknown and not (known.refused and filtered):
            told = f"as settling in {self.settle_coin}" if filtered else "at all"
            raise ExchangeUnavailable(
                f"Bybit lists {self.category} positions on {sorted(unknown)}, which "
                f"instruments-info does not list {told}: their settle coin is unknown"
            )
        return settling | unknown, known.caveats(self.settle_coin)

    def _settle_coins(self, now: datetime) -> Plan[SettleCoins]:
        """Each symbol of the category and its settle coin, of every status instruments-info
        serves; a refused filter it does not document is left out (and said so), any other
        failure fails the read."""
        coins: dict[str, str] = {}
        refused: list[str] = []
        for status in INSTRUMENT_STATUSES:
            query = {"category": self.category, "status": status}
            try:
                instruments = yield from self._read_all(
                    "instruments", INSTRUMENTS_INFO, query, INSTRUMENTS_PAGE
                )
            except ExchangeRejected as error:
                if status in DOCUMENTED_STATUS_FILTERS or error.code != PARAMS_ERROR:
                    raise
                log.warning("Bybit instruments-info refused status=%s: %s", status, error)
                refused.append(status)
                continue
            coins.update(parsed("instrument", i, _settles) for i in instruments)
        return SettleCoins(now, coins, tuple(refused))

    def _settle_filter(self) -> dict[str, str]:
        """The ``settleCoin`` filter Bybit applies itself: linear reads only (see the class)."""
        if self.settle_coin is None or self.category == INVERSE:
            return {}
        return {"settleCoin": self.settle_coin}

    def _scopes(self) -> list[dict[str, Any]]:
        """The queries that together cover this venue's positions and open orders."""
        if self.symbols is not None:
            return [{"category": self.category, "symbol": symbol} for symbol in self.symbols]
        return [{"category": self.category, **self._settle_filter()}]

    def _execution_scopes(self) -> list[dict[str, Any]]:
        """Execution history has no settle-coin filter: per symbol, or the whole category."""
        if self.symbols is not None:
            return self._scopes()
        return [{"category": self.category}]

    def _read_all(
        self, what: str, endpoint: str, query: Mapping[str, Any], limit: int | None = None
    ) -> Plan[list[Row]]:
        """Every page of one listing; a cursor seen before means the listing would never end."""
        rows: list[Row] = []
        cursor: str | None = None
        seen: set[str] = set()
        page = {"limit": limit or PAGE_LIMITS[endpoint]}
        while True:
            paged = {**query, **page} if cursor is None else {**query, **page, "cursor": cursor}
            result = yield Call(endpoint, what, paged)
            rows.extend(_rows(what, result))
            cursor = _next_cursor(what, result)
            if not cursor:
                return rows
            if cursor in seen:
                raise ExchangeTruncated(f"Bybit {what}: cursor {cursor!r} came back again")
            seen.add(cursor)

    def _with_legs(self, fills: list[Fill], windows: list[tuple[int, int]]) -> Plan[list[Fill]]:
        """Set each fill's ``idx``: 0 in one-way mode; in hedge mode its order's positionIdx
        (executions carry none), looked up in the order history."""
        symbols = sorted({str(fill.symbol) for fill in fills})
        hedged = set()
        for symbol in symbols:
            if (yield from self._is_hedged(symbol)):
                hedged.add(symbol)
        traded = [f for f in fills if f.symbol in hedged and f.kind is not ExecKind.FUNDING]
        yield from self._learn_legs(traded, windows)
        return [
            attrs.evolve(fill, idx=self._leg_of(fill) if fill.symbol in hedged else 0)
            for fill in fills
        ]

    def _is_hedged(self, symbol: str) -> Plan[bool]:
        """A symbol query lists every leg, flat ones included: idx 1/2 rows mean hedge mode."""
        if self.hedge_mode is not None:
            return self.hedge_mode
        query = {"category": self.category, "symbol": symbol}
        rows = yield from self._read_all("position list", POSITION_LIST, query)
        legs = {parsed("position", row, position_from_row).idx for row in rows}
        if not legs:
            raise ExchangeUnavailable(f"Bybit position list for {symbol} is empty: mode unknown")
        return legs != {0}

    def _learn_legs(self, fills: list[Fill], windows: list[tuple[int, int]]) -> Plan[None]:
        """Find the positionIdx of unknown orders: one sweep of the order history per window,
        then one lookup per order still missing (older orders, or orders still open)."""
        last_fills = {f.order_id: f for f in fills if f.order_id not in self._order_legs}
        last_fills.pop("", None)
        if not last_fills:
            return
        scope = {"category": self.category, **self._settle_filter()}
        for window_start, window_end in windows:
            query = {**scope, "startTime": window_start, "endTime": window_end}
            self._remember_legs((yield from self._read_all("order history", ORDER_HISTORY, query)))
        for order_id in sorted(last_fills.keys() - self._order_legs.keys()):
            yield from self._look_up_leg(last_fills[order_id])

    def _look_up_leg(self, fill: Fill) -> Plan[None]:
        """The leg of the order of ``fill`` (its last fill read): in the order history of the
        seven days up to that fill (without a window Bybit serves the last seven days only), else
        among open orders, which for linear Bybit serves only with a symbol (or a coin)."""
        query = {"category": self.category, "symbol": fill.symbol, "orderId": fill.order_id}
        end = to_ms(fill.exec_time)
        history = {**query, "startTime": end - WINDOW_MS, "endTime": end}
        self._remember_legs((yield from self._read_all("order history", ORDER_HISTORY, history)))
        if fill.order_id not in self._order_legs:
            self._remember_legs((yield from self._read_all("open orders", OPEN_ORDERS, query)))

    def _remember_legs(self, orders: list[Row]) -> None:
        for row in orders:
            order_id, idx = parsed("order", row, order_leg_from_row)
            self._order_legs.pop(order_id, None)
            self._order_legs[order_id] = idx
        while len(self._order_legs) > ORDER_LEG_MEMORY:
            del self._order_legs[next(iter(self._order_legs))]

    def _leg_of(self, fill: Fill) -> int:
        """The order's positionIdx. A funding execution has no real order (its orderId is
        synthetic): it goes to the leg holding its side, as Bybit books funding with the
        position's side (an assumption: Bybit's documentation does not say so)."""
        if fill.kind is ExecKind.FUNDING:
            return 1 if fill.side is Side.BUY else 2
        idx = self._order_legs.get(fill.order_id)
        if idx is not None:
            return idx
        raise ExchangeUnavailable(
            f"Bybit execution {fill.exec_id} of hedge-mode {fill.symbol}: order "
            f"{fill.order_id!r} is in neither order history nor open orders; its leg is unknown"
        )


@attrs.frozen
class SettleCoins:
    """Each symbol instruments-info listed and its settle coin, when they were read, and which
    status filters it refused (their symbols are missing)."""

    read_at: datetime
    coins: Mapping[str, str]
    refused: tuple[str, ...]

    def stale(self, now: datetime, ttl: timedelta, listed: set[str]) -> bool:
        """Read again when older than ``ttl``, or (unless filters were refused, which leaves
        symbols out for good) when a listed position names a symbol it lacks."""
        return now - self.read_at >= ttl or bool(listed - self.coins.keys() and not self.refused)

    def caveats(self, coin: str) -> tuple[str, ...]:
        if not self.refused:
            return ()
        return (
            f"Bybit instruments-info refused status filter {', '.join(self.refused)} (retCode "
            f"{PARAMS_ERROR}): coverage is the {coin} symbols of the other statuses and those "
            f"holding a position; a key on a symbol of a refused status that holds nothing on "
            f"the exchange is not judged",
        )


PAGE_LIMITS: Mapping[str, int] = {
    POSITION_LIST: POSITIONS_PAGE,
    OPEN_ORDERS: ORDERS_PAGE,
    ORDER_HISTORY: ORDERS_PAGE,
    EXECUTION_LIST: EXECUTIONS_PAGE,
    INSTRUMENTS_INFO: INSTRUMENTS_PAGE,
    CLOSED_PNL: CLOSED_PNL_PAGE,
}


class BybitVenue:
    """One Bybit account and category, read through an injected pybit ``HTTP`` session.

    Coverage, ``symbols`` and ``hedge_mode`` are as in :class:`BybitReads`: with ``settle_coin``
    a snapshot speaks only for the symbols settling in that coin.
    """

    def __init__(
        self,
        http: BybitSession,
        *,
        account: str,
        category: str,
        settle_coin: str | None = None,
        symbols: Iterable[str] | None = None,
        venue: str = "bybit",
        clock: Callable[[], datetime] | None = None,
        hedge_mode: bool | None = None,
        instruments_ttl: timedelta = INSTRUMENTS_TTL,
    ) -> None:
        self._rejection = _pybit_rejection()
        self.reads = BybitReads(
            venue=venue,
            account=account,
            category=category,
            settle_coin=settle_coin,
            symbols=symbols,
            hedge_mode=hedge_mode,
            instruments_ttl=instruments_ttl,
            clock=self._now,
        )
        self.venue, self.account, self.category = venue, account, category
        self.symbols = self.reads.symbols
        self._clock = clock or _utc_now
        self._methods: Mapping[str, Callable[..., Any]] = {
            POSITION_LIST: http.get_positions,
            OPEN_ORDERS: http.get_open_orders,
            ORDER_HISTORY: http.get_order_history,
            EXECUTION_LIST: http.get_executions,
            INSTRUMENTS_INFO: http.get_instruments_info,
            CLOSED_PNL: http.get_closed_pnl,
        }

    def fetch_snapshot(self) -> Snapshot:
        """Every position and open order, every page, or ExchangeUnavailable.

        ``taken_at`` is Bybit's clock: the ``time`` of the read's earliest reply (the host's
        clock, read before the first request, only if no reply carried one), so it compares
        with executions' ``execTime`` whatever the host's clock says."""
        times = ReplyTimes()
        plan = self.reads.snapshot(self._now())
        return times.stamp(run(plan, lambda call: self._answer(call, times)))

    def fetch_executions(self, since: datetime, until: datetime | None = None) -> list[Fill]:
        """Every execution in ``[since, until]`` (until: now), oldest first, deduplicated by
        ``execId``, with ``symbol`` and ``idx`` set; read in windows of at most seven days."""
        start = to_ms(aware_utc(since, "since"))
        end = to_ms(self._now() if until is None else aware_utc(until, "until"))
        return run(self.reads.executions(start, end), self._answer)

    def fetch_money(self, since: datetime, until: datetime | None = None) -> list[MoneyRecord]:
        """Every closed-pnl record in ``[since, until]`` (until: now), oldest first, on its leg
        (docs/money.md), or ExchangeUnavailable; ``funding`` is None: Bybit's records carry
        none (the key's funding is its ``Funding`` executions)."""
        start = to_ms(aware_utc(since, "since"))
        end = to_ms(self._now() if until is None else aware_utc(until, "until"))
        return run(self.reads.money(start, end), self._answer)

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "clock")

    def _answer(self, call: Call, times: ReplyTimes | None = None) -> Row:
        """One request's ``result``, from a reply with ``retCode`` 0, or an exception; its
        ``time`` told to ``times``."""
        try:
            reply = self._methods[call.endpoint](**call.query)
        except self._rejection as error:
            code = getattr(error, "status_code", None)
            raise rejection(f"Bybit {call.what}: {error}", code, AUTH_CODES) from error
        except Exception as error:
            message = f"Bybit {call.what}: {type(error).__name__}: {error}"
            raise unreadable(message, error) from error
        if isinstance(reply, tuple):  # pybit's record_request_time / return_response_headers
            reply = reply[0]
        result = checked_result(call.what, reply)
        if times is not None:
            times.saw(reply_time(call.what, reply))
        return result


def checked_result(what: str, reply: Any) -> Row:
    """The ``result`` of a Bybit V5 reply with ``retCode`` 0 and a ``result.list``, or an
    exception: a body without ``retCode`` or ``list`` is not an empty answer."""
    if not isinstance(reply, Mapping):
        raise ExchangeMalformed(f"Bybit {what}: reply is not a JSON object: {reply!r:.200}")
    if "retCode" not in reply:
        raise ExchangeMalformed(f"Bybit {what}: reply has no retCode: {reply!r:.200}")
    code = reply["retCode"]
    if code != 0 or isinstance(code, bool):
        message = f"Bybit {what}: retCode {code!r}: {reply.get('retMsg')}"
        raise rejection(message, code, AUTH_CODES)
    result = reply.get("result")
    if not isinstance(result, Mapping) or not isinstance(result.get("list"), list):
        raise ExchangeMalformed(f"Bybit {what}: reply has no result.list: {reply!r:.200}")
    return result


def reply_time(what: str, reply: Row) -> datetime | None:
    """When Bybit answered, by its clock: the reply's ``time`` (ms since the epoch), or None
    when it has none; anything else is a malformed reply."""
    stamp = reply.get("time")
    if stamp is None:
        return None
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp <= 0:
        raise ExchangeUnavailable(f"Bybit {what}: reply time is not milliseconds: {stamp!r:.50}")
    return time_from_ms(str(stamp))


def _rows(what: str, result: Row) -> list[Row]:
    rows = result["list"]
    for row in rows:
        if not isinstance(row, Mapping):
            raise ExchangeMalformed(f"Bybit {what}: a listed row is not an object: {row!r:.200}")
    return list(rows)


def _next_cursor(what: str, result: Row) -> str:
    cursor = result.get("nextPageCursor") or ""
    if not isinstance(cursor, str):
        raise ExchangeMalformed(f"Bybit {what}: nextPageCursor is not a string: {cursor!r}")
    return cursor


def parsed(what: str, row: Row, parse: Callable[[Row], T]) -> T:
    """A value from one row; any missing or malformed field fails the whole read."""
    return parsed_row("Bybit", what, row, parse)


def position_from_row(row: Row) -> ExchangePosition:
    """A V5 position row (REST list or private stream) as an ExchangePosition; side "" is flat."""
    side = row["side"]
    return ExchangePosition(
        symbol=row["symbol"],
        idx=row["positionIdx"],
        side=None if side in _FLAT_SIDES else side,
        size=row["size"],
        avg_price=row.get("avgPrice") or None,
        seq=_seq(row.get("seq")),
        updated_at=time_from_ms(row.get("updatedTime")),
    )


def _settles(row: Row) -> tuple[str, str]:
    """An instrument's symbol and settle coin."""
    symbol, coin = row["symbol"], row["settleCoin"]
    if not isinstance(symbol, str) or not symbol or not isinstance(coin, str) or not coin:
        raise InvalidInput(f"symbol and settleCoin must be non-empty strings: {symbol!r} {coin!r}")
    return symbol, coin


def _symbol(row: Row) -> str:
    symbol = row["symbol"]
    if not isinstance(symbol, str) or not symbol:
        raise InvalidInput(f"symbol must be a non-empty string, got {symbol!r}")
    return symbol


def _order_id(row: Row) -> str:
    order_id = row["orderId"]
    if not isinstance(order_id, str) or not order_id:
        raise InvalidInput(f"orderId must be a non-empty string, got {order_id!r}")
    return order_id


def order_leg_from_row(row: Row) -> tuple[str, int]:
    """An order row's id and hedge leg: executions do not carry ``positionIdx``, orders do."""
    idx = row["positionIdx"]
    if isinstance(idx, bool) or idx not in (0, 1, 2):
        raise InvalidInput(f"positionIdx must be 0, 1 or 2, got {idx!r}")
    return _order_id(row), idx


def fill_from_row(row: Row) -> Fill:
    """A V5 execution row (REST or stream) as a Fill without its leg; an ``execType`` not in
    :data:`EXEC_KINDS` is of kind ``unknown``, its raw value kept in ``venue_type``."""
    exec_type = text(row["execType"], "execType")
    leaves = row.get("leavesQty")
    return Fill(
        exec_id=row["execId"],
        order_id=row["orderId"],
        side=row["side"],
        qty=row["execQty"],
        price=row["execPrice"],
        fee=row["execFee"],
        exec_time=time_from_ms(row["execTime"]),
        seq=_seq(row.get("seq")),
        kind=EXEC_KINDS.get(exec_type, ExecKind.UNKNOWN),
        leaves_qty=leaves if leaves not in (None, "") else None,
        symbol=row["symbol"],
        venue_type=exec_type,
    )


def _deduplicated(fills: list[Fill]) -> Iterator[Fill]:
    """Each execId once (pages can overlap while new executions arrive); the same id with a
    different payload is an inconsistent read, not something to pick from."""
    seen: dict[str, Fill] = {}
    for fill in fills:
        first = seen.setdefault(fill.exec_id, fill)
        if first is fill:
            yield fill
        elif first.payload() != fill.payload():
            raise ExchangeUnavailable(
                f"Bybit listed execution {fill.exec_id} twice with different payloads: "
                f"{first.payload()} and {fill.payload()}"
            )


def _seq(value: Any) -> int | None:
    """Bybit's cross sequence: a JSON integer (documented as "-1" for a never-traded symbol)."""
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise InvalidInput(f"seq must be an integer, got {value!r}")


def _windows(start_ms: int, end_ms: int) -> Iterator[tuple[int, int]]:
    """``[start, end]`` as consecutive inclusive windows of at most seven days, oldest first."""
    while start_ms <= end_ms:
        stop = min(start_ms + WINDOW_MS, end_ms)
        yield start_ms, stop
        start_ms = stop + 1
