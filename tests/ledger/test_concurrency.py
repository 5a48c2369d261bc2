"""Real OS processes on one store: concurrent writers and a reconciler lose nothing and double
nothing; a writer killed with SIGKILL mid-stream and restarted counts every fill exactly once."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from posledger import ExchangePosition, Fill, Ledger, PositionKey, Side, Snapshot
from tests.conftest import T0

KEYS = [
    PositionKey(venue="bybit", account="main", category="linear", symbol=s, idx=0)
    for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
]
FILLS_PER_KEY = 100
WRITERS = 4


def exchange_history(seed: int = 7) -> list[tuple[int, Fill]]:
    """The exchange's executions: (key index, fill), with a global Bybit-like seq."""
    rng = random.Random(seed)
    history = []
    for seq in range(1, FILLS_PER_KEY * len(KEYS) + 1):
        k = rng.randrange(len(KEYS))
        history.append(
            (
                k,
                Fill(
                    exec_id=f"x{seq}",
                    order_id=f"o{seq}",
                    side=rng.choice([Side.BUY, Side.SELL]),
                    qty=Decimal(rng.randint(1, 9)) / 10,
                    price=Decimal(rng.randint(9_000, 11_000)) / 100,
                    fee=Decimal("0.001"),
                    exec_time=T0 + timedelta(seconds=seq),
                    seq=seq,
                ),
            )
        )
    return history


def truth(history: list[tuple[int, Fill]]) -> tuple[dict[PositionKey, Decimal], dict[int, int]]:
    signed = {key: Decimal(0) for key in KEYS}
    last_seq = {k: 0 for k in range(len(KEYS))}
    for k, fill in history:
        signed[KEYS[k]] += fill.qty * fill.side.sign
        last_seq[k] = fill.seq or 0
    return signed, last_seq


def exchange_snapshot(minute: int) -> Snapshot:
    signed, last_seq = truth(exchange_history())
    rows = [
        ExchangePosition(
            symbol=key.symbol,
            idx=0,
            side=Side.BUY if signed[key] > 0 else Side.SELL,
            size=abs(signed[key]),
            seq=last_seq[k],
        )
        for k, key in enumerate(KEYS)
        if signed[key]
    ]
    return Snapshot(
        venue="bybit",
        account="main",
        category="linear",
        taken_at=T0 + timedelta(hours=10, minutes=minute),
        positions=rows,
        open_order_ids=[],
    )


def writer(url: str, worker: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Delivers its share of the history, plus every other process's share's duplicates."""
    history = exchange_history()
    mine = [item for n, item in enumerate(history) if n % WRITERS == worker]
    overlap = [item for n, item in enumerate(history) if n % WRITERS == (worker + 1) % WRITERS]
    deliveries = mine + overlap
    random.Random(worker).shuffle(deliveries)
    duplicates = 0
    try:
        with Ledger.open(url, timeout=30) as ledger:
            for k, fill in deliveries:
                duplicates += ledger.record_fill(KEYS[k], fill).duplicate
            results.put(("writer", worker, ledger.conflict_retries, duplicates))
    except Exception as error:
        results.put(("error", worker, repr(error), 0))
        raise


def reconciler(url: str, rounds: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with Ledger.open(url, timeout=30) as ledger:
            corrections = 0
            for minute in range(rounds):
                snapshot = exchange_snapshot(minute)
                corrections += len(ledger.reconcile(snapshot, now=snapshot.taken_at).corrections)
            results.put(("reconciler", 0, ledger.conflict_retries, corrections))
    except Exception as error:
        results.put(("error", 0, repr(error), 0))
        raise


def test_concurrent_writers_and_a_reconciler_lose_and_double_nothing(durable_url: str) -> None:
    with Ledger.open(durable_url):
        pass  # create the tables once, before the processes race to do it
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=writer, args=(durable_url, w, results)) for w in range(WRITERS)
    ]
    processes.append(context.Process(target=reconciler, args=(durable_url, 30, results)))
    for process in processes:
        process.start()
    reports = [results.get(timeout=240) for _ in processes]
    assert [r for r in reports if r[0] == "error"] == []
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    retries = sum(r[2] for r in reports)
    duplicates = sum(r[3] for r in reports if r[0] == "writer")
    corrections = sum(r[3] for r in reports if r[0] == "reconciler")
    print(
        f"\n{len(processes)} processes, {FILLS_PER_KEY * len(KEYS)} fills delivered twice: "
        f"{retries} conflict retries, {duplicates} duplicates, {corrections} corrections"
    )

    signed, _ = truth(exchange_history())
    with Ledger.open(durable_url) as fresh:
        for key in KEYS:
            state = fresh.position(key)
            assert state is not None and state.signed_size == signed[key], key
        applied = Counter(
            getattr(event, "exec_id", None)
            for key in KEYS
            for event in fresh.history(key)
            if type(event).__name__ in ("Filled", "PartiallyFilled")
        )
        assert set(applied) == {f"x{n}" for n in range(1, FILLS_PER_KEY * len(KEYS) + 1)}
        assert max(applied.values()) == 1
        assert duplicates == FILLS_PER_KEY * len(KEYS)
        final = exchange_snapshot(99)
        assert fresh.reconcile(final, now=final.taken_at).events_written == 0


def acknowledging_writer(url: str, ack_path: str, start: int) -> None:
    """A bot: record each fill, then (only once it is durable) acknowledge it."""
    history = exchange_history()
    with Ledger.open(url, timeout=30) as ledger, open(ack_path, "a") as acks:
        for n in range(start, len(history)):
            k, fill = history[n]
            ledger.record_fill(KEYS[k], fill)
            acks.write(f"{n}\n")
            acks.flush()
            os.fsync(acks.fileno())


def last_ack(ack_path: Path) -> int:
    lines = ack_path.read_text().split() if ack_path.exists() else []
    return int(lines[-1]) if lines else -1


def test_a_writer_killed_mid_stream_counts_every_fill_once(
    durable_url: str, tmp_path: Path
) -> None:
    with Ledger.open(durable_url):
        pass
    acks = tmp_path / "acks"
    context = multiprocessing.get_context("spawn")
    victim = context.Process(target=acknowledging_writer, args=(durable_url, str(acks), 0))
    victim.start()
    deadline = time.monotonic() + 120
    while last_ack(acks) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=30)
    assert victim.exitcode == -signal.SIGKILL
    killed_after = last_ack(acks)
    assert 60 <= killed_after < len(exchange_history()) - 1

    restarted = context.Process(
        target=acknowledging_writer, args=(durable_url, str(acks), killed_after)
    )
    restarted.start()
    restarted.join(timeout=240)
    assert restarted.exitcode == 0

    signed, _ = truth(exchange_history())
    with Ledger.open(durable_url) as fresh:
        applied = Counter(
            getattr(event, "exec_id", None)
            for key in KEYS
            for event in fresh.history(key)
            if type(event).__name__ in ("Filled", "PartiallyFilled")
        )
        assert max(applied.values()) == 1
        assert len(applied) == len(exchange_history())
        for key in KEYS:
            assert fresh.position(key).signed_size == signed[key]  # type: ignore[union-attr]


def opener(url: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        with Ledger.open(url, timeout=30) as ledger:
            results.put(("ok", len(ledger.keys())))
    except Exception as error:
        results.put(("error", repr(error)))


def test_many_processes_may_create_the_tables_at_once(durable_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=opener, args=(durable_url, results)) for _ in range(6)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == [("ok", 0)] * len(processes)
