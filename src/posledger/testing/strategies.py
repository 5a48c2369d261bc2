"""Hypothesis strategies for property-testing bots built on posledger.

Everything drawn here is what an exchange could report: quantities, prices and fees are
``Decimal`` (never ``float``), times are timezone-aware UTC ``datetime``, and keys are one-way
(``idx`` 0) or a hedge-mode leg (``idx`` 1 long, ``idx`` 2 short). The building blocks are
:func:`decimals_qty`, :func:`prices`, :func:`fees`, :func:`utc_datetimes`, :func:`position_keys`,
:func:`fills`, :func:`exchange_positions` and :func:`snapshots`; :func:`exchange_histories` draws
a whole scripted exchange session (requests, partial and full executions, order-less
liquidations, funding, cancellations) together with the exchange's true positions after every
step, so a test can feed any part of it to a ledger (or to a bot) and compare with the truth::

    from hypothesis import given
    from posledger import Ledger
    from posledger.testing.strategies import exchange_histories

    @given(exchange_histories())
    def test_the_ledger_follows_the_exchange(history):
        with Ledger.open("memory://") as ledger:
            for step in history.steps:
                step.apply(ledger)                      # tell the ledger everything
            for key, size in history.positions().items():
                position = ledger.position(key)
                assert (position.signed_size if position else 0) == size

Skip some ``Executed`` steps and reconcile with ``history.snapshot()`` to test recovery from
missed executions; reconcile ``history.snapshot(i)`` for an earlier ``i`` to test stale reads.
The exchange model behind the histories, :class:`SimulatedExchange`, is public for stateful
tests that drive an exchange step by step themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st

from posledger.core.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    PositionKey,
    Side,
    Snapshot,
)
from posledger.ledger import Ledger

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_SYMBOLS",
    "ExchangeHistory",
    "ExchangeStep",
    "Executed",
    "OrderCancelled",
    "OrderPlaced",
    "SimulatedExchange",
    "WorkingOrder",
    "decimals_qty",
    "exchange_histories",
    "exchange_positions",
    "fees",
    "fills",
    "position_keys",
    "prices",
    "snapshots",
    "utc_datetimes",
]

ZERO = Decimal(0)
_T = TypeVar("_T")
DEFAULT_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
"""Symbols drawn when a strategy is not given its own."""

_EPOCH_MIN = datetime(2020, 1, 1)
_EPOCH_MAX = datetime(2035, 12, 31)
_HEDGE_SIDE = {1: Side.BUY, 2: Side.SELL}


def _dec(value: Decimal | int | str) -> Decimal:
    if isinstance(value, float):
        raise TypeError("pass Decimal, int or str bounds, never float")
    return Decimal(value)


# --- numbers and times ---------------------------------------------------------------------


def decimals_qty(
    *,
    min_value: Decimal | int | str = "0.001",
    max_value: Decimal | int | str = "1000",
    places: int = 3,
) -> st.SearchStrategy[Decimal]:
    """Positive order/execution quantities with exactly ``places`` decimal places (a lot step of
    ``10**-places``), between ``min_value`` and ``max_value`` inclusive."""
    low, high = _dec(min_value), _dec(max_value)
    if low <= 0:
        raise ValueError(f"quantities are > 0; min_value={low}")
    return st.decimals(
        min_value=low, max_value=high, places=places, allow_nan=False, allow_infinity=False
    )


def prices(
    *,
    min_value: Decimal | int | str = "0.0001",
    max_value: Decimal | int | str = "100000",
    places: int = 4,
) -> st.SearchStrategy[Decimal]:
    """Positive, finite prices with ``places`` decimal places (a tick of ``10**-places``)."""
    low, high = _dec(min_value), _dec(max_value)
    if low <= 0:
        raise ValueError(f"prices are > 0; min_value={low}")
    return st.decimals(
        min_value=low, max_value=high, places=places, allow_nan=False, allow_infinity=False
    )


def fees(
    *,
    min_value: Decimal | int | str = "-1",
    max_value: Decimal | int | str = "10",
    places: int = 8,
) -> st.SearchStrategy[Decimal]:
    """Finite fees; negative values are maker rebates (or funding received) and are valid."""
    return st.decimals(
        min_value=_dec(min_value),
        max_value=_dec(max_value),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )


def utc_datetimes(
    *, min_value: datetime = _EPOCH_MIN, max_value: datetime = _EPOCH_MAX
) -> st.SearchStrategy[datetime]:
    """Timezone-aware UTC datetimes (bounds are naive or aware; aware ones are taken as UTC)."""
    return st.datetimes(
        min_value=_naive_utc(min_value),
        max_value=_naive_utc(max_value),
        timezones=st.just(UTC),
    ).map(lambda value: value.replace(fold=0))


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


# --- keys, fills, exchange rows ------------------------------------------------------------


def position_keys(
    *,
    venue: str = "bybit",
    account: str = "main",
    category: str = "linear",
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = False,
) -> st.SearchStrategy[PositionKey]:
    """Keys of one venue/account/category. ``hedge`` False draws one-way keys (``idx`` 0), True
    hedge-mode legs (``idx`` 1 or 2), None either."""
    if not symbols:
        raise ValueError("symbols must not be empty")
    idxs = _idxs(hedge)
    return st.builds(
        PositionKey,
        venue=st.just(venue),
        account=st.just(account),
        category=st.just(category),
        symbol=st.sampled_from(tuple(symbols)),
        idx=st.sampled_from(idxs),
    )


def _idxs(hedge: bool | None) -> tuple[int, ...]:
    if hedge is None:
        return (0, 1, 2)
    return (1, 2) if hedge else (0,)


@st.composite
def _fills(
    draw: st.DrawFn,
    key: PositionKey | None,
    side: Side | None,
    kinds: Sequence[ExecKind],
    order_id: str | None,
    exec_times: st.SearchStrategy[datetime],
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
    fee_values: st.SearchStrategy[Decimal],
    with_seq: bool,
    with_leg: bool,
) -> Fill:
    kind = draw(st.sampled_from(tuple(kinds)))
    if side is None:
        leg = key.leg_side if key is not None else None
        if kind is ExecKind.FUNDING and leg is not None:
            side = leg
        else:
            side = draw(st.sampled_from((Side.BUY, Side.SELL)))
    exec_id = draw(st.uuids().map(lambda u: f"e-{u.hex[:16]}"))
    if order_id is None:
        order_id = (
            ""
            if kind is not ExecKind.TRADE
            else draw(st.one_of(st.just(""), st.integers(1, 10**6).map(lambda n: f"o-{n}")))
        )
    leaves = draw(st.none() | st.just(ZERO) | quantities)
    return Fill(
        exec_id=exec_id,
        order_id=order_id,
        side=side,
        qty=draw(quantities),
        price=draw(price_values),
        fee=draw(fee_values),
        exec_time=draw(exec_times),
        seq=draw(st.integers(1, 2**40)) if with_seq else None,
        kind=kind,
        leaves_qty=None if kind is ExecKind.FUNDING else leaves,
        symbol=key.symbol if key is not None and with_leg else None,
        idx=key.idx if key is not None and with_leg else None,
    )


def fills(
    key: PositionKey | None = None,
    *,
    side: Side | None = None,
    kinds: Sequence[ExecKind | str] = (ExecKind.TRADE,),
    order_id: str | None = None,
    exec_times: st.SearchStrategy[datetime] | None = None,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
    fee_values: st.SearchStrategy[Decimal] | None = None,
    with_seq: bool = True,
    with_leg: bool = True,
) -> st.SearchStrategy[Fill]:
    """Single executions with random ``exec_id`` (``e-`` + 16 hex digits: distinct in practice,
    not guaranteed; use ``st.lists(..., unique_by=lambda f: f.exec_id)`` to be sure).

    ``key``, when given, stamps ``symbol``/``idx`` on the fill (``with_leg``) and, for a hedge
    leg, makes funding executions carry the leg's side. ``side``/``order_id`` fix those fields;
    ``kinds`` limits the execution kinds (trades by default; add ``"funding"``, ``"adl"``, …).
    ``leaves_qty`` is drawn as unknown (None), 0 (order complete) or a positive remainder.
    """
    parsed = tuple(ExecKind.parse(kind) for kind in kinds)
    if not parsed:
        raise ValueError("kinds must not be empty")
    return _fills(
        key,
        side,
        parsed,
        order_id,
        exec_times if exec_times is not None else utc_datetimes(),
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
        fee_values if fee_values is not None else fees(),
        with_seq,
        with_leg,
    )


@st.composite
def _exchange_positions(
    draw: st.DrawFn,
    symbols: tuple[str, ...],
    idxs: tuple[int, ...],
    allow_flat: bool,
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> ExchangePosition:
    symbol = draw(st.sampled_from(symbols))
    idx = draw(st.sampled_from(idxs))
    return _row(draw, symbol, idx, allow_flat, quantities, price_values)


def _row(
    draw: st.DrawFn,
    symbol: str,
    idx: int,
    allow_flat: bool,
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> ExchangePosition:
    flat = allow_flat and draw(st.booleans())
    side = None if flat else _HEDGE_SIDE.get(idx) or draw(st.sampled_from((Side.BUY, Side.SELL)))
    return ExchangePosition(
        symbol=symbol,
        idx=idx,
        side=side,
        size=ZERO if flat else draw(quantities),
        avg_price=None if flat else draw(st.none() | price_values),
        seq=draw(st.none() | st.integers(1, 2**40)),
        updated_at=draw(st.none() | utc_datetimes()),
    )


def exchange_positions(
    *,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = False,
    allow_flat: bool = True,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
) -> st.SearchStrategy[ExchangePosition]:
    """One exchange row. Hedge legs hold their own side (``idx`` 1 buy, 2 sell); a flat row
    (``allow_flat``) has size 0 and no side, as Bybit reports a position queried by symbol."""
    if not symbols:
        raise ValueError("symbols must not be empty")
    return _exchange_positions(
        tuple(symbols),
        _idxs(hedge),
        allow_flat,
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
    )


@st.composite
def _snapshots(
    draw: st.DrawFn,
    venue: str,
    account: str,
    category: str,
    symbols: tuple[str, ...],
    hedge: bool | None,
    taken_at: st.SearchStrategy[datetime],
    partial: bool,
    open_order_ids: st.SearchStrategy[frozenset[str] | None],
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> Snapshot:
    if partial and draw(st.booleans()):
        covered: frozenset[str] | None = frozenset(
            draw(st.lists(st.sampled_from(symbols), min_size=1, unique=True))
        )
    else:
        covered = None
    rows = []
    for symbol in symbols:
        if covered is not None and symbol not in covered:
            continue
        in_hedge = draw(st.booleans()) if hedge is None else hedge
        for idx in (1, 2) if in_hedge else (0,):
            if draw(st.booleans()):  # listed (open, or an explicit flat row) or omitted (flat)
                rows.append(_row(draw, symbol, idx, True, quantities, price_values))
    return Snapshot(
        venue=venue,
        account=account,
        category=category,
        taken_at=draw(taken_at),
        positions=rows,
        symbols=covered,
        open_order_ids=draw(open_order_ids),
    )


def snapshots(
    *,
    venue: str = "bybit",
    account: str = "main",
    category: str = "linear",
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = None,
    taken_at: st.SearchStrategy[datetime] | None = None,
    partial: bool = True,
    open_order_ids: st.SearchStrategy[frozenset[str] | None] | None = None,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
) -> st.SearchStrategy[Snapshot]:
    """Complete, successful reads of one venue/account/category.

    Each symbol is one-way (one row, ``idx`` 0) or hedge mode (two legs), per ``hedge``
    (None: drawn per symbol). A row is open, an explicit flat row, or omitted (flat), as Bybit
    omits flat positions from a category-wide read. With ``partial`` the snapshot may cover a
    listed subset of ``symbols`` only (``Snapshot.symbols``), listing no row outside it.
    ``open_order_ids`` defaults to "not reported" (None) or a few ``o-N`` ids.
    """
    if not symbols:
        raise ValueError("symbols must not be empty")
    orders = (
        open_order_ids
        if open_order_ids is not None
        else st.none() | st.frozensets(st.integers(1, 50).map(lambda n: f"o-{n}"), max_size=5)
    )
    return _snapshots(
        venue,
        account,
        category,
        tuple(dict.fromkeys(symbols)),
        hedge,
        taken_at if taken_at is not None else utc_datetimes(),
        partial,
        orders,
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
    )


# --- whole exchange histories --------------------------------------------------------------


@attrs.frozen
class OrderPlaced:
    """The bot submitted an order: ``reduce_only`` ones are exits (``Ledger.request_exit``)."""

    key: PositionKey
    order_id: str
    side: Side
    qty: Decimal
    reduce_only: bool
    price: Decimal | None = None


@attrs.frozen
class Executed:
    """The exchange executed (part of) an order, an order-less liquidation/ADL, or funding."""

    key: PositionKey
    fill: Fill


@attrs.frozen
class OrderCancelled:
    """A working order ended without (full) fill."""

    key: PositionKey
    order_id: str
    status: str


Action = OrderPlaced | Executed | OrderCancelled


@attrs.frozen(eq=False)
class ExchangeStep:
    """One thing that happened on the exchange, and the exchange's truth right after it.

    ``positions`` maps every key touched so far to its signed size (long > 0, short < 0, flat 0);
    ``avg_prices`` its average entry price (open keys only); ``seqs`` the ``seq`` of the key's
    last size-changing execution; ``open_order_ids`` the orders still working. ``note`` is what
    ``exchange_histories(notes=...)`` drew for this step (None without ``notes``).
    """

    at: datetime
    action: Action
    positions: Mapping[PositionKey, Decimal]
    avg_prices: Mapping[PositionKey, Decimal]
    seqs: Mapping[PositionKey, int]
    open_order_ids: frozenset[str]
    note: Any = None

    def apply(self, ledger: Ledger) -> None:
        """Tell ``ledger`` about this step, as a bot that sees everything would."""
        action = self.action
        if isinstance(action, OrderPlaced):
            if action.reduce_only:
                ledger.request_exit(
                    action.key,
                    order_id=action.order_id,
                    qty=action.qty,
                    side=action.side,
                    price=action.price,
                    at=self.at,
                )
            else:
                ledger.request_open(
                    action.key,
                    order_id=action.order_id,
                    side=action.side,
                    qty=action.qty,
                    price=action.price,
                    at=self.at,
                )
        elif isinstance(action, Executed):
            ledger.record_fill(action.key, action.fill)
        else:
            ledger.record_order_end(
                action.key, order_id=action.order_id, status=action.status, at=self.at
            )


@attrs.frozen(eq=False)
class ExchangeHistory:
    """A scripted exchange session of one venue/account/category, oldest step first."""

    venue: str
    account: str
    category: str
    keys: tuple[PositionKey, ...]
    start: datetime
    steps: tuple[ExchangeStep, ...]

    def positions(self, index: int | None = None) -> dict[PositionKey, Decimal]:
        """Signed true size of every key after step ``index`` (default: the last step; before
        any step every key is flat)."""
        sizes = dict.fromkeys(self.keys, ZERO)
        if self.steps:
            sizes.update(self.steps[-1 if index is None else index].positions)
        return sizes

    def executions(self) -> list[tuple[PositionKey, Fill]]:
        """Every execution (trades, liquidations, ADL, funding) with its key, in order."""
        return [
            (step.action.key, step.action.fill)
            for step in self.steps
            if isinstance(step.action, Executed)
        ]

    def snapshot(
        self,
        index: int | None = None,
        *,
        symbols: Iterable[str] | None = None,
        report_open_orders: bool = True,
        flat_rows: bool = False,
        with_seq: bool = True,
    ) -> Snapshot:
        """What a complete read of the exchange right after step ``index`` returns (default: the
        last step), taken at that step's time. ``symbols`` restricts the coverage; open positions
        are listed and flat ones omitted (``flat_rows`` lists them with size 0). Rows carry the
        key's last execution ``seq`` unless ``with_seq`` is False (a venue without one)."""
        if self.steps:
            step: ExchangeStep | None = self.steps[-1 if index is None else index]
        else:
            step = None
        covered = None if symbols is None else frozenset(symbols)
        rows = []
        for key in self.keys:
            if covered is not None and key.symbol not in covered:
                continue
            size = step.positions.get(key, ZERO) if step is not None else ZERO
            if size == 0 and not flat_rows:
                continue
            rows.append(
                ExchangePosition(
                    symbol=key.symbol,
                    idx=key.idx,
                    side=None if size == 0 else Side.BUY if size > 0 else Side.SELL,
                    size=abs(size),
                    avg_price=step.avg_prices.get(key) if step is not None else None,
                    seq=step.seqs.get(key) if step is not None and with_seq else None,
                )
            )
        orders = step.open_order_ids if step is not None else frozenset()
        return Snapshot(
            venue=self.venue,
            account=self.account,
            category=self.category,
            taken_at=step.at if step is not None else self.start,
            positions=rows,
            symbols=covered,
            open_order_ids=orders if report_open_orders else None,
        )


