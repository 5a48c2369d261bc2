"""OKX V5 account reads as plans (see :mod:`posledger.venues.common`): complete snapshots and
normalised fills of one category, or an exception. The categories are ``swap`` and ``futures``
(USDT- and USDC-margined perpetual swaps and futures) and ``inverse`` (the coin-margined ones,
``ctType`` inverse in public/instruments, swaps and futures together: docs/design.md#inverse).

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
- **Contract types** come from public/instruments: a row of an instrument another category owns
  (a coin-margined swap read as ``swap``) is left to that category, and a snapshot covers
  exactly the listed instruments its category owns, so no snapshot judges another's key.
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

from posledger.core.contract import INVERSE
from posledger.core.errors import (
    ExchangeMalformed,
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
    positive_decimal,
    to_decimal,
)
from posledger.core.money import MoneyRecord
from posledger.venues.base import complete_snapshot
from posledger.venues.common import (
    INSTRUMENTS_TTL,
    Call,
    Plan,
    Row,
    covered_symbols,
    parsed_row,
    refuse_older_than,
    rejection,
    time_from_ms,
    to_ms,
    unique_records,
)
from posledger.venues.okx_money import (
    POSITIONS_HISTORY_SPAN,
    history_from_row,
    leg,
    position_history,
)

POSITIONS = "/api/v5/account/positions"
PENDING_ORDERS = "/api/v5/trade/orders-pending"
FILLS_HISTORY = "/api/v5/trade/fills-history"
INSTRUMENTS = "/api/v5/public/instruments"

INST_TYPES: Mapping[str, tuple[str, ...]] = {
    "swap": ("SWAP",),
    "futures": ("FUTURES",),
    INVERSE: ("SWAP", "FUTURES"),
}
"""posledger category → the OKX ``instType`` s it reads: the derivatives whose positions OKX
reports. ``swap`` and ``futures`` keep their linear instruments, ``inverse`` the coin-margined
ones of both types (``ctType`` in :data:`CONTRACT_TYPES`)."""

CONTRACT_TYPES = ("linear", "inverse")
"""public/instruments ``ctType`` of swaps and futures; any other is refused, never guessed."""

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


SUB_TYPES: Mapping[str, ExecKind] = {
    **dict.fromkeys(("1", "2", "3", "4", "5", "6"), ExecKind.TRADE),
    **dict.fromkeys(("100", "101", "102", "103", "104", "105", "106", "107"), ExecKind.LIQUIDATION),
    **dict.fromkeys(("125", "126", "127", "128"), ExecKind.ADL),
    **dict.fromkeys(("112", "113"), ExecKind.DELIVERY),
    **dict.fromkeys(("204", "205", "206", "207", "208", "209"), ExecKind.BLOCK_TRADE),
    **dict.fromkeys(("270", "271", "272", "273", "274", "275"), ExecKind.SPREAD_TRADE),
    **dict.fromkeys(("324", "325", "326", "327", "328", "329"), ExecKind.MOVE_POSITION),
}
"""Fill ``subType`` values that move a derivatives position, and what each is
(docs/design.md#exec-types)."""

NOT_POSITION_FILLS = frozenset(
    {"110", "111", "118", "119", "212", "213", "236", "237", "376", "377"}
    | {"410", "411", "412", "413", "414", "415"}
)
"""Documented ``subType`` values that move no swap or futures position: currency conversions
in a liquidation (110/111), system token conversions (118/119), quick-margin borrowing and
repayment (212/213), easy convert (236/237), collateralized-borrowing conversions (376/377) and
event contracts (410-415). A fills read skips them. Any other value is of kind ``unknown``: it
moves size by its signed quantity, keeps its raw ``subType`` and is flagged."""

T = TypeVar("T")


@attrs.frozen
class Instrument:
    """What a read needs of one instrument: the size of a contract (``ctVal``), the settle
    currency, and whether it is coin-margined (``ctType`` inverse)."""

    inst_id: str
    contract_size: Decimal
    settle: str
    inverse: bool = False


class OkxReads:
    """OKX V5 reads of one account and instrument type, whatever client sends them. It keeps
    the instruments (contract sizes, settle currencies) for ``instruments_ttl``, and reads them
    again when a row names an instrument it does not know.

    ``symbols`` None covers the category's listed instruments, or with ``settle_coin`` those
    settling in it; a list of ``instId`` covers only those (an instrument of another category is
    refused).
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
        self.inst_types = INST_TYPES[category]
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
        orders: list[Row] = []
        for inst_type in self.inst_types:
            scope = {"instType": inst_type}
            orders.extend((yield from self._read_all("open orders", PENDING_ORDERS, scope)))
        instruments = yield from self._known(taken_at, {_inst_id(row) for row in rows})
        coverage = self._coverage(instruments)
        positions = _one_per_leg(
            parsed("position", row, lambda r: position_from_row(r, instruments[_inst_id(r)]))
            for row in rows
            if _inst_id(row) in coverage
        )
        order_ids = [
            order_id
            for order_id, inst_id in (parsed("open order", row, _order) for row in orders)
            if inst_id in coverage
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
        rows = [row for row in rows if row.get("subType") not in NOT_POSITION_FILLS]
        instruments = yield from self._known(now, {_inst_id(row) for row in rows})
        fills = [
            parsed("fill", row, lambda r: fill_from_row(r, instruments[_inst_id(r)].contract_size))
            for row in rows
            if self._owns(instruments[_inst_id(row)])
        ]
        inside = [f for f in fills if start_ms <= to_ms(f.exec_time) <= end_ms]
        return sorted(_deduplicated(inside), key=Fill.exchange_order)

    def money(self, start_ms: int, end_ms: int) -> Plan[list[MoneyRecord]]:
        """Every positions-history record of the covered instruments updated in ``[start_ms,
        end_ms]`` (docs/money.md), oldest first, each once, on its leg (``posSide``), sizes in
        contracts × ``ctVal``. A read reaching past the three months OKX serves is refused."""
        now = self._clock()
        refuse_older_than("OKX", "positions-history", start_ms, now, POSITIONS_HISTORY_SPAN)
        rows: list[Row] = []
        for scope in self._fill_scopes():
            rows.extend((yield from position_history(scope, start_ms, end_ms)))
        instruments = yield from self._known(now, {_inst_id(row) for row in rows})
        coverage = self._coverage(instruments)
        records = [
            parsed("positions history", row, lambda r: self._history(r, instruments))
            for row in rows
            if _inst_id(row) in coverage
        ]
        inside = [r for r in records if start_ms <= to_ms(r.closed_at) <= end_ms]
        return unique_records("OKX", inside)

    def _history(self, row: Row, instruments: Mapping[str, Instrument]) -> MoneyRecord:
        return history_from_row(
            row,
            venue=self.venue,
            account=self.account,
            category=self.category,
            contract_size=instruments[_inst_id(row)].contract_size,
        )

    def _coverage(self, instruments: Mapping[str, Instrument]) -> frozenset[str]:
        """The instruments the snapshot speaks for: the listed ones, or the category's own
        (those settling in ``settle_coin`` if given). Never None: the instrument types hold the
        other categories' instruments too, whose keys this read must not judge."""
        if self.symbols is not None:
            foreign = [
                s for s in self.symbols if s in instruments and not self._owns(instruments[s])
            ]
            if foreign:
                raise InvalidInput(
                    f"OKX lists {foreign} as {'linear' if self.inverse else 'coin-margined'} "
                    f"instruments, which category {self.category!r} does not read"
                )
            return frozenset(self.symbols)
        return frozenset(
            i.inst_id
            for i in instruments.values()
            if self._owns(i) and self.settle_coin in (None, i.settle)
        )

    @property
    def inverse(self) -> bool:
        """Whether this read is of the coin-margined instruments (category ``inverse``)."""
        return self.category == INVERSE

    def _owns(self, instrument: Instrument) -> bool:
        """Whether the instrument is of this category: coin-margined ones are ``inverse``'s."""
        return instrument.inverse == self.inverse

    def _inst_type_of(self, inst_id: str) -> str:
        """The ``instType`` of one of the category's instruments, by OKX's naming where the
        category reads two (``BTC-USD-SWAP`` a swap, ``BTC-USD-251226`` a future)."""
        if len(self.inst_types) == 1:
            return self.inst_types[0]
        return "SWAP" if inst_id.endswith("-SWAP") else "FUTURES"

    def _position_scopes(self) -> list[dict[str, Any]]:
        if self.symbols is None:
            return [{"instType": inst_type} for inst_type in self.inst_types]
        step = POSITION_IDS_PER_REQUEST
        scopes: list[dict[str, Any]] = []
        for inst_type in self.inst_types:
            ids = [s for s in self.symbols if self._inst_type_of(s) == inst_type]
            scopes.extend(
                {"instType": inst_type, "instId": ",".join(ids[i : i + step])}
                for i in range(0, len(ids), step)
            )
        return scopes

    def _fill_scopes(self) -> list[dict[str, Any]]:
        if self.symbols is None:
            return [{"instType": inst_type} for inst_type in self.inst_types]
        return [{"instType": self._inst_type_of(s), "instId": s} for s in self.symbols]

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
                raise ExchangeTruncated(f"OKX {what}: page after {after!r} came back again")
            seen.add(after)

    def _known(self, now: datetime, named: set[str]) -> Plan[Mapping[str, Instrument]]:
        """The instruments, read again when stale or when a row names one not yet known; an
        instrument OKX does not list has no contract size, so the read fails."""
        cached = self._instruments
        if cached is None or now - cached[0] >= self.instruments_ttl or named - cached[1].keys():
            listed: list[Row] = []
            for inst_type in self.inst_types:
                listed.extend(
                    (yield Call(INSTRUMENTS, "instruments", {"instType": inst_type}))["data"]
                )
            by_id = {i.inst_id: i for i in (parsed("instrument", r, instrument) for r in listed)}
            cached = self._instruments = (now, by_id)
        unknown = named - cached[1].keys()
        if unknown:
            raise ExchangeUnavailable(
                f"OKX lists {'/'.join(self.inst_types)} rows on {sorted(unknown)}, which "
                f"public/instruments does not list: their contract value is unknown"
            )
        return cached[1]


def checked_reply(what: str, reply: Any) -> Row:
    """An OKX V5 reply with ``code`` "0" and a ``data`` list, or an exception: a body without
    ``code`` or ``data`` is not an empty answer."""
    if not isinstance(reply, Mapping):
        raise ExchangeMalformed(f"OKX {what}: reply is not a JSON object: {reply!r:.200}")
    if "code" not in reply:
        raise ExchangeMalformed(f"OKX {what}: reply has no code: {reply!r:.200}")
    code = reply["code"]
    if code != "0":
        raise rejection(f"OKX {what}: code {code!r}: {reply.get('msg')}", code, AUTH_CODES)
    data = reply.get("data")
    if not isinstance(data, list):
        raise ExchangeMalformed(f"OKX {what}: reply has no data list: {reply!r:.200}")
    for row in data:
        if not isinstance(row, Mapping):
            raise ExchangeMalformed(f"OKX {what}: a listed row is not an object: {row!r:.200}")
    return reply


def parsed(what: str, row: Row, parse: Callable[[Row], T]) -> T:
    """A value from one row; any missing or malformed field fails the whole read."""
    return parsed_row("OKX", what, row, parse)


def instrument(row: Row) -> Instrument:
    """A public/instruments row: a contract is ``ctVal`` (in ``ctValCcy``), ccxt's
    ``contractSize``, the unit bots record sizes in; ``ctMult`` is not applied (docs/ccxt.md)."""
    return Instrument(
        inverse=_contract_type(row) == INVERSE,
        inst_id=_text(row, "instId"),
        contract_size=positive_decimal(row["ctVal"], "ctVal"),
        settle=_text(row, "settleCcy"),
    )


def position_from_row(row: Row, instrument: Instrument) -> ExchangePosition:
    """An account/positions row: ``pos`` contracts × ``ctVal``. In net mode ``pos`` is signed; a
    long or short leg holds a positive ``pos`` on its own side. ``pos`` 0 is a flat row."""
    idx = leg(row)
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
    (OKX: negative = paid), the leg from ``posSide``; a ``subType`` not in :data:`SUB_TYPES` is
    of kind ``unknown``, its raw value kept in ``venue_type``. ``ordId`` is "" for block trades."""
    sub_type = _text(row, "subType")
    return Fill(
        exec_id=row["tradeId"],
        order_id=row["ordId"],
        side=row["side"],
        qty=positive_decimal(row["fillSz"], "fillSz") * contract_size,
        price=row["fillPx"],
        fee=-to_decimal(row["fee"], "fee"),
        exec_time=time_from_ms(row["ts"]),
        kind=SUB_TYPES.get(sub_type, ExecKind.UNKNOWN),
        symbol=row["instId"],
        idx=leg(row),
        venue_type=sub_type,
    )


def _contract_type(row: Row) -> str:
    contract_type = row["ctType"]
    if contract_type not in CONTRACT_TYPES:
        raise InvalidInput(f"ctType must be one of {CONTRACT_TYPES}, got {contract_type!r}")
    return str(contract_type)


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
