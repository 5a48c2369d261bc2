"""The exchange model behind :func:`exchange_histories`: a :class:`SimulatedExchange`, the raw
moves hypothesis draws, and the interpreter that turns each move into what the exchange does
as it stands (so histories shrink one step at a time)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st

from posledger.core.model import ExecKind, Fill, PositionKey, Side
from posledger.testing.strategies.history import (
    ZERO,
    Action,
    ExchangeHistory,
    ExchangeStep,
    Executed,
    OrderCancelled,
    OrderPlaced,
)
from posledger.testing.strategies.values import decimals_qty, prices

_T = TypeVar("_T")

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
    (long > 0, short < 0), its average entry price (harmonic on an inverse key), the ``seq`` of
    its last size-changing
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
            if (
                key.category == "inverse"
            ):  # USD contracts: the harmonic mean (docs/design.md#inverse)
                self.avgs[key] = abs(after) / (abs(before) / avg + qty / price)
            else:
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
