"""A simulated exchange and a posledger Ledger, driven side by side by hypothesis.

The exchange model (``posledger.testing.strategies.SimulatedExchange``, which also draws
``exchange_histories``) is deliberately tiny: one signed ``Decimal`` per key, changed only by
``size += ±qty`` when the exchange executes something (a reduce-only execution never exceeds the
position it reduces), plus the orders still working. The ledger is told some of what happens (and
sometimes told it twice, late, or not at all), reads snapshots (fresh, stale, partial, hedge legs
beside one-way keys), restarts on the same SQLite file, and must stay explainable by its own
history and converge on the exchange whenever two confirming snapshots say so.

Time is simulated: ``self.now`` only moves forward and is passed to every command (the ledger's
clock raises, so nothing can read the wall clock by accident).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import event as tally
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from posledger import (
    ExchangePosition,
    ExecKind,
    ExecutionConflict,
    Fill,
    Ledger,
    PositionKey,
    PositionState,
    ReconcilePolicy,
    Side,
    Snapshot,
    Status,
)
from posledger.core.events import Filled, FundingSettled, OpenRequested, PartiallyFilled, Reconciled
from posledger.core.position import project
from posledger.testing.strategies import (
    ExchangeHistory,
    Executed,
    OrderCancelled,
    OrderPlaced,
    SimulatedExchange,
    WorkingOrder,
    decimals_qty,
    exchange_histories,
    fees,
    prices,
)
from tests.ledger.machine import LedgerMachine, no_wall_clock

ZERO = Decimal(0)
T0 = datetime(2025, 11, 12, 9, 0, tzinfo=UTC)
BTC = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT", idx=0)
ETH_LONG = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=1)
ETH_SHORT = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=2)
KEYS = (BTC, ETH_LONG, ETH_SHORT)
"""A one-way symbol beside both legs of a hedge-mode symbol (few keys: more interplay per key)."""
SYMBOLS = ("BTCUSDT", "ETHUSDT")

POLICIES = {
    "no grace, 1 confirmation": ReconcilePolicy(grace=timedelta(0), confirmations=1),
    "no grace, 2 confirmations": ReconcilePolicy(grace=timedelta(0)),
    "defaults (60 s grace, 2 confirmations)": ReconcilePolicy(),
}

QTY = decimals_qty(min_value="0.1", max_value="4", places=1)
PRICE = prices(min_value="10", max_value="200", places=1)
FEE = fees(min_value="-0.5", max_value="2", places=4)
PICK = st.integers(min_value=0, max_value=1_000)
SIDES = st.sampled_from((Side.BUY, Side.SELL))
COVERAGE = st.sampled_from(
    (
        None,
        frozenset({"BTCUSDT"}),
        frozenset({"ETHUSDT"}),
        frozenset(SYMBOLS),
        frozenset({"XRPUSDT"}),
    )
)
"""Complete (None), one symbol of two, both listed, or a symbol the bot never traded."""
DELIVERY = st.sampled_from(("deliver", "deliver", "with_duplicate", "miss"))
ROWS = st.sampled_from(("bybit", "flat rows", "no seq"))


def signed(side: Side | str | None, size: Decimal) -> Decimal:
    if not side or size == 0:
        return ZERO
    return size if Side(side) is Side.BUY else -size


def ledger_signed(state: PositionState | None) -> Decimal:
    return ZERO if state is None else signed(state.side, state.size)


# --- the exchange --------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """The exchange's truth from ``at`` until the next moment."""

    at: datetime
    sizes: dict[PositionKey, Decimal]
    avgs: dict[PositionKey, Decimal]
    seqs: dict[PositionKey, int]
    working: frozenset[str]


