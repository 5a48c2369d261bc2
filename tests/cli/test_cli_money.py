"""``posledger money``: the money checks' differences from the store, per settle coin, exit 1
when one is unexplained; and ``posledger sync --money`` checking a closed lifecycle against the
fake Bybit's closed-pnl records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from posledger import Fill, Ledger, PositionKey
from posledger.core.money import MoneyRecord
from posledger.testing.fake_bybit import FakeBybit
from tests.cli.test_cli import assert_clean_usage_error, run_cli
from tests.cli.test_cli_sync import AGI, fake, sync, url  # noqa: F401 (fixtures)
from tests.conftest import T0, key
from tests.helpers import fill

INVERSE = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
WINDOW = {"since": T0, "until": T0 + timedelta(days=1)}


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def record(k: PositionKey, trading: str, size: str) -> MoneyRecord:
    return MoneyRecord(
        key=k, record_id="r", closed_at=at(5), closed_size=size, trading_pnl=trading, fees="0",
        net_pnl=trading,
    )  # fmt: skip


def checked(path: Path) -> str:
    """BTCUSDT: 10 realized, 10.5 booked by the exchange (unexplained); BTCUSD: 0.001 vs 0.0012."""
    store = f"sqlite:///{path}"
    with Ledger.open(store, clock=lambda: T0) as ledger:
        for k, (opening, closing, qty, exchange) in {
            key("BTCUSDT"): ("100", "110", "1", "10.5"),
            INVERSE: ("20000", "25000", "100", "0.0012"),
        }.items():
            ledger.record_fill(k, fill(f"{k.symbol}-o", "buy", qty, opening, exec_time=at(1)))
            ledger.record_fill(k, fill(f"{k.symbol}-c", "sell", qty, closing, exec_time=at(5)))
            ledger.check_money(k, [record(k, exchange, qty)], **WINDOW, at=at(60))
    return store


def test_money_lists_each_difference_and_exits_1_when_one_is_unexplained(tmp_path: Path) -> None:
    store = checked(tmp_path / "ledger.db")
    result = run_cli("money", "--db", store, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "unexplained" in result.stdout and "+0.5" in result.stdout and "+0.0002" in result.stdout
    assert "Unexplained, per settle coin: 0.0002 BTC, 0.5 USDT." in " ".join(result.stdout.split())
    per_key = [line.split() for line in result.stdout.splitlines() if line.startswith("bybit/")]
    assert per_key == [
        ["bybit/main/inverse/BTCUSD#0", "1", "+0", "+0.0002", "BTC"],
        ["bybit/main/linear/BTCUSDT#0", "1", "+0", "+0.5", "USDT"],
    ]
    document = json.loads(run_cli("money", "--db", store, "--json", cwd=tmp_path).stdout)
    assert document["unexplained"] == {"BTC": "0.0002", "USDT": "0.5"}
    assert [c["settle_coin"] for c in document["checks"]] == ["USDT", "BTC"]
    later = run_cli("money", "--db", store, "--since", "2030-01-01", cwd=tmp_path)
    assert later.returncode == 0 and "agree" in later.stdout
    bad = run_cli("money", "--db", store, "--since", "soon", cwd=tmp_path)
    assert_clean_usage_error(bad, "--since")


def test_sync_money_checks_a_closed_lifecycle_against_closed_pnl(
    fake: FakeBybit,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    """A short both sides know, opened and closed an hour ago: the round's money check agrees."""
    now = datetime.now(UTC)
    with Ledger.open(url) as ledger:
        for side, price, fee, hours in (("Sell", "0.05", "0.02", 2), ("Buy", "0.049", "0.01", 1)):
            order = fake.add_open_order(
                "AGIUSDT", side, "1000", price, at=now - timedelta(hours=hours)
            )
            done = fake.partial_fill(order, "1000", fee=fee, at=now - timedelta(hours=hours))
            ledger.record_fill(
                AGI,
                Fill(exec_id=done.exec_id, order_id=order, side=side, qty="1000", price=price,
                     fee=fee, exec_time=done.exec_time, seq=done.seq),
            )  # fmt: skip
    result = sync(fake, url, "--once", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["money"][0]["agrees"]
    result = sync(fake, url, "--once", "--json", "--no-money")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["money"] == []
