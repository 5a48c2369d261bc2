"""Ledger.backfill imports many keys' executions per transaction and stores exactly what
record_fills would, key by key: the same position events, the same dedup markers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

import pytest

from posledger import (
    ExecutionConflict,
    Fill,
    InvalidInput,
    Ledger,
    PositionKey,
    Side,
    StorageUnavailable,
)
from posledger.ledger import FillBatchResult
from tests.conftest import T0, key

KEYS = [key("BTCUSDT"), key("ETHUSDT"), key("SOLUSDT", idx=1)]
SIDES = (Side.BUY, Side.BUY, Side.SELL, Side.SELL, Side.SELL, Side.BUY)
"""Opens, adds, reduces, closes, flips short, closes: lifecycles end inside a batch."""


def history(k: int, start: int, stop: int) -> list[Fill]:
    fills = []
    for i in range(start, stop):
        funding = i % 7 == 6
        fills.append(
            Fill(
                exec_id=f"k{k}-{i}",
                order_id="" if funding else f"k{k}-o{i // 3}",
                side=SIDES[i % len(SIDES)],
                qty=Decimal("0.5") if i % 3 else Decimal(1),
                price=Decimal(100 + i % 5),
                fee=Decimal("0.01"),
                exec_time=T0 + timedelta(seconds=i),
                seq=i + 1,
                kind="funding" if funding else "trade",
                idx=KEYS[k].idx,
            )
        )
    return fills


def pages(batch: int, total: int) -> list[dict[PositionKey, list[Fill]]]:
    """How a paginated history import arrives: a page of every key, round by round."""
    return [
        {KEYS[k]: history(k, start, min(start + batch, total)) for k in range(len(KEYS))}
        for start in range(0, total, batch)
    ]


def logged_rows(ledger: Ledger) -> list[tuple[int, object, int, str, bytes]]:
    """The notification log: every stored row with its notification id, in id order."""
    recorder = ledger.application.recorder
    top = recorder.max_notification_id() or 0
    return [
        (n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state))
        for n in recorder.select_notifications(start=1, limit=top + 1)
    ]


def stored_rows(ledger: Ledger) -> set[tuple[object, int, str, bytes]]:
    return {row[1:] for row in logged_rows(ledger)}


def reference(batches: Sequence[dict[PositionKey, list[Fill]]]) -> Ledger:
    """The same pages through record_fills, key by key, in an in-memory store."""
    ledger = Ledger.open("memory://", snapshot_every=10**9)
    for page in batches:
        for k, fills in page.items():
            ledger.record_fills(k, fills)
    return ledger


def test_backfill_stores_exactly_the_events_of_record_fills(ledger_url: str) -> None:
    batches = pages(batch=8, total=30)
    batches[1][KEYS[0]] = batches[1][KEYS[0]] + batches[1][KEYS[0]][:2]  # repeats in a page
    with reference(batches) as expected, Ledger.open(ledger_url) as ledger:
        results: dict[PositionKey, FillBatchResult] = {}
        for page in batches:
            results = ledger.backfill(page, events_per_transaction=20)
        assert stored_rows(ledger) == stored_rows(expected)
        assert ledger.positions() == expected.positions()
        assert [r.position for r in results.values()] == [expected.position(k) for k in KEYS]
        if ledger_url != "memory://":
            with Ledger.open(ledger_url) as reopened:
                assert reopened.positions() == expected.positions()


def test_a_large_backfill_logs_the_rows_of_record_fills_in_their_order(
    durable_url: str,
) -> None:
    """Transactions of hundreds of events (on PostgreSQL, staged by COPY) log exactly the rows
    record_fills would have written, in its order, with gapless notification ids after what
    was there."""
    before = {KEYS[2]: history(2, 0, 1)}
    batches = pages(batch=40, total=120)
    with reference([before, *batches]) as expected, Ledger.open(durable_url) as ledger:
        ledger.record_fills(KEYS[2], before[KEYS[2]])
        for page in batches:
            ledger.backfill(page)
        got = logged_rows(ledger)
        assert [row[0] for row in got] == list(range(1, len(got) + 1))
        assert [row[1:] for row in got] == [row[1:] for row in logged_rows(expected)]


def test_backfill_applies_each_keys_fills_in_exchange_order(ledger_url: str) -> None:
    """Given newest first, with two fills of one millisecond crossing zero out of seq order,
    backfill applies them by time, then seq: the long closes at 102, the short opens at 98."""
    at = T0 + timedelta(minutes=1)
    opening = Fill(exec_id="a", order_id="o1", side="buy", qty=1, price=100, exec_time=T0, seq=1)
    closing = Fill(exec_id="b", order_id="o2", side="sell", qty=1, price=102, exec_time=at, seq=2)
    flipping = Fill(exec_id="c", order_id="o2", side="sell", qty=1, price=98, exec_time=at, seq=3)
    with Ledger.open(ledger_url) as ledger:
        ledger.backfill({KEYS[0]: [flipping, closing, opening]})
        position = ledger.position(KEYS[0])
        assert position is not None and position.last_closed is not None
        assert (position.side, position.avg_entry_price) == (Side.SELL, Decimal(98))
        assert position.last_closed.realized_pnl == Decimal(2)
        assert [e.exec_id for e in ledger.history(KEYS[0]) if hasattr(e, "exec_id")] == [
            "a",
            "b",
            "c",
        ]


def test_backfill_results_say_what_became_of_each_fill(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        first = history(0, 0, 4)
        ledger.record_fills(KEYS[0], first[:2])
        results = ledger.backfill({KEYS[0]: first, KEYS[1]: history(1, 0, 2)})
        assert [f.duplicate for f in results[KEYS[0]].fills] == [True, True, False, False]
        assert results[KEYS[0]].applied == 2 and results[KEYS[1]].applied == 2
        assert results[KEYS[0]].position == ledger.position(KEYS[0])
        again = ledger.backfill({KEYS[0]: first})
        assert again[KEYS[0]].applied == 0
        assert ledger.position(KEYS[0]).version == results[KEYS[0]].position.version  # type: ignore[union-attr]


def test_backfill_deduplicates_against_another_ledgers_writes(durable_url: str) -> None:
    """The importing ledger has never seen these exec_ids: its big transaction is refused by the
    markers, and each key is recorded on its own, learning which fills are duplicates. (Pages of
    90 events: on PostgreSQL, the large-transaction insert path.)"""
    batches = pages(batch=15, total=30)
    with Ledger.open(durable_url) as writer:
        writer.record_fills(KEYS[1], batches[0][KEYS[1]])
    with Ledger.open(durable_url) as importer, reference(batches) as expected:
        for page in batches:
            importer.backfill(page)
        assert importer.conflict_retries >= 1
        assert importer.positions() == expected.positions()
        assert stored_rows(importer) == stored_rows(expected)


def test_backfill_refuses_a_known_exec_id_with_another_payload(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        original = history(0, 0, 1)[0]
        ledger.backfill({KEYS[0]: [original]})
        changed = Fill(
            exec_id=original.exec_id,
            order_id=original.order_id,
            side=original.side,
            qty=original.qty + 1,
            price=original.price,
            exec_time=original.exec_time,
        )
        with pytest.raises(ExecutionConflict):
            ledger.backfill({KEYS[0]: [changed]})


def test_bad_input_anywhere_writes_nothing(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        wrong_idx = history(2, 0, 1)  # idx 1, filed under an idx-0 key
        for bad in (
            {KEYS[0]: history(0, 0, 3), KEYS[1]: wrong_idx},
            {KEYS[0]: history(0, 0, 3), KEYS[1]: []},
            {KEYS[0]: history(0, 0, 3), "BTCUSDT": history(1, 0, 1)},
            [(KEYS[0], history(0, 0, 3))],
        ):
            with pytest.raises(InvalidInput):
                ledger.backfill(bad)  # type: ignore[arg-type]
        assert ledger.keys() == [] and stored_rows(ledger) == set()


def test_backfill_leaves_every_key_it_changed_snapshotted(durable_url: str) -> None:
    with Ledger.open(durable_url) as ledger:
        results = ledger.backfill({k: history(n, 0, 12) for n, k in enumerate(KEYS)})
        snapshots = ledger.application.snapshots
        assert snapshots is not None
        for k, result in results.items():
            latest = list(snapshots.get(k.stream_id, desc=True, limit=1))
            assert [s.originator_version for s in latest] == [result.position.version]


def test_a_held_table_lock_times_out_a_large_backfill(postgres_url: str) -> None:
    """The COPY path sets the same lock timeout as every write: blocked by another writer's
    table lock (readers pass), the import gives up with StorageUnavailable, writes nothing,
    and works once the lock is gone."""
    import psycopg

    batches = pages(batch=40, total=40)
    with Ledger.open(postgres_url, timeout=1.0) as ledger:
        schema = postgres_url.rsplit("schema=", 1)[1]
        with psycopg.connect(postgres_url.split("?")[0]) as blocker:
            blocker.execute(f'LOCK TABLE "{schema}".posledger_events IN EXCLUSIVE MODE')
            with pytest.raises(StorageUnavailable, match="lock timeout"):
                ledger.backfill(batches[0])
            blocker.rollback()
        assert stored_rows(ledger) == set()
        ledger.backfill(batches[0])
        with reference(batches) as expected:
            assert stored_rows(ledger) == stored_rows(expected)


def test_a_backfill_given_pairs_instead_of_a_mapping_says_so_in_one_short_line() -> None:
    """The refusal names the value cut short: a whole history in the message buries why."""
    pairs = [(KEYS[k], history(k, 0, 50)) for k in range(len(KEYS))]
    with Ledger.open() as ledger, pytest.raises(InvalidInput, match="mapping of keys") as raised:
        ledger.backfill(pairs)  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200
    assert "\n" not in str(raised.value)