@attrs.define
class Exchange(SimulatedExchange):
    """The exchange's true positions over KEYS (a signed size per key, changed only by
    executions), and the moments a snapshot can be read from."""

    sizes: dict[PositionKey, Decimal] = attrs.field(factory=lambda: dict.fromkeys(KEYS, ZERO))
    moments: list[Moment] = attrs.field(factory=list)

    def record(self, now: datetime) -> None:
        self.moments.append(
            Moment(now, dict(self.sizes), dict(self.avgs), dict(self.seqs), frozenset(self.orders))
        )

    def snapshot(
        self,
        moment: Moment,
        *,
        taken_at: datetime,
        symbols: frozenset[str] | None,
        report_orders: bool,
        rows_as: str,
    ) -> Snapshot:
        """``rows_as``: "bybit" lists open positions with their ``seq`` (a category-wide read
        omits flat ones), "flat rows" also lists flat ones (a read by symbol), "no seq" lists open
        positions without ``seq`` (a venue that has none: time decides staleness)."""
        rows = []
        for key in KEYS:
            if symbols is not None and key.symbol not in symbols:
                continue
            size = moment.sizes[key]
            if size == 0 and rows_as != "flat rows":
                continue  # a category-wide read omits flat positions
            rows.append(
                ExchangePosition(
                    symbol=key.symbol,
                    idx=key.idx,
                    side=None if size == 0 else Side.BUY if size > 0 else Side.SELL,
                    size=abs(size),
                    avg_price=moment.avgs.get(key),
                    seq=None if rows_as == "no seq" else moment.seqs.get(key),
                )
            )
        return Snapshot(
            venue="bybit",
            account="main",
            category="linear",
            taken_at=taken_at,
            positions=rows,
            symbols=symbols,
            open_order_ids=moment.working if report_orders else None,
        )


# --- the independent fold ------------------------------------------------------------------


def fold_history(key: PositionKey, history: Sequence[object]) -> tuple[Decimal, list[str]]:
    """The key's signed size recomputed from its history alone (no posledger code), and its
    execution ids. Also checks, event by event:

    - every ``Reconciled.before`` is what the history had reached;
    - corrections never go back in time (each one's snapshot is later than the previous one's);
    - a fill is ``absorbed`` exactly when the snapshot behind the last correction already
      reflected it (taken at or after the execution: snapshots here are exact at their time);
    - a correction clears an open request only if the request existed when its snapshot was
      taken (a snapshot cannot speak for an order placed after it).
    """
    size = ZERO
    exec_ids: list[str] = []
    last: Reconciled | None = None
    opens: dict[str, datetime] = {}
    for event in history:
        if isinstance(event, OpenRequested):
            opens[event.order_id] = event.timestamp
        elif isinstance(event, FundingSettled):
            exec_ids.append(event.exec_id)
        elif isinstance(event, PartiallyFilled | Filled):
            exec_ids.append(event.exec_id)
            reflected = last is not None and event.exec_time <= last.snapshot_taken_at
            assert event.absorbed == reflected, (
                f"{key}: {event.exec_id} (exec_time {event.exec_time}) absorbed={event.absorbed},"
                f" but the last correction's snapshot was taken at "
                f"{last.snapshot_taken_at if last else None}"
            )
            if event.absorbed:
                continue
            delta = event.qty if Side(event.side) is Side.BUY else -event.qty
            if event.reduce_only:  # only towards zero, never past it
                delta = ZERO if size * delta >= 0 else max(-abs(size), min(abs(size), delta))
            size += delta
        elif isinstance(event, Reconciled):
            before = signed(event.before_side, event.before_size)
            assert before == size, f"{key}: Reconciled.before {before} but history says {size}"
            if last is not None:
                assert event.snapshot_taken_at > last.snapshot_taken_at, (
                    f"{key}: a snapshot taken at {event.snapshot_taken_at} corrected the ledger "
                    f"after one taken at {last.snapshot_taken_at} had (corrections went back in "
                    "time)"
                )
            for order_id in event.cleared_orders:
                requested = opens.get(order_id)
                assert requested is None or requested <= event.snapshot_taken_at, (
                    f"{key}: open request {order_id} (requested {requested}) was cleared as "
                    f"{event.kind} on a snapshot taken at {event.snapshot_taken_at}, before it "
                    "existed"
                )
            size += signed(event.after_side, event.after_size) - before
            last = event
    return size, exec_ids


# --- the machine ---------------------------------------------------------------------------


