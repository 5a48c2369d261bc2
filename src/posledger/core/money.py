"""The exchange's own records of money (docs/design.md#money): what it booked when (part of) a
key's position closed. The venues read them completely or raise; the money check compares them
with what the ledger realized from fills.

Signs are the ledger's: a profit is positive; ``fees``, ``funding`` and ``penalty`` are
positive when paid, negative when received (a maker rebate). Amounts are in the key's settle
coin (the coin itself on an inverse key).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import attrs

from posledger.core.errors import InvalidInput
from posledger.core.model import (
    PositionKey,
    aware_utc,
    positive_decimal,
    text,
    to_decimal,
)


def _key(value: object) -> PositionKey:
    if not isinstance(value, PositionKey):
        raise InvalidInput(f"key must be a PositionKey, got {type(value).__name__}")
    return value


def _record_id(value: object) -> str:
    return text(value, "record_id")


def _closed_at(value: object) -> datetime:
    return aware_utc(value, "closed_at")


def _closed_size(value: object) -> Decimal:
    return positive_decimal(value, "closed_size")


def _amount(value: object) -> Decimal:
    return to_decimal(value, "amount")


def _optional_amount(value: object) -> Decimal | None:
    return None if value is None else to_decimal(value, "funding")


@attrs.frozen
class MoneyRecord:
    """One close the exchange booked on one key: Bybit's ``/v5/position/closed-pnl`` row (one
    closing order), OKX's ``positions-history`` row (one closed or partly closed position).

    ``trading_pnl`` is the price difference alone (exit − entry value, long positive), before
    any fee or funding; ``net_pnl`` is the exchange's own headline figure as it reported it
    (Bybit ``closedPnl``, OKX ``realizedPnl``); ``funding`` is None where the record does not
    say (the funding is then read from the exchange's funding rows, not from this record).
    """

    key: PositionKey = attrs.field(converter=_key)
    record_id: str = attrs.field(converter=_record_id)
    closed_at: datetime = attrs.field(converter=_closed_at)
    closed_size: Decimal = attrs.field(converter=_closed_size)
    trading_pnl: Decimal = attrs.field(converter=_amount)
    fees: Decimal = attrs.field(converter=_amount)
    net_pnl: Decimal = attrs.field(converter=_amount)
    funding: Decimal | None = attrs.field(default=None, converter=_optional_amount)
    penalty: Decimal = attrs.field(default=Decimal(0), converter=_amount)
