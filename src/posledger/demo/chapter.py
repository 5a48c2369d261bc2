"""What a chapter of the demo holds (the commands run, the events each wrote, the reports) and
the :class:`Recorder` that runs a chapter's commands against a ledger and keeps all of it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import attrs

from posledger.audit.format import direction, holding
from posledger.core.errors import ExchangeUnavailable
from posledger.core.events import (
    Closed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExitRequested,
    KeyRegistered,
    OpenRequested,
    OrderEnded,
    PositionEvent,
    Reconciled,
)
from posledger.core.model import Fill, PositionKey, Side, Snapshot
from posledger.core.position import PositionState, evolve
from posledger.core.reconcile import ReconcileReport
from posledger.ledger import Ledger


@attrs.frozen
class Command:
    """One thing that happened: a ledger call (or an exchange-side fact) and what came of it."""

    at: datetime
    call: str
    result: str


@attrs.frozen
class Written:
    """One event a command wrote, with the key's state just before and just after it.

    ``name``, ``symbol``, ``label`` (correction kind, close reason, execution kind, ...),
    ``change`` and ``why`` are plain text for display; ``event``, ``before`` and ``after`` are
    the real objects.
    """

    key: PositionKey
    event: PositionEvent
    before: PositionState
    after: PositionState
    label: str
    why: str

    @property
    def name(self) -> str:
        return type(self.event).__name__

    @property
    def symbol(self) -> str:
        return self.key.symbol

    @property
    def change(self) -> str:
        return f"{holding(self.before)} -> {holding(self.after)}"


@attrs.frozen
class Chapter:
    number: int
    seed: str
    title: str
    narrative: str
    commands: tuple[Command, ...]
    events: tuple[Written, ...]
    reports: tuple[ReconcileReport, ...]
    open_before: tuple[PositionState, ...]
    open_after: tuple[PositionState, ...]

    @property
    def started_at(self) -> datetime:
        return self.commands[0].at

    def events_for(self, key: PositionKey) -> list[PositionEvent]:
        return [w.event for w in self.events if w.key == key]


# --- plain-text descriptions -----------------------------------------------------------------


def describe(state: PositionState) -> str:
    """The state in one line: what is held, at what average, and which orders are working."""
    text = holding(state)
    if state.avg_entry_price is not None:
        text += f" @ {state.avg_entry_price}"
    if state.pending_orders:
        text += f" (orders working: {', '.join(o.order_id for o in state.pending_orders)})"
    return text


def _label(event: PositionEvent) -> str:
    if isinstance(event, Reconciled):
        return event.kind
    if isinstance(event, Closed):
        return event.reason
    if isinstance(event, ExchangeSnapshot):
        return "suspect" if event.suspect else "agrees"
    if isinstance(event, ExecutionEvent):
        return event.kind
    if isinstance(event, OrderEnded):
        return event.status
    if isinstance(event, ExitRequested):
        return "reduce-only"
    if isinstance(event, OpenRequested):
        return "open"
    return ""


def _why(event: PositionEvent, after: PositionState, confirmations: int) -> str:
    if isinstance(event, OpenRequested | ExitRequested):
        limit = f" @ {event.price}" if event.price is not None else " at market"
        return f"order {event.order_id}: {event.side} {event.qty}{limit}"
    if isinstance(event, ExecutionEvent):
        order = after.pending(event.order_id)
        left = f", {order.remaining} left on the order" if order is not None else ""
        return f"exec {event.exec_id}: {event.side} {event.qty} @ {event.price}{left}"
    if isinstance(event, ExchangeSnapshot):
        shown = f"{direction(event.side)} {event.size}" if event.side else "flat"
        return f"exchange shows {shown}: {event.confirmations}/{confirmations} snapshots"
    if isinstance(event, Reconciled):
        cleared = f"; cleared {', '.join(event.cleared_orders)}" if event.cleared_orders else ""
        return f"confirmed by {event.confirmations} snapshots{cleared}"
    if isinstance(event, Closed):
        return (
            f"lifecycle {event.lifecycle} ended: realized PnL {event.realized_pnl}, "
            f"fees {event.fees}"
        )
    if isinstance(event, OrderEnded):
        return f"order {event.order_id} ended"
    return ""


def _args(**fields: object) -> str:
    return ", ".join(f"{name}={value}" for name, value in fields.items())


# --- the recorder: runs commands against the ledger and keeps what they wrote ---------------


class Recorder:
    """Runs one chapter's commands against a ledger, keeping each command, its events and its
    reports. ``take()`` hands them over and starts the next chapter."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.commands: list[Command] = []
        self.events: list[Written] = []
        self.reports: list[ReconcileReport] = []

    def take(self) -> tuple[tuple[Command, ...], tuple[Written, ...], tuple[ReconcileReport, ...]]:
        taken = (tuple(self.commands), tuple(self.events), tuple(self.reports))
        self.commands, self.events, self.reports = [], [], []
        return taken

    # commands

    def request_open(
        self, key: PositionKey, order_id: str, side: Side, qty: str, price: str, at: datetime
    ) -> None:
        fields = _args(order_id=order_id, side=side.value, qty=qty, price=price)
        self._run(
            at,
            f"request_open({key.symbol}, {fields})",
            lambda: describe(
                self.ledger.request_open(
                    key, order_id=order_id, side=side, qty=Decimal(qty), price=Decimal(price), at=at
                )
            ),
        )

    def request_exit(
        self, key: PositionKey, order_id: str, qty: str, price: str, at: datetime
    ) -> None:
        fields = _args(order_id=order_id, qty=qty, price=price)
        self._run(
            at,
            f"request_exit({key.symbol}, {fields})",
            lambda: describe(
                self.ledger.request_exit(
                    key, order_id=order_id, qty=Decimal(qty), price=Decimal(price), at=at
                )
            ),
        )

    def fill(self, key: PositionKey, fill: Fill) -> None:
        fields = _args(
            exec_id=fill.exec_id,
            order_id=fill.order_id,
            side=fill.side.value,
            qty=fill.qty,
            price=fill.price,
            fee=fill.fee,
        )

        def record() -> str:
            result = self.ledger.record_fill(key, fill)
            state = self.ledger.position(key)
            assert state is not None
            return f"{result.event or 'duplicate'}: {describe(state)}"

        self._run(fill.exec_time, f"record_fill({key.symbol}, Fill({fields}))", record)

    def reconcile(self, snapshot: Snapshot) -> None:
        rows = (
            ", ".join(
                f"{p.symbol} {direction(p.side)} {p.size}" for p in snapshot.positions if p.side
            )
            or "flat"
        )

        def judge() -> str:
            report = self.ledger.reconcile(snapshot, now=snapshot.taken_at)
            self.reports.append(report)
            return f"{report.events_written} event(s) written"

        self._run(snapshot.taken_at, f"reconcile(Snapshot({snapshot.account}: {rows}))", judge)

    def failed_read(self, at: datetime) -> None:
        """A Bybit read fails: the error is raised instead of a snapshot, so there is nothing to
        reconcile, and the ledger is left exactly as it was."""
        before = self._states()
        try:
            self.ledger.reconcile(_bybit_position_read(at), now=at)
        except ExchangeUnavailable as error:
            unchanged = self._states() == before
            result = (
                f"raised ExchangeUnavailable({error}): not a snapshot; "
                f"ledger {'unchanged' if unchanged else 'CHANGED'}"
            )
        else:  # pragma: no cover - _bybit_position_read always raises
            raise AssertionError("a failed read returned a snapshot")
        self.commands.append(Command(at, "bybit.get_positions(category='linear')", result))

    def offstage(self, at: datetime, what: str) -> None:
        """Something that happened on the exchange and never reached the bot."""
        self.commands.append(Command(at, f"(on Bybit) {what}", "never delivered: nothing recorded"))

    def check(self, at: datetime, call: str, result: str) -> None:
        """A plain check shown alongside the commands (a query, an arithmetic fact)."""
        self.commands.append(Command(at, call, result))

    # machinery

    def _states(self) -> dict[PositionKey, PositionState]:
        return {state.key: state for state in self.ledger.positions()}

    def _run(self, at: datetime, call: str, action: Callable[[], str]) -> None:
        """Run one command and keep every event it wrote, on any key, with the states around it."""
        before = self._states()
        result = action()
        confirmations = self.ledger.policy.confirmations
        for key, after in self._states().items():
            known = before.get(key)
            if known is not None and known.version == after.version:
                continue
            state = known
            for event in self.ledger.history(key)[known.version if known else 0 :]:
                previous, state = state, evolve(state, event)
                if previous is None or isinstance(event, KeyRegistered):
                    continue  # stream bookkeeping, not part of the story
                self.events.append(
                    Written(
                        key,
                        event,
                        previous,
                        state,
                        _label(event),
                        _why(event, state, confirmations),
                    )
                )
        self.commands.append(Command(at, call, result))


def _bybit_position_read(at: datetime) -> Snapshot:
    """The read that failed in seed 000. In the incident it returned ``None``, which the bot
    could not tell apart from "no position"; here it can only raise."""
    raise ExchangeUnavailable(f"GET /v5/position/list timed out at {at:%H:%M:%S}")
