"""examples/asyncio_bot.py runs offline through real ccxt.async_support and the fake Bybit
server: executions lost on the way to the bot are recovered by the AsyncSynchronizer running
beside it, none is recorded twice, and the ledger ends holding what the exchange holds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "asyncio_bot.py"


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
def test_the_asyncio_bot_loses_nothing(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = {
        "memory": lambda: "memory://",
        "sqlite": lambda: f"sqlite:///{tmp_path / 'bot.db'}",
        "postgres": lambda: str(request.getfixturevalue("postgres_url")),
    }[store]()
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--offline", "--db", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counts = re.search(
        r"executions on the exchange: (\d+), lost on the way to the bot: (\d+), "
        r"recorded once each: True, corrections needed: 0",
        result.stdout,
    )
    assert counts is not None, result.stdout
    executed, lost = int(counts[1]), int(counts[2])
    assert executed >= 10 and lost >= 2
    assert result.stdout.rstrip().endswith("nothing lost, nothing twice")
