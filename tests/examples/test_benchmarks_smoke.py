"""The benchmark script still runs end to end and prints every figure (no timing thresholds:
speed is judged by the full run, not by CI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run.py"
FIGURES = (
    "ingest_durable",
    "ingest_concurrent",
    "ingest_concurrent_ledgers",
    "ingest_concurrent_procs",
    "backfill",
    "replay",
    "replay_vs_repository",
    "reconcile_unchanged_warm",
    "reconcile_unchanged_cold",
    "replay_memory",
)


def test_quick_benchmark_prints_every_figure(tmp_path: Path) -> None:
    if not SCRIPT.exists():
        pytest.skip("benchmarks/run.py is not in this checkout")
    out = tmp_path / "figures.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--backend",
            "sqlite",
            "--workdir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    ratios = dict(re.findall(r"^ratio (\S+) (\S+)$", completed.stdout, re.MULTILINE))
    for figure in FIGURES:
        assert f"{figure}.sqlite" in ratios, f"no 'ratio {figure}.sqlite' line"
        assert float(ratios[f"{figure}.sqlite"]) > 0
    assert "| figure | backend |" in completed.stdout
    assert re.search(r"record_fill p50 [\d.]+ ms, p99 [\d.]+ ms", completed.stdout)
    assert out.exists()