DEFAULT_KEYS: tuple[PositionKey, ...] = (
    PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT", idx=0),
    PositionKey(venue="bybit", account="main", category="linear", symbol="SOLUSDT", idx=0),
    PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=1),
    PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=2),
)
"""Two one-way symbols and both legs of a hedge-mode symbol."""


@attrs.define
class WorkingOrder:
    """An order a :class:`SimulatedExchange` is working, with what it has left to execute."""

    key: PositionKey
    side: Side
    remaining: Decimal
    reduce_only: bool


@attrs.define
class SimulatedExchange:
    """An exchange's truth, for a test to drive beside a ledger: the signed size of every key
    (long > 0, short < 0), its average entry price, the ``seq`` of its last size-changing
    execution, and the orders still working. :func:`exchange_histories` draws its histories
    with one; a stateful test can run one itself (``sizes`` must hold every key, at 0)."""

    sizes: dict[PositionKey, Decimal]
    avgs: dict[PositionKey, Decimal] = attrs.field(factory=dict)
    seqs: dict[PositionKey, int] = attrs.field(factory=dict)
    orders: dict[str, WorkingOrder] = attrs.field(factory=dict)
    seq: int = 0

    def reducible(self, key: PositionKey, side: Side) -> Decimal:
        """How much an execution on ``side`` can reduce the key's position."""
        size = self.sizes[key]
        return abs(size) if size * side.sign < 0 else ZERO

    def execute(self, key: PositionKey, side: Side, qty: Decimal, price: Decimal) -> int:
        """Execute ``qty`` on ``side`` at ``price`` (average cost; a flip opens at ``price``) and
        return the execution's ``seq``."""
        before = self.sizes[key]
        after = before + side.sign * qty
        if after == 0:
            self.avgs.pop(key, None)
        elif before == 0 or after * before < 0:
            self.avgs[key] = price
        elif abs(after) > abs(before):
            avg = self.avgs.get(key, price)
            self.avgs[key] = (avg * abs(before) + price * qty) / abs(after)
        self.sizes[key] = after
        self.seq += 1
        self.seqs[key] = self.seq
        return self.seq


