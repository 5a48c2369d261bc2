"""Several books trading one exchange account, driven by hypothesis beside a simulated exchange
(docs/books.md#reconciliation).

The exchange (``SimulatedExchange``) holds only the account's true net position per symbol (one-way
mode) and the orders working. Each run draws 1-4 books (the default book among them or not),
an ``AllocationPolicy`` (the unassigned book, the causes shared pro rata) and a reconcile
policy. Books request orders; their executions reach the ledger in their book, through the
account (``record_account_fills``, the way a synchronizer recovers them), twice, late, or not
at all; the exchange liquidates, deleverages, trades by hand and charges funding on its own,
told only through the account. Snapshots are reconciled as time moves on.

At every step: the books sum to the account's position; the books' funding sums to what the
exchange charged, exactly; every change of a book's size is its own order's execution or an
allocated share (``Allocated`` first); and after two confirming snapshots with nothing in
between, the account equals the exchange.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import event as tally
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from posledger import (
    AllocationPolicy,
    ExchangePosition,
    ExecKind,
    Fill,
    Ledger,
    PositionKey,
    PositionState,
    ReconcilePolicy,
    Side,
    Snapshot,
)
from posledger.core.decide import FillResult
from posledger.core.events import Allocated, Filled, PartiallyFilled, Reconciled
from posledger.core.position import evolve
from posledger.core.reconcile import Outcome
from posledger.testing.strategies import SimulatedExchange, WorkingOrder, decimals_qty, prices
from tests.ledger.machine import LedgerMachine, no_wall_clock

ZERO = Decimal(0)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
BTC = PositionKey(venue="bybit", account="main", category="linear", symbol="BTCUSDT")
SOL = PositionKey(venue="bybit", account="main", category="linear", symbol="SOLUSDT")
ACCOUNTS = (BTC, SOL)
"""Two one-way symbols of one account: routing one must never touch the other."""
BOOK_NAMES = ("", "alpha", "beta", "gamma", "delta")
"""The default book, then named ones: a run takes the first n, with the default book or not."""
SHAREABLE = ("adl", "liquidation", "trade", "phantom", "stale_quantity", "side_mismatch")
PRO_RATA = (
    frozenset(),
    frozenset(SHAREABLE),
    frozenset({"phantom", "stale_quantity", "side_mismatch"}),
    frozenset({"adl", "liquidation", "trade"}),
)
"""Nothing, everything, only corrections, only executions shared pro rata (or any subset)."""
POLICIES = {
    "no grace": ReconcilePolicy(grace=timedelta(0)),
    "defaults (60 s grace)": ReconcilePolicy(),
}

QTY = decimals_qty(min_value="0.01", max_value="3", places=2)
PRICE = prices(min_value="10", max_value="200", places=1)
FEE = st.decimals(min_value="-0.01", max_value="0.05", places=4)
PICK = st.integers(min_value=0, max_value=1_000)
SIDES = st.sampled_from((Side.BUY, Side.SELL))
DELIVERY = st.sampled_from(("book", "book", "account", "twice", "miss"))
"""How an execution of a book's order reaches the ledger: recorded in its book (the bot's own
stream), through the account key, in its book and again through the account (a duplicate), or
not at all (recovered later through the account)."""
AT_ONCE = {"market": st.booleans(), "price": PRICE, "fee": FEE, "how": DELIVERY}
"""A request's draws for a market order: whether it is one, and how its execution goes."""