class ExchangeAndLedger(LedgerMachine, RuleBasedStateMachine):
    exchange: Exchange

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="posledger-stateful-")
        self.url = f"sqlite:///{Path(self.dir) / 'ledger.db'}"
        self.now = T0
        self.exchange = Exchange()
        self.policy = POLICIES["no grace, 2 confirmations"]
        self.ledger: Ledger | None = None
        self.delivered: list[tuple[PositionKey, Fill]] = []
        self.missed: list[tuple[PositionKey, Fill]] = []
        self.last_delivered_at: datetime | None = None
        self.exits: set[str] = set()
        self.clean = set(KEYS)
        """Keys whose every execution the ledger was told, in order."""
        self.counter = 0

    # --- helpers -------------------------------------------------------------------------

    def held(self) -> list[PositionKey]:
        return [key for key in KEYS if self.exchange.sizes[key] != 0]

    def stale_moments(self) -> list[Moment]:
        last = self.last_delivered_at
        return [m for m in self.exchange.moments if last is not None and m.at < last]

    def open_ledger(self) -> None:
        self.ledger = Ledger.open(self.url, policy=self.policy, clock=no_wall_clock)

    def deliver(self, key: PositionKey, fill: Fill, how: str) -> None:
        if how == "miss":
            note(f"ledger misses {fill.exec_id} on {key}")
            self.missed.append((key, fill))
            self.clean.discard(key)
            return
        duplicates = [f for k, f in self.delivered if k == key][-2:] if how != "deliver" else []
        before = len(self.led.history(key))
        batch = self.led.record_fills(key, [*duplicates, fill])
        assert [r.duplicate for r in batch.fills] == [True] * len(duplicates) + [False]
        history = self.led.history(key)
        assert len(history) > before
        applied = next(e for e in history[before:] if isinstance(e, PartiallyFilled | Filled))
        if applied.absorbed:
            tally("fill: absorbed")
        self.delivered.append((key, fill))
        if self.last_delivered_at is None or fill.exec_time > self.last_delivered_at:
            self.last_delivered_at = fill.exec_time

    def reconcile(self, snapshot: Snapshot) -> None:
        uncovered = [key for key in KEYS if not snapshot.covers(key)]
        before = {k: (self.led.position(k), len(self.led.history(k))) for k in uncovered}
        histories = {k: len(self.led.history(k)) for k in KEYS}
        report = self.led.reconcile(snapshot, now=self.now)
        assert all(snapshot.covers(outcome.key) for outcome in report.outcomes)
        for outcome in report.outcomes:
            tally(f"reconcile: {outcome.outcome.value} {outcome.correction or ''}".strip())
        after = {k: (self.led.position(k), len(self.led.history(k))) for k in uncovered}
        assert after == before, "reconciliation touched a key outside the snapshot's coverage"
        for key in KEYS:
            for event in self.led.history(key)[histories[key] :]:
                if isinstance(event, Reconciled) and snapshot.open_order_ids is not None:
                    working = (set(event.cleared_orders) - self.exits) & snapshot.open_order_ids
                    assert not working, f"{key}: cleared {working}, reported working"

    # --- setup ---------------------------------------------------------------------------

    @initialize(policy=st.sampled_from(sorted(POLICIES)))
    def start(self, policy: str) -> None:
        self.policy = POLICIES[policy]
        self.open_ledger()
        self.exchange.record(self.now)

    def teardown(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the bot asks --------------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS), side=SIDES, qty=QTY, price=st.none() | PRICE)
    def request_open(
        self, key: PositionKey, side: Side, qty: Decimal, price: Decimal | None
    ) -> None:
        side = key.leg_side or side
        order_id = self.next_id("o")
        self.tick()
        self.exchange.orders[order_id] = WorkingOrder(key, side, qty, reduce_only=False)
        self.exchange.record(self.now)
        self.led.request_open(key, order_id=order_id, side=side, qty=qty, price=price, at=self.now)

    @rule(key=st.sampled_from(KEYS), qty=QTY)
    def request_exit(self, key: PositionKey, qty: Decimal) -> None:
        """A reduce-only order against what the ledger holds or, when it holds nothing, against
        what the bot sees on the exchange (an exit of a position the ledger does not know)."""
        state = self.led.position(key)
        explicit: Side | None = None
        if state is not None and state.side is not None:
            side = state.side.opposite
        elif self.exchange.sizes[key] != 0:
            side = explicit = Side.SELL if self.exchange.sizes[key] > 0 else Side.BUY
        else:
            return
        order_id = self.next_id("o")
        self.exits.add(order_id)
        self.tick()
        self.exchange.orders[order_id] = WorkingOrder(key, side, qty, reduce_only=True)
        self.exchange.record(self.now)
        self.led.request_exit(key, order_id=order_id, qty=qty, side=explicit, at=self.now)

    # --- the exchange acts ---------------------------------------------------------------

    @precondition(lambda self: bool(self.executable()))
    @rule(
        pick=PICK,
        part=st.none() | PICK,
        price=PRICE,
        fee=FEE,
        leaves_reported=st.booleans(),
        how=DELIVERY,
    )
    def execute(
        self,
        pick: int,
        part: int | None,
        price: Decimal,
        fee: Decimal,
        leaves_reported: bool,
        how: str,
    ) -> None:
        """The exchange executes (part of) a working order."""
        candidates = self.executable()
        order_id = candidates[pick % len(candidates)]
        order = self.exchange.orders[order_id]
        most = order.remaining
        if order.reduce_only:
            most = min(most, self.exchange.reducible(order.key, order.side))
        lot = Decimal("0.1")
        qty = most if part is None else lot * (1 + part % int(most / lot))
        order.remaining -= qty
        if order.remaining == 0:
            del self.exchange.orders[order_id]
        self.tick()
        seq = self.exchange.execute(order.key, order.side, qty, price)
        self.exchange.record(self.now)
        fill = Fill(
            exec_id=self.next_id("e"),
            order_id=order_id,
            side=order.side,
            qty=qty,
            price=price,
            fee=fee,
            exec_time=self.now,
            seq=seq,
            leaves_qty=order.remaining if leaves_reported else None,
            symbol=order.key.symbol,
            idx=order.key.idx,
        )
        self.deliver(order.key, fill, how)

    @rule(
        key=st.sampled_from(KEYS),
        side=SIDES,
        qty=QTY,
        kind=st.sampled_from((ExecKind.TRADE, ExecKind.LIQUIDATION, ExecKind.ADL)),
        price=PRICE,
        fee=FEE,
        how=DELIVERY,
    )
    def external_execution(
        self,
        key: PositionKey,
        side: Side,
        qty: Decimal,
        kind: ExecKind,
        price: Decimal,
        fee: Decimal,
        how: str,
    ) -> None:
        """An execution the bot never asked for: a liquidation or ADL (order-less, reduces the
        position), or a trade placed by someone else (the web UI, another bot)."""
        size = self.exchange.sizes[key]
        if kind is not ExecKind.TRADE:
            if size == 0:
                return
            side = Side.SELL if size > 0 else Side.BUY
            whole = kind is ExecKind.LIQUIDATION  # ADL may take part of it
            qty, order_id = abs(size) if whole else min(qty, abs(size)), ""
        else:
            order_id = self.next_id("x")
            if key.leg_side is not None and side is not key.leg_side:
                reducible = self.exchange.reducible(key, side)
                if reducible == 0:
                    side = key.leg_side
                else:
                    qty = min(qty, reducible)
        self.tick()
        seq = self.exchange.execute(key, side, qty, price)
        self.exchange.record(self.now)
        fill = Fill(
            exec_id=self.next_id("e"),
            order_id=order_id,
            side=side,
            qty=qty,
            price=price,
            fee=fee,
            exec_time=self.now,
            seq=seq,
            kind=kind,
            leaves_qty=ZERO,
        )
        self.deliver(key, fill, how)

    @precondition(lambda self: bool(self.exchange.orders))
    @rule(pick=PICK, told=st.booleans(), status=st.sampled_from(("Cancelled", "Expired")))
    def order_end(self, pick: int, told: bool, status: str) -> None:
        """A working order ends; the bot hears of it, or the cancellation goes unnoticed."""
        order_id = sorted(self.exchange.orders)[pick % len(self.exchange.orders)]
        order = self.exchange.orders.pop(order_id)
        self.tick()
        self.exchange.record(self.now)
        if told:
            self.led.record_order_end(order.key, order_id=order_id, status=status, at=self.now)

    @precondition(lambda self: bool(self.held()))
    @rule(pick=PICK, rate=st.decimals("-0.001", "0.001", places=5), price=PRICE)
    def funding(self, pick: int, rate: Decimal, price: Decimal) -> None:
        """Funding: ``qty`` is the whole position (as Bybit reports it); never a size change."""
        held = self.held()
        key = held[pick % len(held)]
        size = self.exchange.sizes[key]
        self.tick()
        fill = Fill(
            exec_id=self.next_id("f"),
            order_id="",
            side=Side.BUY if size > 0 else Side.SELL,
            qty=abs(size),
            price=price,
            fee=abs(size) * price * rate,
            exec_time=self.now,
            kind=ExecKind.FUNDING,
            symbol=key.symbol,
            idx=key.idx,
        )
        before = self.led.position(key)
        result = self.led.record_fill(key, fill)
        after = self.led.position(key)
        assert result.event == "FundingSettled" and not result.duplicate
        assert after is not None
        assert ledger_signed(after) == ledger_signed(before), "funding changed the size"
        assert after.funding == (before.funding if before else ZERO) + fill.fee
        assert after.realized_pnl == (before.realized_pnl if before else ZERO) - fill.fee
        self.delivered.append((key, fill))

    # --- the ledger hears late, twice, or wrongly ----------------------------------------

    @precondition(lambda self: bool(self.missed))
    @rule(pick=PICK)
    def deliver_late(self, pick: int) -> None:
        """A missed execution arrives after all (REST backfill, a late WebSocket message)."""
        key, fill = self.missed.pop(pick % len(self.missed))
        self.tick()
        self.deliver(key, fill, "deliver")

    @precondition(lambda self: bool(self.missed))
    @rule()
    def backfill(self) -> None:
        """Every missed execution arrives at once, one batch per key in exchange order (the REST
        history a synchronizer reads after a gap)."""
        self.tick()
        missed, self.missed = self.missed, []
        for key in KEYS:
            batch = sorted((f for k, f in missed if k == key), key=lambda f: f.exec_time)
            if not batch:
                continue
            before = len(self.led.history(key))
            result = self.led.record_fills(key, batch)
            assert not any(r.duplicate for r in result.fills)
            applied = [
                e for e in self.led.history(key)[before:] if isinstance(e, PartiallyFilled | Filled)
            ]
            assert [e.exec_id for e in applied] == [f.exec_id for f in batch]
            if any(e.absorbed for e in applied):
                tally("fill: absorbed")
            self.delivered += [(key, f) for f in batch]
            latest = batch[-1].exec_time
            if self.last_delivered_at is None or latest > self.last_delivered_at:
                self.last_delivered_at = latest

    @precondition(lambda self: bool(self.delivered))
    @rule(pick=PICK, how=st.sampled_from(("single", "batch", "twice", "conflict")))
    def redeliver(self, pick: int, how: str) -> None:
        """An execution seen before (WebSocket + REST overlap) is a no-op; the same exec_id with
        another payload is refused; either way nothing is written."""
        key, fill = self.delivered[pick % len(self.delivered)]
        before = {k: (self.led.position(k), len(self.led.history(k))) for k in KEYS}
        if how == "single":
            assert self.led.record_fill(key, fill).duplicate
        elif how == "batch":
            assert [r.duplicate for r in self.led.record_fills(key, [fill]).fills] == [True]
        elif how == "twice":
            result = self.led.record_fills(key, [fill, fill])
            assert [r.duplicate for r in result.fills] == [True]
        else:
            with pytest.raises(ExecutionConflict):
                self.led.record_fill(key, attrs.evolve(fill, qty=fill.qty + Decimal("0.1")))
        after = {k: (self.led.position(k), len(self.led.history(k))) for k in KEYS}
        assert after == before

    # --- snapshots -----------------------------------------------------------------------

    @rule(coverage=COVERAGE, report_orders=st.booleans(), rows_as=ROWS)
    def snapshot_now(
        self, coverage: frozenset[str] | None, report_orders: bool, rows_as: str
    ) -> None:
        self.tick()
        moment = self.exchange.moments[-1]
        self.reconcile(
            self.exchange.snapshot(
                moment,
                taken_at=self.now,
                symbols=coverage,
                report_orders=report_orders,
                rows_as=rows_as,
            )
        )

    @precondition(lambda self: bool(self.stale_moments()))
    @rule(
        pick=PICK,
        recent=st.booleans(),
        coverage=COVERAGE,
        report_orders=st.booleans(),
        rows_as=ROWS,
    )
    def snapshot_stale(
        self,
        pick: int,
        recent: bool,
        coverage: frozenset[str] | None,
        report_orders: bool,
        rows_as: str,
    ) -> None:
        """A snapshot taken before the last delivered fill (a slow read, another process's):
        one of the last few moments before it, or any earlier one."""
        moments = self.stale_moments()
        if recent:
            moments = moments[-3:]
        moment = moments[pick % len(moments)]
        self.tick()
        self.reconcile(
            self.exchange.snapshot(
                moment,
                taken_at=moment.at,
                symbols=coverage,
                report_orders=report_orders,
                rows_as=rows_as,
            )
        )

    @rule(report_orders=st.booleans(), rows_as=ROWS)
    def settle(self, report_orders: bool, rows_as: str) -> None:
        """Nothing new happens; past grace, two complete snapshots at increasing times are
        reconciled: the ledger must then equal the exchange on every key."""
        self.now += self.policy.grace + timedelta(seconds=1)
        for _ in range(2):
            self.tick()
            self.reconcile(
                self.exchange.snapshot(
                    self.exchange.moments[-1],
                    taken_at=self.now,
                    symbols=None,
                    report_orders=report_orders,
                    rows_as=rows_as,
                )
            )
        for key in KEYS:
            state = self.led.position(key)
            assert ledger_signed(state) == self.exchange.sizes[key], (
                f"{key}: ledger {ledger_signed(state)} != exchange {self.exchange.sizes[key]} "
                "after two confirming snapshots"
            )
            if report_orders and state is not None and state.size == 0:
                dead = [
                    o.order_id
                    for o in state.pending_orders
                    if not o.reduce_only and o.order_id not in self.exchange.orders
                ]
                assert not dead, f"{key}: open requests {dead} ended on the exchange, still pending"

    # --- time and restarts ---------------------------------------------------------------

    @rule(seconds=st.integers(min_value=1, max_value=900))
    def advance(self, seconds: int) -> None:
        self.tick(seconds)

    @rule()
    def restart(self) -> None:
        self.led.close()
        self.open_ledger()

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def history_explains_every_size(self) -> None:
        if self.ledger is None:
            return
        states = {state.key: state for state in self.led.positions()}
        applied: Counter[str] = Counter()
        for key in KEYS:
            folded, exec_ids = fold_history(key, self.led.history(key))
            applied.update(exec_ids)
            assert ledger_signed(states.get(key)) == folded, (
                f"{key}: ledger says {ledger_signed(states.get(key))}, its history {folded}"
            )
        twice = [exec_id for exec_id, count in applied.items() if count > 1]
        assert not twice, f"executions applied more than once: {twice}"

    @invariant()
    def replay_equals_live(self) -> None:
        if self.ledger is None:
            return
        live = self.led.positions()
        with Ledger.open(self.url, policy=self.policy, clock=no_wall_clock) as fresh:
            assert fresh.positions() == live
        for state in live:
            assert project(None, self.led.history(state.key)) == state

    @invariant()
    def quantities_are_decimal_and_never_negative(self) -> None:
        if self.ledger is None:
            return
        for state in self.led.positions():
            for value in (state.size, state.realized_pnl, state.fees, state.funding):
                assert type(value) is Decimal
            assert state.size >= 0
            assert (state.side is None) == (state.size == 0)
            assert (state.status is Status.OPEN) == (state.size > 0)
            if state.size == 0:
                assert state.avg_entry_price is None
            if state.avg_entry_price is not None:
                assert type(state.avg_entry_price) is Decimal and state.avg_entry_price > 0
            assert state.side in (None, state.key.leg_side) or state.key.leg_side is None
            for order in state.pending_orders:
                assert type(order.qty) is Decimal and order.qty > 0
                assert type(order.filled) is Decimal and order.filled >= 0

    @invariant()
    def keys_told_everything_match_the_exchange(self) -> None:
        if self.ledger is None:
            return
        for key in self.clean:
            assert ledger_signed(self.led.position(key)) == self.exchange.sizes[key], (
                f"{key}: every execution was delivered in order, yet the ledger differs"
            )