_MOVES = (
    "open",
    "execute",
    "execute",
    "execute",
    "exit",
    "external",
    "liquidation",
    "funding",
    "cancel",
)


@attrs.frozen
class _Move:
    """One raw instruction; interpreted against the exchange's state when the history is built,
    so that deleting a move deletes one step (histories shrink well). Few draws per move: the
    minor choices all come from ``extra``."""

    action: str
    seconds: int
    pick: int
    side: Side
    qty: Decimal
    price: Decimal
    part: int
    """0: all that can execute; else a part of it (in lots)."""
    extra: int

    @property
    def whole(self) -> bool:
        return self.part == 0

    @property
    def limit(self) -> Decimal | None:
        return self.price if self.extra % 2 else None

    @property
    def kind(self) -> ExecKind:
        return (ExecKind.LIQUIDATION, ExecKind.ADL)[self.extra // 2 % 2]

    @property
    def fee_rate(self) -> Decimal:
        return (Decimal("0.00055"), Decimal("0.0002"), Decimal("-0.0001"))[self.extra % 3]

    @property
    def rate(self) -> Decimal:
        """A funding rate between -0.1 % and 0.1 %."""
        return Decimal(self.extra % 2001 - 1000).scaleb(-6)

    @property
    def status(self) -> str:
        return ("Cancelled", "Expired", "Deactivated")[self.extra % 3]


def _moves(
    quantities: st.SearchStrategy[Decimal], price_values: st.SearchStrategy[Decimal]
) -> st.SearchStrategy[_Move]:
    return st.builds(
        _Move,
        action=st.sampled_from(_MOVES),
        seconds=st.integers(1, 300),
        pick=st.integers(0, 1_000),
        side=st.sampled_from((Side.BUY, Side.SELL)),
        qty=quantities,
        price=price_values,
        part=st.integers(0, 1_000),
        extra=st.integers(0, 10**6),
    )


def _pick(items: Sequence[_T], move: _Move) -> _T:
    return items[move.pick % len(items)]


def _part_of(most: Decimal, move: _Move) -> Decimal:
    """All of ``most`` or a part of it on the same lot step."""
    if move.whole:
        return most
    exponent = most.as_tuple().exponent
    step = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    lots = int(most / step)
    return step * (1 + move.part % lots)


@st.composite
def _histories(
    draw: st.DrawFn,
    keys: tuple[PositionKey, ...],
    min_steps: int,
    max_steps: int,
    start: datetime,
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
    prefix: str,
    notes: st.SearchStrategy[Any],
) -> ExchangeHistory:
    moves = draw(
        st.lists(
            st.tuples(_moves(quantities, price_values), notes),
            min_size=min_steps,
            max_size=max_steps,
        )
    )
    exchange = SimulatedExchange(sizes=dict.fromkeys(keys, ZERO))
    now = start
    steps: list[ExchangeStep] = []
    for counter, (move, note) in enumerate(moves, start=1):
        now += timedelta(seconds=move.seconds)
        action = _interpret(exchange, move, keys, now, prefix, counter)
        steps.append(
            ExchangeStep(
                at=now,
                action=action,
                positions=dict(exchange.sizes),
                avg_prices=dict(exchange.avgs),
                seqs=dict(exchange.seqs),
                open_order_ids=frozenset(exchange.orders),
                note=note,
            )
        )
    return ExchangeHistory(
        venue=keys[0].venue,
        account=keys[0].account,
        category=keys[0].category,
        keys=keys,
        start=start,
        steps=tuple(steps),
    )


def _interpret(
    exchange: SimulatedExchange,
    move: _Move,
    keys: tuple[PositionKey, ...],
    now: datetime,
    prefix: str,
    counter: int,
) -> Action:
    """What ``move`` does on the exchange as it stands; an impossible move opens an order."""

    def name(kind: str) -> str:
        return f"{prefix}{kind}{counter}"

    working = sorted(exchange.orders)
    executable = [
        oid
        for oid in working
        if not exchange.orders[oid].reduce_only
        or exchange.reducible(exchange.orders[oid].key, exchange.orders[oid].side) > 0
    ]
    held = [k for k in keys if exchange.sizes[k] != 0]
    choice = move.action
    if (
        (choice == "execute" and not executable)
        or (choice == "cancel" and not working)
        or (choice in ("exit", "funding", "liquidation") and not held)
    ):
        choice = "open"
    if choice in ("open", "exit"):
        reduce_only = choice == "exit"
        key = _pick(held if reduce_only else keys, move)
        if reduce_only:
            side = Side.SELL if exchange.sizes[key] > 0 else Side.BUY
        else:
            side = key.leg_side or move.side
        order_id = name("o")
        exchange.orders[order_id] = WorkingOrder(key, side, move.qty, reduce_only=reduce_only)
        return OrderPlaced(key, order_id, side, move.qty, reduce_only, move.limit)
    if choice == "cancel":
        order_id = _pick(working, move)
        order = exchange.orders.pop(order_id)
        return OrderCancelled(order.key, order_id, move.status)
    if choice == "funding":
        key = _pick(held, move)
        size = exchange.sizes[key]
        fill = Fill(
            exec_id=name("f"),
            order_id="",
            side=Side.BUY if size > 0 else Side.SELL,
            qty=abs(size),
            price=move.price,
            fee=abs(size) * move.price * move.rate,
            exec_time=now,
            seq=None,
            kind=ExecKind.FUNDING,
            symbol=key.symbol,
            idx=key.idx,
        )
        return Executed(key, fill)
    leaves: Decimal | None
    if choice == "execute":
        order_id = _pick(executable, move)
        order = exchange.orders[order_id]
        key, side = order.key, order.side
        most = order.remaining
        if order.reduce_only:
            most = min(most, exchange.reducible(key, side))
        qty = _part_of(most, move)
        order.remaining -= qty
        leaves = order.remaining
        if leaves == 0:
            del exchange.orders[order_id]
        kind = ExecKind.TRADE
    elif choice == "liquidation":  # order-less: a liquidation takes it all, ADL may take part
        key = _pick(held, move)
        side = Side.SELL if exchange.sizes[key] > 0 else Side.BUY
        whole = abs(exchange.sizes[key])
        qty = whole if move.kind is ExecKind.LIQUIDATION else _part_of(whole, move)
        order_id, leaves, kind = "", ZERO, move.kind
    else:  # a trade placed outside this bot (another client, the web UI)
        key = _pick(keys, move)
        side, qty = move.side, move.qty
        if key.leg_side is not None and side is not key.leg_side:
            reducible = exchange.reducible(key, side)
            if reducible == 0:
                side = key.leg_side
            else:
                qty = min(qty, reducible)
        order_id, leaves, kind = name("x"), ZERO, ExecKind.TRADE
    seq = exchange.execute(key, side, qty, move.price)
    fill = Fill(
        exec_id=name("e"),
        order_id=order_id,
        side=side,
        qty=qty,
        price=move.price,
        fee=qty * move.price * move.fee_rate,
        exec_time=now,
        seq=seq,
        kind=kind,
        leaves_qty=leaves,
        symbol=key.symbol,
        idx=key.idx,
    )
    return Executed(key, fill)


_DEFAULT_HISTORY_QTY = decimals_qty(min_value="0.1", max_value=5, places=1)
_DEFAULT_HISTORY_PRICES = prices(min_value=1, max_value=1000, places=2)


def exchange_histories(
    *,
    keys: Sequence[PositionKey] = DEFAULT_KEYS,
    min_steps: int = 0,
    max_steps: int = 30,
    start: datetime | None = None,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
    prefix: str = "",
    notes: st.SearchStrategy[Any] | None = None,
) -> st.SearchStrategy[ExchangeHistory]:
    """A scripted exchange session with the exchange's true positions after every step.

    Steps: open requests (``OrderPlaced``, not reduce-only; on a one-way key they may flip the
    position), reduce-only exits of held positions, executions of working orders (partial or
    full; a reduce-only one never exceeds the position), order-less liquidations/ADL, trades
    placed outside the bot (order ids ``x…`` the bot never requested), funding (never a size
    change: ``qty`` is the position size) and cancellations. Time moves forward 1 s to 5 min a
    step; ``seq`` increases with every size-changing execution. Ids are ``{prefix}o<n>``
    (orders), ``{prefix}e<n>``/``{prefix}f<n>`` (executions): unique within a history.

    ``keys`` share one venue/account/category; a symbol is one-way (``idx`` 0) or hedge mode
    (legs 1/2), not both. Quantities default to 0.1 … 5 in steps of 0.1, prices to 1 … 1000.

    ``notes`` draws something per step into ``ExchangeStep.note``: the test's own decisions
    about that step (does the bot hear of it? reconcile after it?). Drawn with the step, a note
    is deleted with it when hypothesis shrinks, so failures shrink to short histories.
    """
    chosen = tuple(dict.fromkeys(keys))
    if not chosen:
        raise ValueError("keys must not be empty")
    scopes = {(k.venue, k.account, k.category) for k in chosen}
    if len(scopes) != 1:
        raise ValueError("keys must share one venue, account and category")
    modes: dict[str, set[bool]] = {}
    for k in chosen:
        modes.setdefault(k.symbol, set()).add(k.idx == 0)
    if any(len(m) > 1 for m in modes.values()):
        raise ValueError("a symbol is either one-way (idx 0) or hedge mode (idx 1/2), not both")
    if not 0 <= min_steps <= max_steps:
        raise ValueError("need 0 <= min_steps <= max_steps")
    began = start if start is not None else datetime(2025, 1, 1, tzinfo=UTC)
    if began.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return _histories(
        chosen,
        min_steps,
        max_steps,
        began.astimezone(UTC),
        quantities if quantities is not None else _DEFAULT_HISTORY_QTY,
        price_values if price_values is not None else _DEFAULT_HISTORY_PRICES,
        prefix,
        notes if notes is not None else st.none(),
    )
