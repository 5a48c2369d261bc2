"""HTML for notebooks: every value escaped, and a PositionState shown as a table in Jupyter."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import posledger.audit.html
from posledger import Ledger
from posledger.audit import history_html, history_rows, state_html
from tests.audit.stores import BTC, D
from tests.conftest import T0
from tests.helpers import fill


def test_html_tables_escape_everything() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        ledger.request_open(BTC, order_id="<script>x</script>", side="buy", qty=D(1), at=T0)
        ledger.record_fill(BTC, fill("<b>e</b>", "buy", "0.5", order_id="<script>x</script>"))
        state = ledger.position(BTC)
        rows = history_rows(ledger, BTC)
    assert state is not None
    for text in (state_html(state), history_html(rows), rows._repr_html_()):
        assert "<script>" not in text and "<b>e" not in text
        assert "&lt;script&gt;" in text or "&lt;b&gt;" in text
        assert text.startswith("<table") and text.endswith("</table>")
    assert "BTCUSDT" in state_html(state) and "0.5" in state_html(state)
    assert history_html(rows).count("<tr") == len(rows) + 1
    assert rows[-1]._repr_html_().count("<tr") == 2 and isinstance(rows, list)


def test_jupyter_shows_a_position_state_as_its_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PositionState belongs to the core and has no ``_repr_html_``: importing the audit's html
    module in a running IPython shell registers :func:`state_html` as its HTML formatter."""
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    for hook in ("displayhook", "excepthook"):  # the shell may install its own
        monkeypatch.setattr(sys, hook, getattr(sys, hook))
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("e1", "buy", "0.5"))
        state = ledger.position(BTC)
    assert state is not None
    config = Config()
    config.HistoryManager.enabled = False
    shell = interactiveshell.InteractiveShell.instance(config=config)
    try:
        formatter = shell.display_formatter.formatters["text/html"]
        with pytest.raises(KeyError):  # a new shell: nothing registered yet
            formatter.lookup(state)
        importlib.reload(posledger.audit.html)
        assert formatter.lookup(state)(state) == state_html(state)
        assert formatter(state).startswith("<table") and "BTCUSDT" in formatter(state)
    finally:
        interactiveshell.InteractiveShell.clear_instance()
