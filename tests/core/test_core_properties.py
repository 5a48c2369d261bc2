"""Properties of the pure core (``posledger.core.position``): random fill sequences folded with
``decide_fills``/``evolve``, no database. Plus sanity checks of the public strategies in
``posledger.testing.strategies``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from posledger import ExecKind, Fill, PositionKey, PositionState, Side, Status
from posledger.core.decide import decide_fills, decide_request, register
from posledger.core.events import Closed, ExecutionEvent, FundingSettled, PositionEvent
from posledger.core.position import evolve, project
from posledger.store.snapshot import decode, encode
from posledger.testing.strategies import (
    ExchangeHistory,
    Executed,
    OrderPlaced,
    decimals_qty,
    exchange_histories,
    exchange_positions,
    fees,
    fills,
    position_keys,
    prices,
    snapshots,
)

ZERO = Decimal(0)
T0 = datetime(2025, 11, 12, 9, 0, tzinfo=UTC)
KEY = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT", idx=0)
LONG_LEG = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=1)
QTY = decimals_qty(min_value="0.001", max_value="50", places=3)
PRICE = prices(min_value="0.5", max_value="5000", places=2)
FEE = fees(min_value="-0.5", max_value="3", places=6)
SIDES = st.sampled_from((Side.BUY, Side.SELL))
TRADES = st.lists(st.tuples(SIDES, QTY, PRICE, FEE), max_size=40)
EPSILON = Decimal("1e-12")
"""Average cost divides; 28 significant digits leave far less error than this."""


def fresh(key: PositionKey = KEY) -> PositionState:
    return evolve(None, register(key, T0))


def trade(
    n: int, side: Side, qty: Decimal, price: Decimal, fee: Decimal = ZERO, **more: object
) -> Fill:
    return Fill(
        exec_id=f"e{n}",
        order_id=str(more.pop("order_id", "")),
        side=side,
        qty=qty,
        price=price,
        fee=fee,
        exec_time=T0 + timedelta(seconds=n),
        seq=n,
        **more,  # type: ignore[arg-type]
    )


def step(state: PositionState, fill: Fill) -> tuple[PositionState, list[PositionEvent]]:
    events = decide_fills(state, [fill])
    after = project(state, events)
    assert after is not None
    return after, events


def signed(state: PositionState) -> Decimal:
    return state.signed_size


def check_shape(state: PositionState) -> None:
    assert isinstance(state.size, Decimal) and state.size >= 0
    assert (state.side is None) == (state.size == 0)
    assert (state.status is Status.OPEN) == (state.size > 0)
    if state.size == 0:
        assert state.avg_entry_price is None


@given(TRADES)
def test_average_cost_conserves_cash(trades: list[tuple[Side, Decimal, Decimal, Decimal]]) -> None:
    """Realized PnL plus the open position at its average cost is the cash the trades moved:
    ``realized == -sum(sign * qty * price) + signed_size * avg``; fees are counted apart."""
    state = fresh()
    cash = ZERO
    closed: list[Closed] = []
    for n, (side, qty, price, fee) in enumerate(trades, start=1):
        state, events = step(state, trade(n, side, qty, price, fee))
        closed += [e for e in events if isinstance(e, Closed)]
        cash -= side.sign * qty * price
        check_shape(state)
        held = signed(state) * state.avg_entry_price if state.avg_entry_price is not None else ZERO
        assert abs(state.realized_pnl - (cash + held)) <= EPSILON
        assert state.fees == sum((t[3] for t in trades[:n]), ZERO)
        per_lifecycle = sum((c.realized_pnl for c in closed), ZERO)
        assert abs(per_lifecycle + state.lifecycle_realized_pnl - state.realized_pnl) <= EPSILON
        per_lifecycle_fees = sum((c.fees for c in closed), ZERO)
        assert abs(per_lifecycle_fees + state.lifecycle_fees - state.fees) <= EPSILON
        assert [c.lifecycle for c in closed] == sorted({c.lifecycle for c in closed})


@given(TRADES, QTY, st.sampled_from((ZERO, None)), PRICE, FEE)
def test_a_fill_crossing_zero_closes_the_lifecycle_and_opens_the_next(
    trades: list[tuple[Side, Decimal, Decimal, Decimal]],
    extra: Decimal,
    exact: Decimal | None,
    price: Decimal,
    fee: Decimal,
) -> None:
    state = fresh()
    for n, (side, qty, p, f) in enumerate(trades, start=1):
        state, _ = step(state, trade(n, side, qty, p, f))
    assume(state.side is not None)
    assert state.side is not None and state.avg_entry_price is not None
    beyond = exact if exact is not None else extra  # exactly flat, or across zero
    before = state
    state, events = step(state, trade(999, before.side.opposite, before.size + beyond, price, fee))
    check_shape(state)
    assert [type(e).__name__ for e in events] == ["Filled", "Closed"]
    closing = events[-1]
    assert isinstance(closing, Closed)
    assert (closing.reason, closing.lifecycle) == ("filled", before.lifecycle)
    assert before.cost_basis is not None
    pnl = (price * before.size - before.cost_basis) * before.side.sign  # the close takes all cost
    assert state.realized_pnl == before.realized_pnl + pnl
    assert closing.realized_pnl == before.lifecycle_realized_pnl + pnl
    if beyond == 0:
        assert state.status is Status.FLAT and not state.active
        assert state.lifecycle == before.lifecycle
    else:
        assert (state.side, state.size, state.avg_entry_price) == (
            before.side.opposite,
            beyond,
            price,
        )
        assert state.active and state.lifecycle == before.lifecycle + 1
        assert state.lifecycle_realized_pnl == 0
        assert state.opened_at == events[0].timestamp


@given(TRADES, QTY, st.lists(st.tuples(QTY, PRICE), min_size=1, max_size=8))
def test_reduce_only_fills_never_flip_and_report_overfills(
    trades: list[tuple[Side, Decimal, Decimal, Decimal]],
    exit_qty: Decimal,
    executions: list[tuple[Decimal, Decimal]],
) -> None:
    state = fresh()
    for n, (side, qty, p, f) in enumerate(trades, start=1):
        state, _ = step(state, trade(n, side, qty, p, f))
    assume(state.side is not None)
    held = state.side
    assert held is not None
    events = decide_request(
        state, order_id="x", side=None, qty=exit_qty, price=None, at=T0, reduce_only=True
    )
    state = project(state, events)  # type: ignore[assignment]
    left = exit_qty
    for n, (qty, price) in enumerate(executions, start=1000):
        if state.pending("x") is None:
            break  # filled, or dropped with the position it reduced
        before = state
        state, new = step(state, trade(n, held.opposite, qty, price, order_id="x"))
        check_shape(state)
        execution = next(e for e in new if isinstance(e, ExecutionEvent))
        assert execution.reduce_only
        assert state.side in (held, None), "a reduce-only fill flipped the position"
        assert state.size == max(before.size - qty, ZERO)
        assert execution.overfill == max(qty - left, qty - before.size, ZERO)
        left -= qty


@given(TRADES, st.lists(st.tuples(st.integers(0, 40), FEE), max_size=10))
def test_funding_never_changes_size(
    trades: list[tuple[Side, Decimal, Decimal, Decimal]], fundings: list[tuple[int, Decimal]]
) -> None:
    """Funding (Bybit reports the whole position as its qty) moves cash and PnL only."""
    due = dict(fundings)  # funding settled after this many trades
    state = fresh()
    for n in range(len(trades) + 1):
        if n in due:
            size = state.size if state.size > 0 else Decimal(1)
            funding = trade(
                10_000 + n,
                state.side or Side.BUY,
                size,
                Decimal(100),
                due[n],
                kind=ExecKind.FUNDING,
            )
            before = state
            state, events = step(state, funding)
            assert [type(e) for e in events] == [FundingSettled]
            kept = (state.side, state.size, state.avg_entry_price, state.lifecycle)
            assert kept == (before.side, before.size, before.avg_entry_price, before.lifecycle)
            assert state.funding == before.funding + due[n]
            assert state.realized_pnl == before.realized_pnl - due[n]
            assert state.fees == before.fees
        if n < len(trades):
            side, qty, price, fee = trades[n]
            state, _ = step(state, trade(n + 1, side, qty, price, fee))


@given(st.lists(st.tuples(SIDES, QTY, PRICE), max_size=30))
def test_a_hedge_leg_only_ever_holds_its_own_side(
    trades: list[tuple[Side, Decimal, Decimal]],
) -> None:
    state = fresh(LONG_LEG)
    for n, (side, qty, price) in enumerate(trades, start=1):
        before = state
        state, events = step(state, trade(n, side, qty, price, symbol="ETHUSDT", idx=1))
        check_shape(state)
        assert state.side in (None, Side.BUY)
        execution = next(e for e in events if isinstance(e, ExecutionEvent))
        assert execution.reduce_only == (side is Side.SELL)
        expected = before.size + qty if side is Side.BUY else max(before.size - qty, ZERO)
        assert state.size == expected


@given(TRADES, st.lists(st.tuples(SIDES, QTY), max_size=4))
def test_replay_and_the_snapshot_codec_reproduce_the_state(
    trades: list[tuple[Side, Decimal, Decimal, Decimal]], requests: list[tuple[Side, Decimal]]
) -> None:
    state = fresh()
    log: list[PositionEvent] = [register(KEY, T0)]
    for n, (side, qty) in enumerate(requests):
        events = decide_request(
            state, order_id=f"o{n}", side=side, qty=qty, price=None, at=T0, reduce_only=False
        )
        log += events
        state = project(state, events)  # type: ignore[assignment]
    for n, (side, qty, price, fee) in enumerate(trades, start=1):
        order_id = f"o{n % 5}" if n % 2 else ""
        state, events = step(state, trade(n, side, qty, price, fee, order_id=order_id))
        log += events
    assert project(None, log) == state
    assert repr(decode(encode(state))) == repr(state)  # exact: Decimal("1.10") stays "1.10"
    assert [e.originator_version for e in log] == list(range(1, len(log) + 1))
    exec_ids = [e.exec_id for e in log if isinstance(e, ExecutionEvent)]
    assert len(exec_ids) == len(set(exec_ids)) == len(trades)


# --- the public strategies themselves ------------------------------------------------------


@given(position_keys(hedge=None).flatmap(lambda key: st.tuples(st.just(key), fills(key))))
def test_fills_belong_to_their_key_and_are_decimal(pair: tuple[PositionKey, Fill]) -> None:
    key, fill = pair
    assert (fill.symbol, fill.idx) == (key.symbol, key.idx)
    for value in (fill.qty, fill.price, fill.fee):
        assert type(value) is Decimal and value.is_finite()
    assert fill.qty > 0 and fill.price > 0
    assert fill.exec_time.tzinfo is not None and fill.exec_time.utcoffset() == timedelta(0)


@given(exchange_positions(hedge=None))
def test_exchange_positions_respect_hedge_legs(row: object) -> None:
    from posledger import ExchangePosition

    assert isinstance(row, ExchangePosition)
    assert (row.side is None) == (row.size == 0)
    if row.idx == 1 and row.side is not None:
        assert row.side is Side.BUY
    if row.idx == 2 and row.side is not None:
        assert row.side is Side.SELL


@given(snapshots())
def test_snapshots_list_only_covered_rows(snapshot: object) -> None:
    from posledger import Snapshot

    assert isinstance(snapshot, Snapshot)
    assert snapshot.taken_at.utcoffset() == timedelta(0)
    for row in snapshot.positions:
        assert snapshot.covers(snapshot.key_for(row))
    symbols = [row.symbol for row in snapshot.positions]
    for symbol in set(symbols):
        idxs = {row.idx for row in snapshot.positions if row.symbol == symbol}
        assert idxs <= {0} or idxs <= {1, 2}


@given(exchange_histories())
def test_exchange_histories_are_consistent(history: ExchangeHistory) -> None:
    times = [step.at for step in history.steps]
    assert times == sorted(times) and len(set(times)) == len(times)
    sizes = dict.fromkeys(history.keys, ZERO)
    exec_ids = set()
    for step_ in history.steps:
        action = step_.action
        if isinstance(action, Executed):
            fill = action.fill
            assert fill.exec_id not in exec_ids
            exec_ids.add(fill.exec_id)
            assert fill.exec_time == step_.at
            if fill.kind is not ExecKind.FUNDING:
                sizes[action.key] += fill.side.sign * fill.qty
        if isinstance(action, OrderPlaced) and action.key.leg_side is not None:
            assert (action.side is action.key.leg_side) != action.reduce_only
        assert {k: v for k, v in step_.positions.items()} == sizes
        for key, size in sizes.items():
            assert type(size) is Decimal
            if key.idx == 1:
                assert size >= 0
            if key.idx == 2:
                assert size <= 0
    snapshot = history.snapshot()
    for row in snapshot.positions:
        assert row.size == abs(sizes[snapshot.key_for(row)])
