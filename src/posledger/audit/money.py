"""Money reconciliation in the audit (docs/design.md#money): every ``MoneyReconciled`` of a
store as a row (ledger vs exchange vs the difference, adopted or unexplained), and the
cumulative unexplained PnL over time per settle coin as a plot."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from posledger.audit.extras import notebook_module
from posledger.audit.replays import replay_events
from posledger.audit.source import Progress, Source
from posledger.core.events import MoneyReconciled
from posledger.core.model import PositionKey

ZERO = Decimal(0)


@attrs.frozen
class MoneyRow:
    """One money check that found a difference: the window, both sides' net (trading PnL less
    fees, funding where the records state it, and the exchange's penalty), the difference,
    whether it was adopted, and the exchange records it used; amounts in ``settle_coin``."""

    key: PositionKey
    time: datetime
    window_start: datetime
    window_end: datetime
    ledger_net: Decimal
    exchange_net: Decimal
    difference: Decimal
    adopted: bool
    tolerance: Decimal
    records: tuple[str, ...]

    @property
    def settle_coin(self) -> str | None:
        return self.key.settle_coin


MONEY_COLUMNS = (
    "key",
    "settle_coin",
    "time",
    "window_start",
    "window_end",
    "ledger_net",
    "exchange_net",
    "difference",
    "adopted",
    "tolerance",
    "records",
)


def money_row(key: PositionKey, event: MoneyReconciled) -> MoneyRow:
    ledger = event.ledger_trading_pnl - event.ledger_fees - (event.ledger_funding or ZERO)
    exchange = (
        event.exchange_trading_pnl
        - event.exchange_fees
        - (event.exchange_funding or ZERO)
        - event.exchange_penalty
    )
    return MoneyRow(
        key=key,
        time=event.timestamp,
        window_start=event.window_start,
        window_end=event.window_end,
        ledger_net=ledger,
        exchange_net=exchange,
        difference=event.difference,
        adopted=event.adopted,
        tolerance=event.tolerance,
        records=tuple(event.records),
    )


def money_rows(
    source: Source, *, since: datetime | None = None, progress: Progress | None = None
) -> list[MoneyRow]:
    """Every ``MoneyReconciled`` of the store (those written at or after ``since``), in log
    order."""
    return [
        money_row(state.key, event)
        for event, state in replay_events(source, progress=progress)
        if isinstance(event, MoneyReconciled) and (since is None or event.timestamp >= since)
    ]


def money_record(row: MoneyRow) -> dict[str, Any]:
    """One row as a flat record with :data:`MONEY_COLUMNS` (exact values)."""
    return {
        "key": str(row.key),
        "settle_coin": row.settle_coin,
        "time": row.time,
        "window_start": row.window_start,
        "window_end": row.window_end,
        "ledger_net": row.ledger_net,
        "exchange_net": row.exchange_net,
        "difference": row.difference,
        "adopted": row.adopted,
        "tolerance": row.tolerance,
        "records": ", ".join(row.records),
    }


def unexplained_by_coin(rows: Iterable[MoneyRow]) -> dict[str | None, Decimal]:
    """The unexplained PnL summed per settle coin (never across coins)."""
    totals: dict[str | None, Decimal] = {}
    for row in rows:
        if not row.adopted:
            totals[row.settle_coin] = totals.get(row.settle_coin, ZERO) + row.difference
    return totals


def plot_unexplained(rows: Iterable[MoneyRow], ax: Any = None) -> Any:
    """The cumulative unexplained PnL over time, one step line per settle coin (adopted
    differences are explained, so they are left out). Returns the axes."""
    pyplot = notebook_module("matplotlib.pyplot", "plot_unexplained")
    if ax is None:
        _, ax = pyplot.subplots(figsize=(11, 4), layout="constrained")
    axes: Any = ax
    series: dict[str | None, tuple[list[datetime], list[float]]] = {}
    running: dict[str | None, Decimal] = {}
    for row in sorted((r for r in rows if not r.adopted), key=lambda r: r.time):
        running[row.settle_coin] = running.get(row.settle_coin, ZERO) + row.difference
        times, values = series.setdefault(row.settle_coin, ([], []))
        times.append(row.time)
        values.append(float(running[row.settle_coin]))
    for coin, (times, values) in sorted(series.items(), key=lambda item: str(item[0])):
        axes.step(times, values, where="post", label=coin or "unknown coin")
    axes.axhline(0, color="#9e9e9e", linewidth=0.8)
    axes.set_title("cumulative unexplained PnL (exchange − ledger), per settle coin")
    axes.set_ylabel("PnL")
    if series:
        axes.legend(loc="best")
    return axes