TestExchangeAndLedger = ExchangeAndLedger.TestCase  # settings: the loaded profile (ci/slow/dev)


# --- whole scripted histories (posledger.testing.strategies) -----------------------------


INVERSE_KEYS = tuple(
    PositionKey(venue="bybit", account="main", category="inverse", symbol=symbol, idx=idx)
    for symbol, idx in (("BTCUSD", 0), ("ETHUSD", 1), ("ETHUSD", 2))
)


@given(
    history=exchange_histories(max_steps=25) | exchange_histories(keys=INVERSE_KEYS, max_steps=25)
)
def test_a_ledger_told_everything_follows_the_exchange(history: ExchangeHistory) -> None:
    """Sizes exactly, and averages (arithmetic on linear keys, harmonic on inverse ones, the
    exchange model's own Decimal arithmetic) to far better than a price tick."""
    with Ledger.open("memory://", clock=no_wall_clock) as ledger:
        for step in history.steps:
            step.apply(ledger)
            for key, size in step.positions.items():
                state = ledger.position(key)
                assert ledger_signed(state) == size
                if size and state is not None and state.avg_entry_price is not None:
                    expected = step.avg_prices[key]
                    assert abs(state.avg_entry_price - expected) <= expected * Decimal("1e-20")


@given(history=exchange_histories(min_steps=1, max_steps=25), data=st.data())
def test_two_confirming_snapshots_recover_missed_executions(
    history: ExchangeHistory, data: st.DataObject
) -> None:
    executions = [
        i
        for i, step in enumerate(history.steps)
        if isinstance(step.action, Executed) and step.action.fill.kind is not ExecKind.FUNDING
    ]
    missed = data.draw(st.sets(st.sampled_from(executions)) if executions else st.just(set()))
    policy = ReconcilePolicy(grace=timedelta(0))
    with Ledger.open("memory://", policy=policy, clock=no_wall_clock) as ledger:
        for i, step in enumerate(history.steps):
            action = step.action
            if i in missed:
                continue
            if isinstance(action, OrderPlaced) and action.reduce_only:
                state = ledger.position(action.key)
                if state is not None and state.side is action.side:
                    continue  # the bot, misled by what it missed, would not send this exit
            step.apply(ledger)
        first = history.snapshot()
        second = attrs.evolve(first, taken_at=first.taken_at + timedelta(seconds=1))
        for snapshot in (first, second):
            ledger.reconcile(snapshot, now=snapshot.taken_at)
        for key, size in history.positions().items():
            assert ledger_signed(ledger.position(key)) == size


