"""Take the screenshots of docs/operations.md#web-view: ``python docs/make_screenshots.py``.

The demo ledger plus a few live keys (a held phantom, an open long, an inverse short settled in
BTC), served by the web view with a token, photographed by Debian's chromium through Playwright
at a laptop's and a phone's width into docs/img/.
"""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from posledger import Fill, Ledger, PositionKey, ReconcilePolicy, Side, Snapshot
from posledger.demo import run_demo
from posledger.web import create_app

IMAGES = Path(__file__).resolve().parent / "img"
CHROMIUM = "/usr/bin/chromium"
TOKEN = "screenshot-token-0123456789"
PORT = 8731
T = datetime(2025, 11, 14, 8, 0, tzinfo=UTC)
SHOTS = {
    "web-laptop.png": ({"width": 1280, "height": 900}, "/"),
    "web-phone.png": ({"width": 390, "height": 844}, "/"),
    "web-key-laptop.png": ({"width": 1280, "height": 900}, "/keys/{held}"),
}
"""File name -> (viewport, path)."""


def live_keys(url: str) -> PositionKey:
    """Trade three keys; flat snapshots of the first propose a phantom. Returns the held key."""
    held, eth, btc = (
        PositionKey(venue="bybit", account="main", category=category, symbol=symbol)
        for category, symbol in (
            ("linear", "SUIUSDT"),
            ("linear", "ETHUSDT"),
            ("inverse", "BTCUSD"),
        )
    )
    policy = ReconcilePolicy(hold_for_approval={"phantom"})
    with Ledger.open(url, policy=policy) as ledger:
        for n, (key, side, qty, price) in enumerate(
            [
                (held, "buy", "1200", "1.8412"),
                (eth, "buy", "0.75", "3188.4"),
                (btc, "sell", "500", "97210.5"),
            ]
        ):
            fill = Fill(
                exec_id=f"e-{n}",
                order_id=f"o-{n}",
                side=Side.parse(side),
                qty=Decimal(qty),
                price=Decimal(price),
                fee=Decimal("0.05"),
                exec_time=T + timedelta(minutes=n),
            )
            ledger.record_fill(key, fill)
        for minutes in (10, 11):
            shows = Snapshot(
                venue="bybit",
                account="main",
                category="linear",
                taken_at=T + timedelta(minutes=minutes),
                positions=[],
                symbols=["SUIUSDT"],
                open_order_ids=[],
            )
            ledger.reconcile(shows, now=shows.taken_at)
    return held


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'posledger-demo.db'}"
        run_demo(url)
        held = live_keys(url)
        with Ledger.open(url) as ledger:
            app = create_app(ledger, token=TOKEN)
            server = uvicorn.Server(uvicorn.Config(app, port=PORT, log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.05)
            try:
                photograph(f"http://127.0.0.1:{PORT}", str(held.stream_id))
            finally:
                app.state.web.watcher.end_streams()
                server.should_exit = True
                thread.join()


def photograph(base: str, held: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        for name, (viewport, path) in SHOTS.items():
            page = browser.new_page(viewport=viewport, device_scale_factor=1)
            page.goto(f"{base}/login")
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.goto(base + path.format(held=held))
            page.wait_for_selector("#live.on")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=IMAGES / name, full_page=True)
            print(f"wrote {IMAGES / name}")
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
