"""A book's bot in its own OS process, for the books tests: it records its book's requests and
the fills it hears of in a store other processes write too. Light on imports, so a spawned
process starts quickly."""

from __future__ import annotations

from datetime import datetime
from multiprocessing.synchronize import Barrier

from posledger import Fill, Ledger, PositionKey

START_TIMEOUT_S = 60
"""How long a bot waits for the others to start: a bot that died opening the store breaks
the barrier for all (and the test fails) instead of leaving them waiting forever."""

Trade = tuple[str, str, str, str, str, datetime, int, bool]
"""(order_id, exec_id, side, qty, price, exec_time, seq, heard): an order filled at once, and
whether the bot heard of its fill."""


def trade_book(url: str, key: PositionKey, trades: list[Trade], start: Barrier) -> None:
    """Request each order in ``key``'s book and record the fills heard of, all processes
    starting together."""
    with Ledger.open(url) as ledger:
        start.wait(timeout=START_TIMEOUT_S)
        for order_id, exec_id, side, qty, price, at, seq, heard in trades:
            ledger.request_open(key, order_id=order_id, side=side, qty=qty, at=at)
            if heard:
                fill = Fill(exec_id=exec_id, order_id=order_id, side=side, qty=qty, price=price,
                            exec_time=at, seq=seq)  # fmt: skip
                ledger.record_fill(key, fill)
