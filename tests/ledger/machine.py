"""What the stateful tests' machines share: a ledger opened and reopened by the machine, a clock
it moves itself, fresh ids, and the exchange orders that can still execute."""

from __future__ import annotations

from datetime import datetime, timedelta

from posledger import Ledger
from posledger.testing.strategies import SimulatedExchange


def no_wall_clock() -> datetime:
    raise AssertionError("every command must be given its time explicitly")


class LedgerMachine:
    """Mixed into a ``RuleBasedStateMachine`` that sets ``ledger``, ``now``, ``counter`` and
    ``exchange`` in its ``__init__``."""

    ledger: Ledger | None
    now: datetime
    counter: int
    exchange: SimulatedExchange

    @property
    def led(self) -> Ledger:
        assert self.ledger is not None
        return self.ledger

    def tick(self, seconds: int = 1) -> None:
        self.now += timedelta(seconds=seconds)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def executable(self) -> list[str]:
        """The working orders the exchange can still execute (a reduce-only one only while
        there is something to reduce)."""
        ex = self.exchange
        return [
            order_id
            for order_id, order in sorted(ex.orders.items())
            if not order.reduce_only or ex.reducible(order.key, order.side) > 0
        ]
