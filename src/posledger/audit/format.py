"""How sides, sizes, money, times and counts are written for people: shared by the audit, the
CLI, the demo and the web view, so a position reads the same in a notebook, a terminal, the
demo's chapters and a browser."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from posledger.core.model import Side, Status
from posledger.core.position import PositionState

ZERO = Decimal(0)


def signed_size(side: str | Side | None, size: Decimal) -> Decimal:
    """A size with its direction as sign: long positive, short negative, 0 without a side."""
    if not side or not size:
        return ZERO
    return size if Side(side) is Side.BUY else -size


def side_value(side: Side | None) -> str | None:
    """``buy``, ``sell`` or None: a side as records and tables store it."""
    return side.value if side is not None else None


def signed_quantity(value: Decimal) -> str:
    """A signed quantity as people write it: +3160, -0.5, 0."""
    return f"{value:+f}" if value else "0"


def counted(n: int, noun: str) -> str:
    """``1 fill``, ``3 fills``: a count with its noun, plural unless it is one."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def shortened(value: object, limit: int = 80) -> str:
    """A value's text, cut to ``limit`` characters with an ellipsis (for one-line details)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def direction(side: Side | str) -> str:
    """'long' for a buy side, 'short' for a sell side."""
    return "long" if Side.parse(side) is Side.BUY else "short"


def holding(state: PositionState) -> str:
    """'long 0.5', 'short 2036.0', 'pending' (only requests in flight) or 'flat'."""
    if state.status is Status.OPEN and state.side is not None:
        return f"{direction(state.side)} {state.size}"
    return state.status.value


def per_settle_coin(states: Iterable[PositionState]) -> dict[str | None, Decimal]:
    """Realized PnL summed per settle coin (None: a symbol of no known naming): money of
    different coins is never added (docs/design.md#inverse)."""
    totals: dict[str | None, Decimal] = {}
    for state in states:
        coin = state.key.settle_coin
        totals[coin] = totals.get(coin, Decimal(0)) + state.realized_pnl
    return totals


def quantity(value: Decimal | None) -> str:
    """Exact fixed-point text without trailing zeros: 24000.000…0 (a harmonic average) is 24000."""
    if value is None:
        return ""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Decimal, coin: str | None) -> str:
    """An amount with its settle coin (``0.0003 BTC``); bare where the coin is unknown."""
    return quantity(value) if coin is None else f"{quantity(value)} {coin}"


def when(moment: datetime | None) -> str:
    """A time as tables show it, to the second (``2025-10-13 09:31:00``); empty for None."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"
