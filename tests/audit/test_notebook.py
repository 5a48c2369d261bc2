"""examples/audit.ipynb runs top to bottom in a real kernel and shows what it promises."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "audit.ipynb"
KERNEL = "posledger-test-python"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the venv's), found first through JUPYTER_PATH:
    the installed "python3" spec may name a bare `python` that is some other interpreter."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "posledger tests",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL


def outputs(cell: object, kind: str) -> list[str]:
    found = []
    for output in cell["outputs"]:  # type: ignore[index]
        data = output.get("data", {})
        if kind in data:
            found.append(data[kind])
    return found


def test_the_audit_notebook_runs_and_shows_the_seed_positions(
    kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code")
    database = tmp_path / "demo.db"
    monkeypatch.setenv("POSLEDGER_DEMO_DB", str(database))
    client = nbclient.NotebookClient(
        stored, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    )
    ran = client.execute()
    assert database.is_file()  # created by the notebook through posledger.demo
    code = [cell for cell in ran.cells if cell.cell_type == "code"]
    by_source = {cell.source.splitlines()[-1]: cell for cell in code}

    states = "".join(
        outputs(
            by_source[
                'states[["account", "symbol", "status", "size", '
                '"lifecycle", "realized_pnl", "fees", "version"]]'
            ],
            "text/html",
        )
    )
    for symbol in ("AGIUSDT", "ETHUSDT", "SOLUSDT", "SCAUSDT", "HNTUSDT", "BTCUSDT"):
        assert symbol in states

    eth = "".join(outputs(by_source["history_rows(ledger, ETH)"], "text/html"))
    assert "phantom" in eth and "+0.5 → 0<" in eth and "suspect" in eth and "eth-x1" in eth
    agi = "".join(outputs(by_source["history_rows(ledger, AGI)"], "text/html"))
    assert "stale_quantity" in agi and "-4160 → -3160" in agi and "agi-x1" in agi

    pictures = {
        "plot_position(ledger, ETH, since=nov12(9, 55), until=nov12(10, 5));": 1,
        "plot_position(ledger, AGI, since=oct13(19, 15), until=oct13(19, 35));": 2,
    }
    for last_line, count in pictures.items():
        images = [base64.b64decode(png) for png in outputs(by_source[last_line], "image/png")]
        assert len(images) == count
        for image in images:
            assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 20_000

    state = "".join(outputs(by_source["state_at(ledger, AGI, version=5)"], "text/html"))
    assert "AGIUSDT" in state and "4160" in state
    report = "".join(outputs(by_source["verify(ledger)"], "text/html"))
    assert "OK: 6 keys, 42 events" in report