@dataclass(frozen=True)
class Plan:
    """What happens to the ledger around one exchange step."""

    miss: bool
    """The step is an execution (heard of late, or never) or a cancellation (never heard of)
    that the ledger misses."""
    reads: tuple[tuple[int, str], ...]
    """Snapshots reconciled after the step: (how many steps old, rows as), 0 = fresh."""
    late: tuple[int, ...]
    """Missed executions that arrive after the reads (indices into those still missing)."""


READ = st.none() | st.tuples(st.sampled_from((0, 0, 1, 2, 3, 5, 8, 13)), ROWS)
PLAN = st.builds(
    Plan,
    miss=st.booleans(),
    reads=st.tuples(READ, READ).map(lambda reads: tuple(r for r in reads if r is not None)),
    late=st.lists(st.integers(0, 20), max_size=3).map(tuple),
)


@given(
    history=exchange_histories(keys=KEYS, min_steps=10, max_steps=24, notes=PLAN),
    confirmations=st.sampled_from((1, 2)),
)
def test_corrections_then_late_executions(history: ExchangeHistory, confirmations: int) -> None:
    """Executions go missing, snapshots (fresh and stale; Bybit rows, flat rows, rows without
    seq) correct the ledger, and the missing executions arrive late, in batches, the rest at
    the end. Every key's history must still explain its size (``fold_history``: before/after of
    each correction, corrections never going back in time, late executions absorbed exactly when
    the last correction's snapshot reflected them, no request cleared by an older snapshot)."""
    policy = ReconcilePolicy(grace=timedelta(0), confirmations=confirmations)
    waiting: list[tuple[PositionKey, Fill]] = []

    def deliver(chosen: set[int]) -> None:
        nonlocal waiting
        for key in KEYS:
            batch = [f for j, (k, f) in enumerate(waiting) if j in chosen and k == key]
            if batch:
                ledger.record_fills(key, batch)
        waiting = [w for j, w in enumerate(waiting) if j not in chosen]

    with Ledger.open("memory://", policy=policy, clock=no_wall_clock) as ledger:
        for i, step in enumerate(history.steps):
            action, plan = step.action, step.note
            assert isinstance(plan, Plan)
            if (
                isinstance(action, Executed)
                and action.fill.kind is not ExecKind.FUNDING
                and plan.miss
            ):
                waiting.append((action.key, action.fill))
            elif isinstance(action, OrderCancelled) and plan.miss:
                pass  # a cancellation nobody reported: the request stays pending
            elif isinstance(action, OrderPlaced) and action.reduce_only:
                state = ledger.position(action.key)
                if state is None or state.side is not action.side:
                    step.apply(ledger)  # the bot, misled by what it missed, may not send it
            else:
                step.apply(ledger)
            now = step.at
            for back, rows in plan.reads:
                now += timedelta(milliseconds=1)
                index = max(0, i - back)
                snapshot = history.snapshot(
                    index, flat_rows=rows == "flat rows", with_seq=rows != "no seq"
                )
                if index == i:
                    snapshot = attrs.evolve(snapshot, taken_at=now)
                report = ledger.reconcile(snapshot, now=now)
                for outcome in report.corrections:
                    tally(f"{'stale' if index < i else 'fresh'} read: {outcome.correction}")
            if waiting:
                deliver({j % len(waiting) for j in plan.late})
        deliver(set(range(len(waiting))))
        applied: Counter[str] = Counter()
        for key in KEYS:
            history_of_key = ledger.history(key)
            if any(getattr(e, "absorbed", False) for e in history_of_key):
                tally("a late execution was absorbed")
            folded, exec_ids = fold_history(key, history_of_key)
            applied.update(exec_ids)
            assert ledger_signed(ledger.position(key)) == folded
        assert all(n == 1 for n in applied.values())


