"""Render the pictures of docs/audit.md from the demo ledger: ``python docs/make_images.py``.

The same calls as examples/audit.ipynb (``plot_position`` on the seed positions), drawn with
matplotlib's Agg backend into docs/img/, so the docs show what the notebook shows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from posledger.audit import plot_position
from posledger.demo import AGI, ETH, nov12, oct13, run_demo

IMAGES = Path(__file__).resolve().parent / "img"
PICTURES = {
    "seed-000-ethusdt-phantom.png": (ETH, {"since": nov12(9, 55), "until": nov12(10, 5)}),
    "seed-002-agiusdt-whole.png": (AGI, {}),
    "seed-002-agiusdt-stale-quantity.png": (AGI, {"since": oct13(19, 15), "until": oct13(19, 35)}),
}
"""File name -> (key, the time window to zoom on)."""


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'posledger-demo.db'}"
        run_demo(url)
        for name, (key, window) in PICTURES.items():
            axes = plot_position(url, key, **window)
            axes.figure.savefig(IMAGES / name, dpi=110)
            plt.close(axes.figure)
            print(f"wrote {IMAGES / name}")


if __name__ == "__main__":
    main()
