"""Writes tests/data/release-be93bd9.sqlite with the release's own code (run once, at be93bd9)."""

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from posledger import ExchangePosition, ExecKind, Fill, Ledger, PositionKey, Side, Snapshot
from posledger.demo import run_demo

out = Path(sys.argv[1])
out.unlink(missing_ok=True)
t = datetime(2025, 11, 12, 8, 0, tzinfo=UTC)
run_demo(f"sqlite:///{out}")
with Ledger.open(f"sqlite:///{out}", snapshot_every=4) as ledger:
    key = PositionKey(venue="bybit", account="funded", category="linear", symbol="BTCUSDT", idx=1)
    ledger.request_open(
        key, order_id="o-1", side=Side.BUY, qty=Decimal("0.3"), price=Decimal("90000.5"), at=t
    )
    ledger.record_fill(
        key,
        Fill(
            exec_id="e-1",
            order_id="o-1",
            side=Side.BUY,
            qty=Decimal("0.1"),
            price=Decimal("90000.5"),
            fee=Decimal("-0.001"),
            exec_time=t,
            seq=7,
            leaves_qty=Decimal("0.2"),
        ),
    )
    ledger.record_fill(
        key,
        Fill(
            exec_id="e-2",
            order_id="o-1",
            side=Side.BUY,
            qty=Decimal("0.2"),
            price=Decimal("90001"),
            fee=Decimal("0.0123456789012345678901234567"),
            exec_time=t + timedelta(seconds=1),
            seq=8,
        ),
    )
    ledger.record_fill(
        key,
        Fill(
            exec_id="f-1",
            order_id="",
            side=Side.BUY,
            qty=Decimal("0.3"),
            price=Decimal("90100"),
            fee=Decimal("0.27"),
            exec_time=t + timedelta(hours=8),
            kind=ExecKind.FUNDING,
        ),
    )
    ledger.request_exit(
        key, order_id="x-1", qty=Decimal("0.3"), side=Side.SELL, at=t + timedelta(hours=9)
    )
    ledger.record_order_end(
        key, order_id="x-1", status="Cancelled", at=t + timedelta(hours=9, minutes=1)
    )
    for minutes in (0, 1):
        when = t + timedelta(hours=10, minutes=minutes)
        snap = Snapshot(
            venue="bybit",
            account="funded",
            category="linear",
            taken_at=when,
            positions=[
                ExchangePosition(
                    symbol="BTCUSDT",
                    idx=1,
                    side=Side.BUY,
                    size=Decimal("0.2"),
                    avg_price=Decimal("90000.9"),
                    seq=12,
                )
            ],
            open_order_ids=[],
        )
        ledger.reconcile(snap, now=when)
    ledger.record_fill(
        key,
        Fill(
            exec_id="e-3",
            order_id="",
            side=Side.SELL,
            qty=Decimal("0.2"),
            price=Decimal("91000"),
            fee=Decimal("0.1"),
            exec_time=t + timedelta(hours=11),
            seq=20,
            kind=ExecKind.LIQUIDATION,
        ),
    )
print(out, out.stat().st_size)
