"""Small builders shared by the scenario tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from posledger import ExchangePosition, Fill, Ledger, PositionKey, Side, Snapshot
from tests.conftest import T0


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fill(exec_id: str, side: str, qty: str, price: str = "100", **more: Any) -> Fill:
    fields: dict[str, Any] = {
        "exec_id": exec_id,
        "order_id": more.pop("order_id", ""),
        "side": Side.parse(side),
        "qty": Decimal(qty),
        "price": Decimal(price),
        "exec_time": more.pop("exec_time", T0),
    }
    fields.update(more)
    return Fill(**fields)


def row(symbol: str, side: str | None, size: str, idx: int = 0, **more: Any) -> ExchangePosition:
    return ExchangePosition(symbol=symbol, idx=idx, side=side, size=Decimal(size), **more)


def snapshot(
    taken_at: datetime,
    positions: Iterable[ExchangePosition] = (),
    *,
    symbols: Iterable[str] | None = None,
    open_order_ids: Iterable[str] | None = (),
    account: str = "main",
    category: str = "linear",
) -> Snapshot:
    return Snapshot(
        venue="bybit",
        account=account,
        category=category,
        taken_at=taken_at,
        positions=list(positions),
        symbols=symbols,
        open_order_ids=open_order_ids,
    )


def event_names(ledger: Ledger, key: PositionKey) -> list[str]:
    return [type(e).__name__ for e in ledger.history(key)]


def last_event(ledger: Ledger, key: PositionKey, name: str) -> Any:
    return next(e for e in reversed(ledger.history(key)) if type(e).__name__ == name)