class BooksOnAnAccount(LedgerMachine, RuleBasedStateMachine):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="posledger-books-")
        self.url = "memory://" if backend == "memory" else f"sqlite:///{Path(self.dir) / 'l.db'}"
        self.durable = backend != "memory"
        self.now = T0
        self.exchange = SimulatedExchange(sizes=dict.fromkeys(ACCOUNTS, ZERO))
        self.funding_paid = dict.fromkeys(ACCOUNTS, ZERO)
        self.books: tuple[str, ...] = ("",)
        self.allocation = AllocationPolicy()
        self.policy = POLICIES["no grace"]
        self.ledger: Ledger | None = None
        self.owner: dict[str, str] = {}
        """The book each order was requested in."""
        self.delivered: list[Fill] = []
        self.missed: list[Fill] = []
        self.checked: dict[PositionKey, tuple[int, PositionState | None]] = {}
        """Per book key: how many of its events were checked, and the state they fold to."""
        self.counter = 0
        self.clean = set(ACCOUNTS)
        """Accounts the ledger must agree with now: every execution told, none overfilled, or
        those still missing reflected by the last correction (so absorbed when they come)."""

    def open_ledger(self) -> None:
        self.ledger = Ledger.open(
            self.url, policy=self.policy, allocation=self.allocation, clock=no_wall_clock
        )

    def held(self) -> list[PositionKey]:
        return [key for key in ACCOUNTS if self.exchange.sizes[key] != 0]

    def fill(
        self, key: PositionKey, side: Side, qty: Decimal, price: Decimal, **more: object
    ) -> Fill:
        seq = self.exchange.execute(key, side, qty, price)
        return Fill(
            exec_id=self.next_id("e"),
            side=side,
            qty=qty,
            price=price,
            exec_time=self.now,
            seq=seq,
            symbol=key.symbol,
            **more,  # type: ignore[arg-type]
        )

    def record_account(self, key: PositionKey, fills: list[Fill]) -> None:
        """Executions told through the account key (in the exchange's order): each new one is
        applied once, wherever it goes."""
        result = self.led.record_account_fills(key, fills)
        self.overfilled(key, result.fills)
        assert [r.exec_id for r in result.fills] == list(dict.fromkeys(f.exec_id for f in fills))
        known = {f.exec_id for f in self.delivered}
        for item in result.fills:
            assert item.duplicate == (item.exec_id in known), item
        self.delivered += [f for f in fills if f.exec_id not in known]

    def overfilled(self, key: PositionKey, results: Sequence[FillResult]) -> None:
        """An exit sized on its book that the exchange executed against the account (the book
        had been reduced meanwhile): the book stops at flat, the account differs until
        reconciled."""
        if any(r.overfill > 0 for r in results):
            tally("execution: overfilled its book")
            self.clean.discard(key)

    def reconcile(self) -> set[PositionKey]:
        """Reconcile a snapshot taken now; the accounts it corrected."""
        snapshot = Snapshot(
            venue="bybit",
            account="main",
            category="linear",
            taken_at=self.now,
            positions=[
                ExchangePosition(
                    symbol=key.symbol,
                    idx=0,
                    side=Side.BUY if size > 0 else Side.SELL,
                    size=abs(size),
                    avg_price=self.exchange.avgs.get(key),
                    seq=self.exchange.seqs.get(key),
                )
                for key, size in self.exchange.sizes.items()
                if size != 0
            ],
            open_order_ids=frozenset(self.exchange.orders),
        )
        report = self.led.reconcile(snapshot, now=self.now)
        for outcome in report.outcomes:
            assert outcome.key.book == "", "a book judged apart from its account"
            tally(f"reconcile: {outcome.outcome.value} {outcome.correction or ''}".strip())
        return {o.key for o in report.outcomes if o.outcome is Outcome.CORRECTED}

    # --- setup ---------------------------------------------------------------------------

    @initialize(
        books=st.integers(min_value=1, max_value=4).flatmap(
            lambda n: st.sampled_from((BOOK_NAMES[:n], BOOK_NAMES[1 : n + 1]))
        ),
        unassigned=st.sampled_from(("", "manual", "alpha")),
        pro_rata=st.sampled_from(PRO_RATA) | st.sets(st.sampled_from(SHAREABLE)),
        policy=st.sampled_from(sorted(POLICIES)),
    )
    def start(
        self, books: tuple[str, ...], unassigned: str, pro_rata: frozenset[str], policy: str
    ) -> None:
        self.books = books
        self.allocation = AllocationPolicy(unassigned=unassigned, pro_rata=pro_rata)
        self.policy = POLICIES[policy]
        note(f"books {self.books}, {self.allocation}")
        tally(f"books: {len(self.books)}")
        self.open_ledger()

    def teardown(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the books trade -----------------------------------------------------------------

    @rule(pick=PICK, key=st.sampled_from(ACCOUNTS), side=SIDES, qty=QTY, **AT_ONCE)
    def request_open(
        self,
        pick: int,
        key: PositionKey,
        side: Side,
        qty: Decimal,
        market: bool,
        price: Decimal,
        fee: Decimal,
        how: str,
    ) -> None:
        """A book places an order: a limit order that rests, or a market order, executed at once."""
        book = self.books[pick % len(self.books)]
        order_id = self.next_id("o")
        self.tick()
        self.owner[order_id] = book
        self.exchange.orders[order_id] = WorkingOrder(key, side, qty, reduce_only=False)
        self.led.request_open(key.in_book(book), order_id=order_id, side=side, qty=qty, at=self.now)
        if market:
            self.executed(order_id, True, price, fee, how)

    @rule(pick=PICK, key=st.sampled_from(ACCOUNTS), part=st.integers(1, 4), **AT_ONCE)
    def request_exit(
        self,
        pick: int,
        key: PositionKey,
        part: int,
        market: bool,
        price: Decimal,
        fee: Decimal,
        how: str,
    ) -> None:
        """A book closes (part of) what it holds, reduce-only on the exchange as well."""
        book = self.books[pick % len(self.books)]
        state = self.led.position(key.in_book(book))
        if state is None or state.side is None:
            return
        qty = max(Decimal("0.01"), (state.size * part / 4).quantize(Decimal("0.01")))
        order_id = self.next_id("x")
        self.tick()
        self.owner[order_id] = book
        self.exchange.orders[order_id] = WorkingOrder(
            key, state.side.opposite, qty, reduce_only=True
        )
        self.led.request_exit(key.in_book(book), order_id=order_id, qty=qty, at=self.now)
        if market and order_id in self.executable():
            self.executed(order_id, True, price, fee, how)

    @precondition(lambda self: bool(self.executable()))
    @rule(pick=PICK, whole=st.booleans(), price=PRICE, fee=FEE, how=DELIVERY)
    def execute(self, pick: int, whole: bool, price: Decimal, fee: Decimal, how: str) -> None:
        """The exchange executes (half of) a working order."""
        candidates = self.executable()
        self.executed(candidates[pick % len(candidates)], whole, price, fee, how)

    def executed(self, order_id: str, whole: bool, price: Decimal, fee: Decimal, how: str) -> None:
        """The exchange executes (half of) ``order_id``; the ledger hears of it by ``how``."""
        order = self.exchange.orders[order_id]
        qty = order.remaining
        if order.reduce_only:
            qty = min(qty, self.exchange.reducible(order.key, order.side))
        if not whole and qty >= Decimal("0.02"):
            qty = (qty / 2).quantize(Decimal("0.01"))
        order.remaining -= qty
        if order.remaining == 0:
            del self.exchange.orders[order_id]
        self.tick()
        fill = self.fill(
            order.key,
            order.side,
            qty,
            price,
            order_id=order_id,
            fee=fee,
            leaves_qty=order.remaining,
        )
        book_key = order.key.in_book(self.owner[order_id])
        tally(f"execution: {how}")
        if how == "miss":
            self.missed.append(fill)
            self.clean.discard(order.key)
            return
        if how == "account":
            self.record_account(order.key, [fill])
            return
        result = self.led.record_fills(book_key, [fill])
        self.overfilled(order.key, result.fills)
        assert [r.duplicate for r in result.fills] == [False]
        self.delivered.append(fill)
        if how == "twice":
            self.record_account(order.key, [fill])

    @precondition(lambda self: bool(self.exchange.orders))
    @rule(pick=PICK, told=st.booleans(), via_account=st.booleans())
    def order_end(self, pick: int, told: bool, via_account: bool) -> None:
        order_id = sorted(self.exchange.orders)[pick % len(self.exchange.orders)]
        order = self.exchange.orders.pop(order_id)
        self.tick()
        if told:
            key = order.key if via_account else order.key.in_book(self.owner[order_id])
            self.led.record_order_end(key, order_id=order_id, status="Cancelled", at=self.now)

    # --- the exchange acts on its own ----------------------------------------------------

    @rule(
        key=st.sampled_from(ACCOUNTS),
        kind=st.sampled_from((ExecKind.ADL, ExecKind.LIQUIDATION, ExecKind.TRADE)),
        side=SIDES,
        qty=QTY,
        price=PRICE,
        fee=FEE,
        told=st.booleans(),
    )
    def exchange_execution(
        self,
        key: PositionKey,
        kind: ExecKind,
        side: Side,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        told: bool,
    ) -> None:
        """A liquidation (all), an ADL (part) or a trade by hand (either side), of no order the
        ledger knows: told through the account at once, or recovered later."""
        size = self.exchange.sizes[key]
        order_id = self.next_id("web-") if kind is ExecKind.TRADE else ""
        if kind is not ExecKind.TRADE:
            if size == 0:
                return
            side = Side.SELL if size > 0 else Side.BUY
            qty = abs(size) if kind is ExecKind.LIQUIDATION else min(qty, abs(size))
        self.tick()
        fill = self.fill(key, side, qty, price, order_id=order_id, fee=fee, kind=kind)
        tally(f"{kind.value}: {'told' if told else 'missed'}")
        if told:
            self.record_account(key, [fill])
        else:
            self.missed.append(fill)
            self.clean.discard(key)

    @precondition(lambda self: bool(self.held()))
    @rule(
        pick=PICK, rate=st.decimals("-0.001", "0.001", places=5), price=PRICE, twice=st.booleans()
    )
    def funding(self, pick: int, rate: Decimal, price: Decimal, twice: bool) -> None:
        """Funding on the account's whole position (``qty`` the exchange's size), always told."""
        held = self.held()
        key = held[pick % len(held)]
        size = self.exchange.sizes[key]
        self.tick()
        fee = abs(size) * price * rate
        self.funding_paid[key] += fee
        funding = Fill(
            exec_id=self.next_id("f"),
            order_id="",
            side=Side.BUY if size > 0 else Side.SELL,
            qty=abs(size),
            price=price,
            fee=fee,
            exec_time=self.now,
            kind=ExecKind.FUNDING,
            symbol=key.symbol,
        )
        self.record_account(key, [funding, funding] if twice else [funding])

    # --- recovery, snapshots, time -------------------------------------------------------

    @precondition(lambda self: bool(self.missed))
    @rule(pick=PICK, everything=st.booleans())
    def recover(self, pick: int, everything: bool) -> None:
        """Missed executions read back from the account's history (all of them, per symbol in the
        exchange's order, as a synchronizer after a gap; or one, late)."""
        self.tick()
        if everything:
            batch, self.missed = self.missed, []
        else:
            batch = [self.missed.pop(pick % len(self.missed))]
        for key in ACCOUNTS:
            fills = sorted((f for f in batch if f.symbol == key.symbol), key=Fill.exchange_order)
            if fills:
                self.record_account(key, fills)

    @rule()
    def snapshot_now(self) -> None:
        self.tick()
        self.reconcile()

    @rule(backfill=st.booleans())
    def settle(self, backfill: bool) -> None:
        """Nothing happens past grace; two complete snapshots: the account equals the exchange.
        Then, as a synchronizer back from an outage, maybe the missed executions are read back
        (those the correction counted must then be absorbed wherever they land)."""
        self.now += self.policy.grace + timedelta(seconds=1)
        corrected: set[PositionKey] = set()
        for _ in range(2):
            self.tick()
            corrected |= self.reconcile()
        for key in ACCOUNTS:
            if key in corrected or not any(f.symbol == key.symbol for f in self.missed):
                self.clean.add(key)
            view = self.led.account_position(key)
            held = ZERO if view is None else view.signed_size
            assert held == self.exchange.sizes[key], (
                f"{key}: the books hold {held}, the exchange {self.exchange.sizes[key]}, "
                "after two confirming snapshots"
            )
        if backfill and self.missed:
            self.recover(0, everything=True)

    @rule(seconds=st.integers(min_value=1, max_value=600))
    def advance(self, seconds: int) -> None:
        self.tick(seconds)

    @precondition(lambda self: self.durable)
    @rule()
    def restart(self) -> None:
        self.led.close()
        self.open_ledger()

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def books_sum_to_the_account(self) -> None:
        if self.ledger is None:
            return
        for key in ACCOUNTS:
            books = self.led.books(key)
            view = self.led.account_position(key)
            # the default book too: what an account held before it had named books
            assert {s.key.book for s in books} <= {*self.books, self.allocation.unassigned, ""}
            total = sum((s.signed_size for s in books), ZERO)
            assert total == (ZERO if view is None else view.signed_size)
            assert all(s.key.account_key == key for s in books)

    @invariant()
    def accounts_told_everything_equal_the_exchange(self) -> None:
        if self.ledger is None:
            return
        for key in self.clean:
            view = self.led.account_position(key)
            held = ZERO if view is None else view.signed_size
            assert held == self.exchange.sizes[key], f"{key}: {held} != {self.exchange.sizes[key]}"

    @invariant()
    def funding_sums_to_what_the_exchange_charged(self) -> None:
        if self.ledger is None:
            return
        for key in ACCOUNTS:
            funding = sum((s.funding for s in self.led.books(key)), ZERO)
            assert funding == self.funding_paid[key], f"{key}: books {funding}"

    @invariant()
    def every_change_of_a_book_is_its_own_or_allocated(self) -> None:
        """A book's size moves only by its own order's execution, or by a share announced by the
        ``Allocated`` just before it (an execution of no order, or a correction of an account
        with named books): never by another book's fill."""
        if self.ledger is None:
            return
        for account in ACCOUNTS:
            named = self.led.has_books(account)
            for state in self.led.books(account):
                self.check_history(state.key, named)

    def check_history(self, key: PositionKey, named: bool) -> None:
        count, state = self.checked.get(key, (0, None))
        history = self.led.history(key)
        previous = history[count - 1] if count else None
        for event in history[count:]:
            before = ZERO if state is None else state.signed_size
            state = evolve(state, event)
            moved = state.signed_size != before
            allocated = isinstance(previous, Allocated)
            if isinstance(event, Allocated):
                what = "correction" if event.exec_id is None else "execution"
                tally(f"allocated: {event.rule} ({what})")
            if isinstance(event, Filled | PartiallyFilled) and event.absorbed:
                tally("execution: absorbed")
            if isinstance(event, Filled | PartiallyFilled):
                # without named books the default book is the account: all is its own
                own = self.owner.get(event.order_id) == key.book or not named
                assert not moved or own or allocated, f"{key}: moved by {event}"
                if allocated:  # an execution of no known order (a named book's has a marker)
                    assert previous.exec_id == event.exec_id  # type: ignore[union-attr]
                    assert not self.owner.get(event.order_id), f"{key}: allocated {event}"
            elif isinstance(event, Reconciled):
                assert not moved or allocated or not named, f"{key}: moved by {event}"
            else:
                assert not moved, f"{key}: moved by {event}"
            previous = event
        self.checked[key] = (len(history), state)
        assert state == self.led.position(key)


def machine(backend: str) -> Callable[[], BooksOnAnAccount]:
    return lambda: BooksOnAnAccount(backend)


@pytest.mark.parametrize(("backend", "share"), [("memory", 1), ("sqlite", 3)])
def test_books_on_one_account_follow_the_exchange(backend: str, share: int) -> None:
    """The loaded profile's runs (ci/slow/dev) in memory; a third of them on SQLite, where a
    step costs about 2.5 times as much (the file stays under a minute under ``ci``)."""
    runs = max(1, settings.default.max_examples // share)
    run_state_machine_as_test(machine(backend), settings=settings(max_examples=runs))
