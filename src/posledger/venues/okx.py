"""OKX V5 account reads as plans (see :mod:`posledger.venues.common`): complete snapshots and
normalised fills of one instrument type (``swap`` or ``futures``), or an exception.

The ccxt venues (:mod:`posledger.venues.ccxt`) send these requests through ccxt's implicit API
(``private_get_account_positions`` ...) and hand the raw replies back, so every number is read
as a ``Decimal`` from OKX's own strings and every page is followed. What OKX does differently
from Bybit, and how it is read:

- **Sizes are contracts.** ``pos`` and ``fillSz`` count contracts; a key's size is contracts ×
  the instrument's ``ctVal`` from public instruments, in ``ctValCcy``: base coin for
  USDT/USDC-margined contracts (0.01 BTC per ``BTC-USDT-SWAP`` contract), USD for coin-margined
  ones. That is ccxt's ``contractSize`` (ccxt 4.5.90's ``okx.parse_market`` takes ``ctVal``
  alone, never ``ctMult``), so a bot that records ccxt's ``amount × contractSize`` (its
  ``amount`` on OKX is contracts) and the venue always agree; ``ctMult`` is not applied.
  Positions and fills are converted alike, so they add up.
- **Hedge legs** come from ``posSide`` on positions and on fills: ``net`` → idx 0 (``pos``
  signed), ``long`` → 1, ``short`` → 2 (``pos`` positive).
- **No sequence number.** Rows carry ``uTime`` (kept as ``updated_at``) but nothing like
  Bybit's ``seq``, so staleness is judged by time.
- **Paging by id.** Open orders and fills are paged with ``after`` (the last ``ordId`` /
  ``billId`` read), 100 rows a page, until an empty page; positions and instruments come in
  one reply each.
- **Fees** are negative when paid (``fee`` -0.01); posledger's ``Fill.fee`` is positive when
  paid, so the sign is flipped.
- **Funding is not a fill**: OKX books it as a bill (``type=8``), so funding is not recovered
  from fills (it never changes a size). Fills older than three months are not served by
  ``fills-history``; a read reaching further back is refused rather than cut short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from posledger.core.errors import ExchangeUnavailable, InvalidInput
from posledger.core.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    Side,
    Snapshot,
    positive_decimal,
    to_decimal,
)
from posledger.venues.base import complete_snapshot
from posledger.venues.common import (
    INSTRUMENTS_TTL,
    Call,
    Plan,
    Row,
    covered_symbols,
    parsed_row,
    rejection,
    time_from_ms,
    to_ms,
)

POSITIONS = "/api/v5/account/positions"
PENDING_ORDERS = "/api/v5/trade/orders-pending"
FILLS_HISTORY = "/api/v5/trade/fills-history"
INSTRUMENTS = "/api/v5/public/instruments"

INST_TYPES: Mapping[str, str] = {"swap": "SWAP", "futures": "FUTURES"}
"""posledger category → OKX ``instType``: the derivatives whose positions OKX reports."""

AUTH_CODES = frozenset(
    {
        "50100",
        "50101",
        "50103",
        "50104",
        "50105",
        "50106",
        "50107",
        "50110",
        "50111",
        "50113",
        "50114",
    }
)
"""``code`` s of OKX V5's "API class" that refuse the credentials themselves, raised as
:class:`~posledger.ExchangeAuthFailed`: key frozen (50100), key of the other environment (demo
or live, 50101), a missing or wrong key, passphrase, signature or timestamp header (50103-50107),
IP not in the key's whitelist (50110), invalid key (50111), invalid signature (50113), invalid
authorization (50114). The clock's codes (50102 expired, 50112 invalid timestamp) are not: a
clock can come back in step."""

PAGE = 100
"""The largest page orders-pending and fills-history serve."""

POSITION_IDS_PER_REQUEST = 10
"""account/positions takes at most ten comma-separated ``instId``."""

FILLS_HISTORY_SPAN = timedelta(days=90)
"""fills-history serves the last three months; older fills would be silently missing."""

LEGS: Mapping[str, int] = {"net": 0, "long": 1, "short": 2}
"""OKX ``posSide`` → posledger's ``idx`` (the same numbering as Bybit's ``positionIdx``)."""

SUB_TYPES: Mapping[str, ExecKind] = {
    **dict.fromkeys(("1", "2", "3", "4", "5", "6"), ExecKind.TRADE),
    **dict.fromkeys(("100", "101", "102", "103", "104", "105", "106", "107"), ExecKind.LIQUIDATION),
    **dict.fromkeys(("125", "126", "127", "128"), ExecKind.ADL),
    **dict.fromkeys(("112", "113"), ExecKind.DELIVERY),
}
"""Fill ``subType`` values this reader understands (buy/sell/open/close, liquidation, ADL,
delivery); any other is refused by name, never guessed."""

T = TypeVar("T")


@attrs.frozen
class Instrument:
    """What a read needs of one instrument: the size of a contract (``ctVal``) and the settle
    currency."""

    inst_id: str
    contract_size: Decimal
    settle: str


class OkxReads:
    """OKX V5 reads of one account and instrument type, whatever client sends them. It keeps
    the instruments (contract sizes, settle currencies) for ``instruments_ttl``, and reads them
    again when a row names an instrument it does not know.

    ``symbols`` None covers the whole instrument type, or with ``settle_coin`` the instruments
    settling in it; a list of ``instId`` covers only those.
    """

    def __init__(
        self,
        *,
        venue: str,
        account: str,
        category: str,
        clock: Callable[[], datetime],
        settle_coin: str | None = None,
        symbols: Iterable[str] | None = None,
        instruments_ttl: timedelta = INSTRUMENTS_TTL,
    ) -> None:
        if category not in INST_TYPES:
            raise InvalidInput(
                f"OKX category must be one of {sorted(INST_TYPES)}, not {category!r}: only "
                f"derivative positions are read"
            )
        self.symbols = covered_symbols(symbols)
        self.venue = venue
        self.account = account
        self.category = category
        self.inst_type = INST_TYPES[category]
        self.settle_coin = settle_coin
        self.instruments_ttl = instruments_ttl
        self._clock = clock
        self._instruments: tuple[datetime, Mapping[str, Instrument]] | None = None

    def snapshot(self, taken_at: datetime) -> Plan[Snapshot]:
        """Every position and open order of the covered instruments, as a snapshot taken at
        ``taken_at``."""
        rows: list[Row] = []
        for scope in self._position_scopes():
            rows.extend((yield Call(POSITIONS, "positions", scope))["data"])
        orders = yield from self._read_all("open orders", PENDING_ORDERS, self._inst_type_scope())
        instruments = yield from self._known(taken_at, {_inst_id(row) for row in rows})
        positions = _one_per_leg(
            parsed("position", row, lambda r: position_from_row(r, instruments[_inst_id(r)]))
            for row in rows
        )
        coverage = self._coverage(instruments)
        if coverage is not None:
            positions = [p for p in positions if p.symbol in coverage]
        order_ids = [
            order_id
            for order_id, inst_id in (parsed("open order", row, _order) for row in orders)
            if coverage is None or inst_id in coverage
        ]
        return complete_snapshot(
            "OKX",
            self,
            taken_at=taken_at,
            positions=positions,
            symbols=coverage,
            open_order_ids=order_ids,
        )

    def executions(self, start_ms: int, end_ms: int) -> Plan[list[Fill]]:
        """Every fill in ``[start_ms, end_ms]`` of the covered instruments, oldest first
        (:meth:`Fill.exchange_order`: within a millisecond by ``tradeId``), each
        ``(instId, tradeId)`` once, with ``symbol`` and ``idx`` (from ``posSide``) set."""
        now = self._clock()
        oldest = now - FILLS_HISTORY_SPAN
        if start_ms < to_ms(oldest):
            raise ExchangeUnavailable(
                f"OKX fills-history serves the last {FILLS_HISTORY_SPAN.days} days only (since "
                f"{oldest:%Y-%m-%d %H:%M}): a read from further back would miss older fills"
            )
        rows: list[Row] = []
        # begin/end are widened by a millisecond and the rows filtered here: whether OKX
        # includes the bounds is not documented.
        window = {"begin": str(start_ms - 1), "end": str(end_ms + 1)}
        for scope in self._fill_scopes():
            listed = yield from self._read_all("fills", FILLS_HISTORY, {**scope, **window})
            rows.extend(listed)
        instruments = yield from self._known(now, {_inst_id(row) for row in rows})
        fills = [
            parsed("fill", row, lambda r: fill_from_row(r, instruments[_inst_id(r)].contract_size))
            for row in rows
        ]
        inside = [f for f in fills if start_ms <= to_ms(f.exec_time) <= end_ms]
        return sorted(_deduplicated(inside), key=Fill.exchange_order)

    def _coverage(self, instruments: Mapping[str, Instrument]) -> frozenset[str] | None:
        """The instruments the snapshot speaks for: the listed ones, the ones settling in
        ``settle_coin``, or (None) the whole instrument type."""
        if self.symbols is not None:
            return frozenset(self.symbols)
        if self.settle_coin is None:
            return None
        return frozenset(i.inst_id for i in instruments.values() if i.settle == self.settle_coin)

    def _inst_type_scope(self) -> dict[str, Any]:
        return {"instType": self.inst_type}

    def _position_scopes(self) -> list[dict[str, Any]]:
        if self.symbols is None:
            return [self._inst_type_scope()]
        step = POSITION_IDS_PER_REQUEST
        return [
            {**self._inst_type_scope(), "instId": ",".join(self.symbols[i : i + step])}
            for i in range(0, len(self.symbols), step)
        ]

    def _fill_scopes(self) -> list[dict[str, Any]]:
        if self.symbols is None:
            return [self._inst_type_scope()]
        return [{**self._inst_type_scope(), "instId": symbol} for symbol in self.symbols]

    def _read_all(self, what: str, endpoint: str, query: Mapping[str, Any]) -> Plan[list[Row]]:
        """Every page of a listing paged by ``after`` (the last row's id), newest first, up to
        an empty page; an id that does not move on means the listing would never end."""
        id_field = "billId" if endpoint == FILLS_HISTORY else "ordId"
        rows: list[Row] = []
        after: str | None = None
        seen: set[str] = set()
        while True:
            paged = {**query, "limit": str(PAGE)}
            if after is not None:
                paged["after"] = after
            page = (yield Call(endpoint, what, paged))["data"]
            if not page:
                return rows
            rows.extend(page)
            after = parsed(what, page[-1], lambda row: _id(row, id_field))
            if after in seen:
                raise ExchangeUnavailable(f"OKX {what}: page after {after!r} came back again")
            seen.add(after)

    def _known(self, now: datetime, named: set[str]) -> Plan[Mapping[str, Instrument]]:
        """The instruments, read again when stale or when a row names one not yet known; an
        instrument OKX does not list has no contract size, so the read fails."""
        cached = self._instruments
        if cached is None or now - cached[0] >= self.instruments_ttl or named - cached[1].keys():
            query = self._inst_type_scope()
            listed = (yield Call(INSTRUMENTS, "instruments", query))["data"]
            by_id = {i.inst_id: i for i in (parsed("instrument", r, instrument) for r in listed)}
            cached = self._instruments = (now, by_id)
        unknown = named - cached[1].keys()
        if unknown:
            raise ExchangeUnavailable(
                f"OKX lists {self.inst_type} rows on {sorted(unknown)}, which public/instruments "
                f"does not list: their contract value is unknown"
            )
        return cached[1]


def checked_reply(what: str, reply: Any) -> Row:
    """An OKX V5 reply with ``code`` "0" and a ``data`` list, or an exception: a body without
    ``code`` or ``data`` is not an empty answer."""
    if not isinstance(reply, Mapping):
        raise ExchangeUnavailable(f"OKX {what}: reply is not a JSON object: {reply!r:.200}")
    if "code" not in reply:
        raise ExchangeUnavailable(f"OKX {what}: reply has no code: {reply!r:.200}")
    code = reply["code"]
    if code != "0":
        raise rejection(f"OKX {what}: code {code!r}: {reply.get('msg')}", code, AUTH_CODES)
    data = reply.get("data")
    if not isinstance(data, list):
        raise ExchangeUnavailable(f"OKX {what}: reply has no data list: {reply!r:.200}")
    for row in data:
        if not isinstance(row, Mapping):
            raise ExchangeUnavailable(f"OKX {what}: a listed row is not an object: {row!r:.200}")
    return reply


def parsed(what: str, row: Row, parse: Callable[[Row], T]) -> T:
    """A value from one row; any missing or malformed field fails the whole read."""
    return parsed_row("OKX", what, row, parse)


def instrument(row: Row) -> Instrument:
    """A public/instruments row: a contract is ``ctVal`` (in ``ctValCcy``), ccxt's
    ``contractSize``, the unit bots record sizes in; ``ctMult`` is not applied (docs/ccxt.md)."""
    return Instrument(
        inst_id=_text(row, "instId"),
        contract_size=positive_decimal(row["ctVal"], "ctVal"),
        settle=_text(row, "settleCcy"),
    )


def position_from_row(row: Row, instrument: Instrument) -> ExchangePosition:
    """An account/positions row: ``pos`` contracts × ``ctVal``. In net mode ``pos`` is signed; a
    long or short leg holds a positive ``pos`` on its own side. ``pos`` 0 is a flat row."""
    idx = _leg(row)
    contracts = to_decimal(row["pos"], "pos")
    if idx == 0:
        side = Side.BUY if contracts > 0 else Side.SELL if contracts < 0 else None
    elif contracts < 0:
        raise InvalidInput(f"pos of a {row['posSide']} leg must not be negative, got {contracts}")
    else:
        side = (Side.BUY if idx == 1 else Side.SELL) if contracts else None
    return ExchangePosition(
        symbol=instrument.inst_id,
        idx=idx,
        side=side,
        size=abs(contracts) * instrument.contract_size,
        avg_price=(row.get("avgPx") or None) if contracts else None,
        updated_at=time_from_ms(row.get("uTime")),
    )


def fill_from_row(row: Row, contract_size: Decimal) -> Fill:
    """A fills-history row as a Fill: ``fillSz`` contracts × ``ctVal``, the fee's sign flipped
    (OKX: negative = paid), the leg from ``posSide``; an unknown ``subType`` is refused."""
    sub_type = row["subType"]
    kind = SUB_TYPES.get(sub_type)
    if kind is None:
        raise ExchangeUnavailable(
            f"OKX fill {row.get('tradeId')!r} has subType {sub_type!r}, which posledger does "
            f"not know; refusing to guess what it did to the position"
        )
    return Fill(
        exec_id=row["tradeId"],
        order_id=row["ordId"],
        side=row["side"],
        qty=positive_decimal(row["fillSz"], "fillSz") * contract_size,
        price=row["fillPx"],
        fee=-to_decimal(row["fee"], "fee"),
        exec_time=time_from_ms(row["ts"]),
        kind=kind,
        symbol=row["instId"],
        idx=_leg(row),
    )


def _leg(row: Row) -> int:
    pos_side = row["posSide"]
    if pos_side not in LEGS:
        raise InvalidInput(f"posSide must be one of {sorted(LEGS)}, got {pos_side!r}")
    return LEGS[pos_side]


def _one_per_leg(positions: Iterable[ExchangePosition]) -> list[ExchangePosition]:
    """One row per leg. OKX can list a ``pos`` 0 row (isolated margin) beside the real one, which
    is dropped; two held rows on one leg (cross and isolated margin at once) are refused, as
    one key cannot hold both."""
    legs: dict[tuple[str, int], ExchangePosition] = {}
    for position in positions:
        leg = (position.symbol, position.idx)
        held = legs.get(leg)
        if held is None or not held.size:
            legs[leg] = position
        elif position.size:
            raise ExchangeUnavailable(
                f"OKX lists two held positions on {position.symbol} {position.idx} (cross and "
                f"isolated margin?): posledger keeps one position per leg"
            )
    return list(legs.values())


def _deduplicated(fills: list[Fill]) -> Iterator[Fill]:
    """Each ``(instId, tradeId)`` once (``tradeId`` is unique per instrument only); the same
    one with a different payload is an inconsistent read, not something to pick from."""
    seen: dict[tuple[str | None, str], Fill] = {}
    for fill in fills:
        first = seen.setdefault((fill.symbol, fill.exec_id), fill)
        if first is fill:
            yield fill
        elif first.payload() != fill.payload() or first.idx != fill.idx:
            raise ExchangeUnavailable(
                f"OKX listed trade {fill.exec_id} of {fill.symbol} twice with different "
                f"payloads: {first.payload()} and {fill.payload()}"
            )


def _inst_id(row: Row) -> str:
    return parsed("row", row, lambda r: _text(r, "instId"))


def _order(row: Row) -> tuple[str, str]:
    return _id(row, "ordId"), _text(row, "instId")


def _id(row: Row, name: str) -> str:
    value = _text(row, name)
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a string of digits, got {value!r}")
    return value


def _text(row: Row, name: str) -> str:
    value = row[name]
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
    return value
