"""The audit's view of money reconciliation: ``money_rows`` from any source, its DataFrame,
the unexplained totals per settle coin (never added across coins) and their plot."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import Ledger, PositionKey
from posledger.audit import (
    MONEY_COLUMNS,
    money_rows,
    plot_unexplained,
    to_dataframe,
    unexplained_by_coin,
)
from posledger.core.money import MoneyRecord
from tests.conftest import T0, key
from tests.helpers import fill

BTC = key("BTCUSDT")
INVERSE = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
WINDOW = {"since": T0, "until": T0 + timedelta(days=1)}


def at(minutes: int) -> object:
    return T0 + timedelta(minutes=minutes)


def traded(ledger: Ledger, k: PositionKey, price: str, exit_price: str, qty: str) -> None:
    ledger.record_fill(k, fill(f"{k.symbol}-o", "buy", qty, price, exec_time=at(1)))
    ledger.record_fill(k, fill(f"{k.symbol}-c", "sell", qty, exit_price, exec_time=at(5)))


def money(k: PositionKey, trading: str, size: str) -> MoneyRecord:
    return MoneyRecord(
        key=k,
        record_id=f"{k.symbol}-r",
        closed_at=at(5),
        closed_size=size,
        trading_pnl=trading,
        fees="0",
        net_pnl=trading,
    )


def checked_ledger(url: str) -> None:
    """USDT: the ledger realized 10, the exchange 10.5; BTC (inverse): 0.001 vs 0.0012."""
    with Ledger.open(url, clock=lambda: T0) as ledger:
        traded(ledger, BTC, "100", "110", "1")
        traded(ledger, INVERSE, "20000", "25000", "100")
        ledger.check_money(BTC, [money(BTC, "10.5", "1")], **WINDOW, at=at(60))
        ledger.check_money(INVERSE, [money(INVERSE, "0.0012", "100")], **WINDOW, at=at(61))


def test_money_rows_and_their_frame_keep_each_coin_apart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    checked_ledger(url)
    rows = money_rows(url)
    assert [(r.key, r.difference, r.adopted, r.settle_coin) for r in rows] == [
        (BTC, Decimal("0.5"), False, "USDT"),
        (INVERSE, Decimal("0.0002"), False, "BTC"),
    ]
    assert (rows[0].ledger_net, rows[0].exchange_net) == (Decimal(10), Decimal("10.5"))
    assert unexplained_by_coin(rows) == {"USDT": Decimal("0.5"), "BTC": Decimal("0.0002")}
    assert money_rows(url, since=at(61)) == rows[1:]
    pytest.importorskip("pandas")
    frame = to_dataframe(rows)
    assert list(frame.columns) == list(MONEY_COLUMNS)
    assert frame["difference"].tolist() == [Decimal("0.5"), Decimal("0.0002")]
    assert (
        str(frame["window_end"].dtype).startswith("datetime64") and frame["adopted"].dtype == bool
    )


def test_the_unexplained_plot_has_one_line_per_settle_coin(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    checked_ledger(url)
    ax = plot_unexplained(money_rows(url))
    assert sorted(
        line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")
    ) == [
        "BTC",
        "USDT",
    ]
    out = tmp_path / "unexplained.png"
    ax.figure.savefig(out, dpi=60)
    assert out.read_bytes()[:4] == b"\x89PNG"
    plt.close(ax.figure)
