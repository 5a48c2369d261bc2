"""A Bybit bot's bookkeeping wired to posledger: the private WebSocket streams feed the ledger as
fills happen, and a Synchronizer loop reconciles complete REST snapshots behind them.

    ledger  <- BybitStream   (execution / order / position pushes; gaps refilled through REST)
            <- Synchronizer  (every --interval: snapshot, recover missed executions, reconcile)

It trades nothing on a real account: it keeps the ledger in step and prints what it holds, which
is what a strategy would consult (``ledger.open_positions()``) before sending an order.

Run it against Bybit (keys from the environment, never printed):

    BYBIT_API_KEY=... BYBIT_API_SECRET=... python examples/bybit_bot.py --testnet --db sqlite:///bot.db

or offline, against the fake Bybit of ``posledger.testing`` (REST and WebSocket on 127.0.0.1),
which plays seed 002: a short's reduce-only exit fills in parts, one part while the WebSocket is
down, and the ledger still ends on the exchange's size with every fill recorded once:

    python examples/bybit_bot.py --fake

It needs the ``bybit`` and ``testing`` extras (``pip install -e '.[bybit,testing]'``). A fake run
wants a new ``--db``: one that already holds a ledger is refused with one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from posledger import Ledger, PositionKey
from posledger.sync import Synchronizer
from posledger.venues.bybit import BybitVenue
from posledger.venues.bybit_stream import BybitStream, StreamHealth, pybit_websocket

ACCOUNT, CATEGORY, SETTLE_COIN = "main", "linear", "USDT"


def say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S}  {text}", flush=True)


class Bot:
    """The ledger, the stream and the synchronizer of one account; use it as a context manager."""

    def __init__(
        self, ledger: Ledger, http: Any, connect: Callable[[Any], Any], interval: timedelta
    ) -> None:
        self.ledger = ledger
        self.venue = BybitVenue(http, account=ACCOUNT, category=CATEGORY, settle_coin=SETTLE_COIN)
        self.stream = BybitStream(ledger, self.venue, connect)
        self.sync = Synchronizer(ledger, self.venue, interval=interval)
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self.sync.run_forever, args=(self._stop,))

    def __enter__(self) -> Bot:
        self.stream.start()
        self._loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._loop.join()
        self.stream.close()

    def key(self, symbol: str) -> PositionKey:
        return PositionKey(venue="bybit", account=ACCOUNT, category=CATEGORY, symbol=symbol)

    def holdings(self) -> list[str]:
        return [f"{p.key.symbol} {p.side} {p.size}" for p in self.ledger.open_positions()]

    def status(self) -> str:
        health = self.stream.health()
        staleness = self.sync.staleness()
        stale = "none yet" if staleness is None else f"{staleness.total_seconds():.1f}s ago"
        return (
            f"holds {self.holdings()}; stream {'up' if health.connected else 'DOWN'} "
            f"(logins {health.logins}, gap {health.gap or 'none'}, resyncs {health.resyncs}); "
            f"last snapshot {stale}"
        )

    def wait(self, predicate: Callable[[StreamHealth], bool], what: str) -> None:
        if not self.stream.wait_for(predicate, timeout=30):
            raise SystemExit(f"gave up waiting for {what}: {self.status()}")


def run_live(args: argparse.Namespace) -> int:
    key, secret = os.environ.get("BYBIT_API_KEY"), os.environ.get("BYBIT_API_SECRET")
    if not key or not secret:
        print("set BYBIT_API_KEY and BYBIT_API_SECRET (or run with --fake)", file=sys.stderr)
        return 2
    from pybit.unified_trading import HTTP  # type: ignore[import-untyped]

    http = HTTP(api_key=key, api_secret=secret, testnet=args.testnet)
    connect = pybit_websocket(api_key=key, api_secret=secret, testnet=args.testnet)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    with Ledger.open(args.db) as ledger, Bot(ledger, http, connect, args.interval) as bot:
        say(f"watching Bybit {'testnet' if args.testnet else 'mainnet'} into {ledger!r}")
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(args.status_every)
                say(bot.status())
        except KeyboardInterrupt:
            pass
        say(f"done: {bot.status()}")
    return 0


@contextmanager
def fake_bybit() -> Iterator[tuple[Any, Any]]:
    from posledger.testing.fake_bybit import FakeBybit
    from posledger.testing.fake_bybit_ws import FakeBybitWebSocket

    with FakeBybit() as fake, FakeBybitWebSocket(fake) as fake_ws:
        yield fake, fake_ws


def run_fake(args: argparse.Namespace) -> int:
    if not args.db.startswith("memory://"):
        with Ledger.open(args.db) as ledger:
            if ledger.keys():
                print(
                    f"bybit_bot: {args.db} already holds a ledger; --fake plays seed 002 on a "
                    "new fake exchange, so give it a new --db (or memory://)",
                    file=sys.stderr,
                )
                return 2
    with fake_bybit() as (fake, fake_ws), Ledger.open(args.db) as ledger:
        say(f"fake Bybit: REST {fake.url}, WebSocket {fake_ws.url}")
        connect = lambda handler: fake_ws.websocket(handler, ping_interval=5, ping_timeout=1)  # noqa: E731
        with Bot(ledger, fake.session(), connect, args.interval) as bot:
            bot.wait(lambda h: h.resyncs >= 1 and h.gap is None, "the stream")
            say("stream subscribed to position, execution and order; caught up through REST")
            agi = bot.key("AGIUSDT")

            ledger.request_open(agi, order_id="agi-open", side="sell", qty="4160")
            fake.add_open_order("AGIUSDT", "Sell", "4160", "0.05", order_id="agi-open")
            fake.partial_fill("agi-open", "4160", fee="0.11")
            bot.wait(lambda h: h.fills_streamed >= 1, "the opening fill")
            say(f"AGIUSDT: opened short 4160 (fill streamed); {bot.status()}")

            ledger.request_exit(agi, order_id="agi-exit", qty="4160", price="0.048", side="buy")
            fake.add_open_order(
                "AGIUSDT", "Buy", "4160", "0.048", order_id="agi-exit", reduce_only=True
            )
            fake.partial_fill("agi-exit", "1000", fee="0.02")
            bot.wait(lambda h: h.fills_streamed >= 2, "the first exit fill")
            say(f"AGIUSDT: reduce-only exit filled 1000 (streamed); {bot.status()}")

            with fake_ws.outage():
                fake.partial_fill("agi-exit", "1000", fee="0.02")
                say("WebSocket outage: the exit fills 1000 more while no client hears it")
            bot.wait(
                lambda h: h.logins >= 2 and h.resyncs >= 2 and h.gap is None,
                "the gap to be refilled",
            )
            say(f"stream reconnected and resynced through REST; {bot.status()}")

            seen = bot.sync.last_good_snapshot_at
            deadline = time.monotonic() + 30
            while bot.sync.last_good_snapshot_at == seen and time.monotonic() < deadline:
                time.sleep(0.05)
            say(f"synchronizer round after it: {bot.status()}")

            ledger_view = bot.holdings()
            leg = fake.position("AGIUSDT")
            exchange_view = [f"AGIUSDT {leg.side.lower()} {leg.size}"] if leg.size else []
            fills = [e for e in ledger.history(agi) if hasattr(e, "exec_id")]
            say(f"AGIUSDT: {len(fills)} fills recorded, {len({e.exec_id for e in fills})} distinct")
        say(f"done: ledger holds {ledger_view}, exchange holds {exchange_view}")
    return 0 if ledger_view == exchange_view else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", default="memory://", help="ledger URL (default: memory://)")
    parser.add_argument("--testnet", action="store_true", help="Bybit testnet instead of mainnet")
    parser.add_argument("--fake", action="store_true", help="run offline against a fake Bybit")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    parser.add_argument("--status-every", type=float, default=30, help="seconds between reports")
    parser.add_argument(
        "--interval",
        type=lambda s: timedelta(seconds=float(s)),
        default=timedelta(seconds=30),
        help="seconds between synchronizer rounds",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    return run_fake(args) if args.fake else run_live(args)


if __name__ == "__main__":
    sys.exit(main())
