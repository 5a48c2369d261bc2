"""examples/bybit_bot.py runs offline against the fake Bybit and ends where the exchange is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BOT = Path(__file__).resolve().parents[2] / "examples" / "bybit_bot.py"


def run_bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BOT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_bot_runs_offline_against_the_fake_and_ends_in_agreement(tmp_path: Path) -> None:
    result = run_bot("--fake", "--interval", "0.5", "--db", f"sqlite:///{tmp_path / 'bot.db'}")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "opened short 4160 (fill streamed)" in out
    assert "reduce-only exit filled 1000 (streamed); holds ['AGIUSDT sell 3160']" in out
    assert "stream reconnected and resynced through REST; holds ['AGIUSDT sell 2160']" in out
    assert "AGIUSDT: 3 fills recorded, 3 distinct" in out
    assert out.rstrip().endswith(
        "done: ledger holds ['AGIUSDT sell 2160'], exchange holds ['AGIUSDT sell 2160']"
    )
    assert "fake-api-secret" not in out + result.stderr


def test_without_keys_the_live_bot_refuses_to_start_and_names_the_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYBIT_")}
    env["BYBIT_API_KEY"] = "a-key-that-must-not-be-printed"
    result = run_bot("--testnet", "--seconds", "1", env=env)
    assert result.returncode == 2
    assert "BYBIT_API_SECRET" in result.stderr
    assert "a-key-that-must-not-be-printed" not in result.stdout + result.stderr


def test_a_second_fake_run_refuses_the_used_store_in_one_line(tmp_path: Path) -> None:
    """On the first run's store the second gave up waiting, silently, after about 28 s."""
    db = f"sqlite:///{tmp_path / 'bot.db'}"
    assert run_bot("--fake", "--interval", "0.5", "--db", db).returncode == 0
    again = run_bot("--fake", "--interval", "0.5", "--db", db)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a ledger" in again.stderr
