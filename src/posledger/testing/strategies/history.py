"""What a drawn exchange history is: the actions on the exchange, each step with the
exchange's truth right after it, and what a complete read would have returned at any step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from posledger.core.model import ExchangePosition, Fill, PositionKey, Side, Snapshot
from posledger.ledger import Ledger

ZERO = Decimal(0)


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
