"""Writers in their own OS processes, for the concurrent-writer proofs: plain bots recording fills,
and a bot whose write stops inside its transaction (ids reserved, rows inserted, not committed)
until told to commit, or until it is killed. Light on imports, so a spawned process starts
quickly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from posledger import Fill, Ledger, PositionKey

START_TIMEOUT_S = 60
HOLD_TIMEOUT_S = 120
"""A held transaction's ledger timeout: its connection must outlive the hold."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bot_key(symbol: str) -> PositionKey:
    return PositionKey(venue="bybit", account="fleet", category="linear", symbol=symbol)


def fill(exec_id: str, n: int) -> Fill:
    return Fill(
        exec_id=exec_id,
        order_id=f"o-{exec_id}",
        side="buy",
        qty="0.001",
        price="100",
        exec_time=T0 + timedelta(seconds=n),
        seq=n,
    )


def record_fills(url: str, writer: int, count: int, symbols: list[str], start: Barrier) -> None:
    """``count`` fills, each on a symbol drawn from ``symbols`` (shared with the other bots, so
    their writes conflict and are recomputed)."""
    chooser = random.Random(writer)
    with Ledger.open(url, timeout=30) as ledger:
        start.wait(timeout=START_TIMEOUT_S)
        for n in range(count):
            ledger.record_fill(bot_key(chooser.choice(symbols)), fill(f"w{writer}-{n}", n))


def hold_write(url: str, symbol: str, held: Event, release: Event) -> None:
    """Record one fill whose transaction stops after its INSERT: ``held`` is set while the
    transaction is open with its rows, and it commits once ``release`` is set (unless the
    process is killed first, which rolls it back)."""
    from posledger.store import postgres_log

    uncommitted = postgres_log.BoundedApplicationRecorder._one_query

    def one_query(self: Any, conn: Any) -> tuple[str, str, str]:
        prefix, middle, suffix = uncommitted(self, conn)
        return prefix, middle, suffix.split("; COMMIT;")[0]

    returned_ids = postgres_log._returned_ids

    def commit_when_released(curs: Any) -> list[int]:
        ids = returned_ids(curs)
        held.set()
        release.wait(HOLD_TIMEOUT_S)
        curs.connection.execute("COMMIT")
        return ids

    postgres_log.BoundedApplicationRecorder._one_query = one_query  # type: ignore[method-assign]
    postgres_log._returned_ids = commit_when_released
    with Ledger.open(url, timeout=HOLD_TIMEOUT_S) as ledger:
        ledger.record_fill(bot_key(symbol), fill(f"held-{symbol}", 0))
