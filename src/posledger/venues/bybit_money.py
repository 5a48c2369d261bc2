"""Bybit's record of money: one ``/v5/position/closed-pnl`` row as a :class:`MoneyRecord`
(docs/money.md#bybit-closed-pnl says what each field means and where that is written).

A row is what Bybit booked when one closing order (or one batch of its fills) closed part of a
position: its closed size, the entry and exit values of that size, the opening fee carried by
that size and the closing fee, and ``closedPnl``. It names no leg: in hedge mode the closing
order's ``side`` tells it (a Sell closes the long leg, a Buy the short one). It carries no
funding field, so a record's ``funding`` is None: a key's funding is read from its
``execType=Funding`` executions.
"""

from __future__ import annotations

from datetime import timedelta

import attrs

from posledger.core.contract import INVERSE
from posledger.core.errors import InvalidInput
from posledger.core.model import PositionKey, Side, text
from posledger.core.money import MoneyRecord
from posledger.venues.common import Row, money_field, time_from_ms

CLOSED_PNL = "/v5/position/closed-pnl"
CLOSED_PNL_PAGE = 100
"""The largest page closed-pnl serves (``limit`` [1, 100])."""

CLOSED_PNL_SPAN = timedelta(days=730)
"""closed-pnl serves two years ("Get Closed PnL (2 years)"); a read from further back is
refused rather than cut short."""


@attrs.frozen
class ClosedPnl:
    """One closed-pnl row: the closing order's side (which names the leg in hedge mode) and its
    record, keyed on the one-way leg until the leg is known."""

    side: Side
    record: MoneyRecord

    def on_leg(self, hedged: bool) -> MoneyRecord:
        """The record on its leg: 0 in one-way mode; in hedge mode the leg the closing order
        closed, the long one (1) for a Sell, the short one (2) for a Buy."""
        if not hedged:
            return self.record
        idx = 1 if self.side is Side.SELL else 2
        return attrs.evolve(self.record, key=attrs.evolve(self.record.key, idx=idx))


def closed_pnl_from_row(row: Row, venue: str, account: str, category: str) -> ClosedPnl:
    """A closed-pnl row in the ledger's signs. ``trading_pnl`` is the exit value less the entry
    value for a long (closed by a Sell), the reverse for a short; on an inverse contract the
    values are in the coin (size / price), so a long gains what its entry value exceeds its exit
    value. ``fees`` are ``openFee`` + ``closeFee`` (positive when paid, as Bybit writes them);
    ``net_pnl`` is ``closedPnl`` as Bybit reports it."""
    side = Side.parse(row["side"])
    entry = money_field(row, "cumEntryValue")
    exit_ = money_field(row, "cumExitValue")
    gained = exit_ - entry
    if category == INVERSE:
        gained = -gained
    order_id = text(row["orderId"], "orderId")
    created = time_from_ms(row["createdTime"])
    if created is None:
        raise InvalidInput("createdTime must be reported")
    record = MoneyRecord(
        key=PositionKey(venue=venue, account=account, category=category, symbol=row["symbol"]),
        record_id=f"{order_id}:{row['createdTime']}",
        closed_at=created,
        closed_size=row["closedSize"],
        trading_pnl=gained if side is Side.SELL else -gained,
        fees=money_field(row, "openFee") + money_field(row, "closeFee"),
        net_pnl=money_field(row, "closedPnl"),
    )
    return ClosedPnl(side, record)
