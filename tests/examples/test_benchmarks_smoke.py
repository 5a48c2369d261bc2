"""The benchmark script still runs end to end and prints every figure (no timing thresholds:
speed is judged by the full run, not by CI)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run.py"
FIGURES = (
    "ingest_durable",
    "ingest_concurrent",
    "ingest_concurrent_ledgers",
    "ingest_concurrent_procs",
    "ingest_fleet",
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


def benchmark_module() -> Any:
    if not SCRIPT.exists():
        pytest.skip("benchmarks/run.py is not in this checkout")
    spec = importlib.util.spec_from_file_location("posledger_benchmarks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def machine(start: str, end: str, mode: str = "full") -> dict[str, str]:
    return {"cores": "2", "mode": mode, "load average at start": start,
            "load average at end": end}  # fmt: skip


def test_runs_taken_under_different_load_are_not_compared() -> None:
    bench = benchmark_module()
    quiet = machine("0.20 0.30 0.40", "1.10 0.60 0.50")
    assert bench.comparable(quiet, machine("0.60 0.10 0.10", "1.20 0.90 0.90")) is None
    busy = bench.comparable(quiet, machine("2.40 2.00 1.00", "1.10 0.60 0.50"))
    assert busy is not None and "load per core at start was 0.10 then and is 1.20" in busy
    assert "at end" in bench.comparable(quiet, machine("0.20 0", "3.00 0"))
    assert "quick" in bench.comparable(quiet, machine("0.20 0", "1.10 0", mode="quick"))
    older = {"cores": "2", "mode": "full", "load average at start": "0.20 0 0"}
    assert "did not record" in bench.comparable(older, quiet)