# --- minimal reproductions of what the properties above found ------------------------------


def at_minute(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def complete_read(taken_at: datetime, *rows: ExchangePosition) -> Snapshot:
    return Snapshot(
        venue="bybit",
        account="main",
        category="linear",
        taken_at=taken_at,
        positions=rows,
        open_order_ids=frozenset(),
    )


def btc_row(size: str, seq: int | None) -> ExchangePosition:
    return ExchangePosition(symbol="BTCUSDT", idx=0, side=Side.BUY, size=Decimal(size), seq=seq)


@pytest.mark.parametrize(
    ("second_read", "exchange_after"),
    [
        # the exchange sold the 1 held (seq 6, missed): a category-wide read omits the flat row
        (complete_read(at_minute(12)), ("sell", "1", ZERO)),
        # the exchange bought 0.1 more (seq 6, missed): read from a venue without seq
        (complete_read(at_minute(12), btc_row("1.1", None)), ("buy", "0.1", Decimal("1.1"))),
    ],
    ids=["phantom-from-a-flat-omitted-row", "stale-quantity-from-a-row-without-seq"],
)
def test_a_late_execution_the_last_correction_reflected_is_absorbed(
    second_read: Snapshot, exchange_after: tuple[str, str, Decimal]
) -> None:
    side, qty, truth = exchange_after
    policy = ReconcilePolicy(grace=timedelta(0), confirmations=1)
    with Ledger.open("memory://", policy=policy, clock=no_wall_clock) as ledger:
        # missed: buy 1 (seq 5). Adopted from a read whose row carries seq 5.
        ledger.reconcile(complete_read(at_minute(10), btc_row("1", 5)), now=at_minute(10))
        # missed: the execution at minute 11 (seq 6); corrected from a read at minute 12
        ledger.reconcile(second_read, now=at_minute(12))
        assert ledger_signed(ledger.position(BTC)) == truth
        # the missed execution arrives late: the minute-12 read already reflected it
        late = Fill(
            exec_id="e6",
            order_id="",
            side=side,
            qty=Decimal(qty),
            price=Decimal(100),
            exec_time=at_minute(11),
            seq=6,
        )
        ledger.record_fill(BTC, late)
        applied = ledger.history(BTC)[-1]
        assert isinstance(applied, Filled) and applied.exec_id == "e6"
        assert applied.absorbed, "reflected by the last correction, yet applied a second time"
        assert ledger_signed(ledger.position(BTC)) == truth


@pytest.mark.parametrize(
    "policy",
    [ReconcilePolicy(grace=timedelta(0), confirmations=1), ReconcilePolicy()],
    ids=["no-grace", "defaults"],
)
def test_a_snapshot_never_clears_a_request_placed_after_it_was_taken(
    policy: ReconcilePolicy,
) -> None:
    with Ledger.open("memory://", policy=policy, clock=no_wall_clock) as ledger:
        ledger.request_open(BTC, order_id="o1", side=Side.BUY, qty=Decimal(1), at=at_minute(10))
        # two reads taken 2 s and 1 s BEFORE the request, reconciled late (a slow paginated
        # read, another process's snapshot), past grace
        for seconds in (2, 1):
            taken = at_minute(10) - timedelta(seconds=seconds)
            ledger.reconcile(
                complete_read(taken), now=at_minute(11) + timedelta(seconds=3 - seconds)
            )
        state = ledger.position(BTC)
        assert state is not None
        assert state.pending("o1") is not None, "a request younger than the snapshot was cleared"
        assert state.status is Status.PENDING
