"""plot_position: a PNG with the key's corrections labelled, and a zoomed window."""

from __future__ import annotations

from pathlib import Path

import pytest

from posledger import InvalidInput, Ledger
from posledger.audit import history_rows, plot_position
from tests.audit.stores import BTC, ETH, SOL, build
from tests.conftest import T0
from tests.helpers import at


def test_plot_position_renders_a_png(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        ax = plot_position(ledger, BTC)
        out = tmp_path / "btc.png"
        ax.figure.savefig(out, dpi=80)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "BTCUSDT" in ax.get_title(loc="left")
        assert ax.get_ylabel() and ax.get_xlabel()
        labels = " ".join(t.get_text() for t in ax.texts)
        assert "stale_quantity" in labels and "phantom" in labels
        plt.close(ax.figure)

        fig, axes = plt.subplots(1, 2)
        assert plot_position(history_rows(ledger, ETH), ax=axes[0]) is axes[0]
        assert plot_position(ledger, SOL, ax=axes[1]) is axes[1]
        fig.savefig(tmp_path / "two.png", dpi=60)
        plt.close(fig)


def test_plot_position_zooms_on_a_window() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        ax = plot_position(ledger, BTC, since=at(9), until=at(12))
        left, right = (mdates.num2date(x) for x in ax.get_xlim())
        assert (left, right) == (at(9), at(12))
        labels = " ".join(t.get_text() for t in ax.texts)
        assert "stale_quantity" in labels and "phantom" not in labels  # the phantom is at 13
        assert "17 events" in ax.get_title(loc="left")  # the title counts the whole history
        plt.close(ax.figure)
        with pytest.raises(InvalidInput, match="nothing to show"):
            plot_position(ledger, BTC, since=at(12), until=at(9))
        plt.close("all")
