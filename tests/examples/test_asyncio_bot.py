"""examples/asyncio_bot.py runs offline through real ccxt.async_support and the fake Bybit
server: executions lost on the way to the bot are recovered by the AsyncSynchronizer running
beside it, none is recorded twice, and the ledger ends holding what the exchange holds."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest

from posledger import Side
from posledger.aio import AsyncLedger
from posledger.testing.fake_bybit import FakeBybit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "asyncio_bot.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("posledger_asyncio_bot", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_a_second_offline_run_refuses_the_used_store_in_one_line(tmp_path: Path) -> None:
    """The fake exchange starts empty each run: on the first run's store the bot looped
    printing ExecutionConflict (the same exec_ids, other payloads)."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    command = [sys.executable, str(EXAMPLE), "--offline", "--db", url, "--rounds", "5"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a ledger" in again.stderr
    assert "Traceback" not in again.stderr and "ExecutionConflict" not in again.stdout


def test_live_mode_without_keys_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_API")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "BYBIT_API_KEY" in result.stderr and "Traceback" not in result.stderr


def test_a_trim_survives_the_position_closing_after_the_bot_read_it() -> None:
    """CI failed once this way: the bot read SOLUSDT as held, the synchronizer then recovered
    a lost fill that closed it, and the bot's exit (no side given) was refused with "no
    position to exit", killing the bot mid-run."""
    bot_module = example()

    async def scenario() -> None:
        with FakeBybit() as fake:
            async with AsyncLedger.open("memory://") as ledger:
                bot = bot_module.OfflineBot(fake, ledger)
                await bot.trim("SOLUSDT", Side.BUY, Decimal("0.004"))
                state = await ledger.position(bot_module.key("SOLUSDT"))
                assert state is not None and state.size == 0 and not state.pending_orders
                names = [type(e).__name__ for e in await ledger.history(state.key)]
                assert names[-2:] == ["ExitRequested", "OrderEnded"]

    asyncio.run(scenario())
