"""The examples (examples/ and the README's API tour) run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_bot_loop_runs_and_ends_in_agreement(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "bot_loop.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "signal skipped, already in position" in out
    assert "read failed (" in out and "not a snapshot, nothing reconciled" in out
    assert "reconcile says suspect (phantom, 1/2)" in out
    assert "reconcile says corrected (phantom, confirmed); wrote Reconciled, Closed" in out
    assert out.rstrip().endswith(
        "done: ledger holds ['ETHUSDT buy 0.5'], exchange holds ['ETHUSDT buy 0.5']"
    )


def test_the_readme_api_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## API tour", 1)[1].split("\n## ", 1)[0]
    (tour,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)  # it creates positions.db in the working directory
    exec(compile(tour, "README.md", "exec"), {})
    assert (tmp_path / "positions.db").is_file()
