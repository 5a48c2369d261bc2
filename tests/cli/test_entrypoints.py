"""The command runs the same way whichever way a newcomer starts it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["posledger", "posledger.cli"])
def test_python_dash_m_runs_the_command(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: posledger ")
    assert "verify" in result.stdout and "sync" in result.stdout
