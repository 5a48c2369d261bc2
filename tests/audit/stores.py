"""The stores the audit tests read: a varied history over several keys, and corruptions
written behind the ledger's back (events appended directly, a row inserted with raw SQL)."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from posledger import AllocationPolicy, Ledger, PositionKey
from posledger.audit import Check
from posledger.core.events import EXEC_NAMESPACE, Closed, ExecutionSeen, Filled, Reconciled
from posledger.store.application import LedgerApplication
from posledger.store.snapshot import PositionSnapshot
from tests.conftest import T0, key
from tests.helpers import at, fill, row, snapshot

# --- keys -----------------------------------------------------------------------------------------


BTC = key("BTCUSDT")


ETH = key("ETHUSDT")


SOL = key("SOLUSDT")


XRP_LONG = key("XRPUSDT", idx=1)


XRP_SHORT = key("XRPUSDT", idx=2)


D = Decimal


# --- building stores ------------------------------------------------------------------------------


def varied_history(ledger: Ledger, k: PositionKey = BTC) -> None:
    """Requests, partial fills, a reduce-only exit, a flip, funding, a stale_quantity correction
    after two confirmations, a phantom close, and a cancelled order."""
    symbol = k.symbol
    ledger.request_open(k, order_id="o1", side="buy", qty=D(3), at=T0, price="100")
    ledger.record_fill(k, fill("e1", "buy", "1", "100", order_id="o1", fee="0.1", exec_time=at(1)))
    ledger.record_fill(k, fill("e2", "buy", "2", "101", order_id="o1", fee="0.2", exec_time=at(2)))
    ledger.request_exit(k, order_id="x1", qty=D(1), at=at(3))
    ledger.record_fill(k, fill("e3", "sell", "1", "105", order_id="x1", exec_time=at(4)))
    ledger.record_fill(k, fill("e4", "sell", "5", "104", exec_time=at(5)))  # flips to short 3
    ledger.record_fill(
        k, fill("f1", "buy", "3", "104", fee="0.03", kind="funding", exec_time=at(6))
    )
    for minute in (10, 11):  # the exchange shows short 2, twice: stale_quantity
        ledger.reconcile(
            snapshot(at(minute), [row(symbol, "sell", "2", seq=minute)]), now=at(minute)
        )
    for minute in (12, 13):  # then nothing, twice: a phantom
        ledger.reconcile(snapshot(at(minute), symbols=[symbol]), now=at(minute))
    ledger.request_open(k, order_id="o2", side="buy", qty=D(1), at=at(14))
    ledger.record_order_end(k, order_id="o2", status="Cancelled", at=at(15))


def more_keys(ledger: Ledger) -> None:
    """An absorbed late fill, a reduce-only overfill, hedge legs clipped at the position."""
    ledger.record_fill(ETH, fill("h1", "buy", "2", "2000", seq=5, exec_time=at(1)))
    for minute in (10, 11):
        ledger.reconcile(
            snapshot(at(minute), [row("ETHUSDT", "buy", "3", seq=20)], symbols=["ETHUSDT"]),
            now=at(minute),
        )
    late = ledger.record_fill(ETH, fill("h2", "buy", "1", "2001", seq=15, exec_time=at(2)))
    assert late.event == "Filled"
    ledger.record_fill(SOL, fill("s1", "buy", "1", "150", exec_time=at(1)))
    ledger.request_exit(SOL, order_id="sx", qty=D(1), at=at(2))
    ledger.record_fill(SOL, fill("s2", "sell", "2", "151", order_id="sx", exec_time=at(3)))
    ledger.record_fill(XRP_LONG, fill("r1", "buy", "2", "0.5", exec_time=at(1)))
    ledger.record_fill(XRP_LONG, fill("r2", "sell", "1", "0.6", exec_time=at(2)))
    ledger.record_fill(XRP_LONG, fill("r3", "sell", "3", "0.7", exec_time=at(3)))
    ledger.record_fill(XRP_SHORT, fill("r4", "sell", "4", "0.55", exec_time=at(4)))


def build(ledger: Ledger) -> None:
    varied_history(ledger)
    more_keys(ledger)


ACCOUNT = key("ADAUSDT")
ALPHA, BETA = ACCOUNT.in_book("alpha"), ACCOUNT.in_book("beta")
BOOK_POLICY = AllocationPolicy(pro_rata={"adl"})
"""The allocation the books store is written with: an ADL is shared between the books."""


def with_books(ledger: Ledger) -> None:
    """Two books on one account (opened with :data:`BOOK_POLICY`): orders in named books
    (their ``OrderBooked`` markers), a recovered execution of an ended order, an ADL and a
    funding payment each split into both books (one exec_id in two streams, one marker), a
    manual trade taken by the unassigned book, then a phantom that the unassigned book takes."""
    ledger.request_open(ALPHA, order_id="a1", side="buy", qty=D(2), at=at(0))
    ledger.request_open(BETA, order_id="b1", side="buy", qty=D(1), at=at(0))
    ledger.record_fill(ALPHA, fill("ba1", "buy", "2", "1.00", order_id="a1", exec_time=at(1)))
    ledger.record_fill(BETA, fill("bb1", "buy", "1", "1.10", order_id="b1", exec_time=at(2)))
    ledger.request_exit(BETA, order_id="b2", qty=D("0.5"), at=at(3))
    ledger.record_order_end(BETA, order_id="b2", status="Cancelled", at=at(4))
    account_fills = [
        fill("bb2", "sell", "0.5", "1.20", order_id="b2", exec_time=at(3.5)),
        fill("adl1", "sell", "0.5", "0.90", kind="adl", fee="0.0001", exec_time=at(5)),
        fill("fund1", "buy", "2", "1", kind="funding", fee="0.003", exec_time=at(6)),
        fill("man1", "sell", "0.2", "1.30", order_id="web-1", exec_time=at(7)),
    ]
    ledger.record_account_fills(ACCOUNT, account_fills)
    for minute in (10, 11):  # the exchange shows the account flat, twice: a phantom
        ledger.reconcile(snapshot(at(minute), symbols=["ADAUSDT"]), now=at(minute))


def source_of(ledger: Ledger, url: str) -> Ledger | str:
    """What a notebook would pass: the URL of a durable store, the Ledger of a memory one."""
    return ledger if url.startswith("memory") else url


# --- corrupting them ------------------------------------------------------------------------------


def append(app: LedgerApplication, *events: object) -> None:
    """Write events behind the ledger's back, as a buggy tool or a hand-edit would."""
    app.recorder.insert_events([app.mapper.to_stored_event(e) for e in events])  # type: ignore[arg-type]


def filled(k: PositionKey, version: int, exec_id: str, side: str, qty: str, **more: Any) -> Filled:
    fields: dict[str, Any] = {
        "originator_id": k.stream_id,
        "originator_version": version,
        "timestamp": at(30),
        "exec_id": exec_id,
        "order_id": "",
        "side": side,
        "qty": D(qty),
        "price": D(100),
        "fee": D(0),
        "exec_time": at(30),
        "seq": None,
        "kind": "trade",
        "leaves_qty": None,
        "reduce_only": False,
        "overfill": D(0),
        "absorbed": False,
    }
    fields.update(more)
    return Filled(**fields)


def closed(k: PositionKey, version: int) -> Closed:
    """A ``Closed`` of lifecycle 1 with zero figures, as a hand-edit would append it."""
    return Closed(
        originator_id=k.stream_id,
        originator_version=version,
        timestamp=at(30),
        reason="filled",
        lifecycle=1,
        opened_at=at(1),
        realized_pnl=D(0),
        fees=D(0),
        funding=D(0),
        cleared_orders=[],
    )


def seen(k: PositionKey, exec_id: str, payload: str, timestamp: datetime) -> ExecutionSeen:
    """The ``ExecutionSeen`` marker of ``exec_id`` (bybit/main) pointing at ``k``."""
    return ExecutionSeen(
        originator_id=uuid.uuid5(EXEC_NAMESPACE, f"bybit\x1fmain\x1f{exec_id}"),
        originator_version=1,
        timestamp=timestamp,
        exec_id=exec_id,
        stream_id=k.stream_id,
        payload=payload,
    )


GOLD, TON = key("GOLDUSDT"), key("TONUSDT")


def corrupt(ledger: Ledger) -> dict[tuple[str, Check], str]:
    """Seven corruptions; returns the (key, check) each must be reported under, with a word of
    the detail."""
    for k, exec_id in ((GOLD, "g1"), (TON, "t1")):
        ledger.record_fill(k, fill(exec_id, "buy", "1", exec_time=at(1)))
    app = ledger.application
    v = {s.key: s.version for s in ledger.positions()}
    append(
        app,
        # BTC (flat): a fill appended without its ExecutionSeen marker.
        filled(BTC, v[BTC] + 1, "sneaky", "buy", "1"),
        # ETH (long 3): a correction whose `before` lies (says 5).
        Reconciled(
            originator_id=ETH.stream_id,
            originator_version=v[ETH] + 1,
            timestamp=at(30),
            kind="stale_quantity",
            before_side="buy",
            before_size=D(5),
            after_side="buy",
            after_size=D(4),
            after_avg_price=None,
            snapshot_taken_at=at(30),
            snapshot_seq=None,
            snapshot_avg_price=None,
            confirmations=2,
            cleared_orders=[],
        ),
        # SOL: BTC's exec_id e1 applied again, in another stream.
        filled(SOL, v[SOL] + 1, "e1", "buy", "1"),
        # XRP long leg: a marker whose execution was never applied.
        seen(XRP_LONG, "ghost", f"{XRP_LONG}|o|buy|1|1|0|trade", at(30)),
        # XRP short leg: a version skipped.
        filled(XRP_SHORT, v[XRP_SHORT] + 2, "gap", "sell", "1"),
        # GOLD (long 1): a Closed though no lifecycle ended.
        closed(GOLD, v[GOLD] + 1),
        # A stream that never registered its key.
        filled(PositionKey("bybit", "main", "linear", "NOPEUSDT"), 1, "n1", "buy", "1"),
    )
    # TON: a snapshot that disagrees with its own events.
    state = ledger.position(TON)
    assert state is not None and app.snapshots is not None
    app.snapshots.put([PositionSnapshot.take(attrs.evolve(state, size=D(7)))])
    return {
        (str(BTC), Check.EXECUTIONS): "without its ExecutionSeen marker",
        (str(ETH), Check.SIZES): "imply +3",
        (str(SOL), Check.EXECUTIONS): "applied again",
        (str(XRP_LONG), Check.EXECUTIONS): "without an applied execution",
        (str(XRP_SHORT), Check.LIFECYCLES): "not contiguous",
        (str(GOLD), Check.LIFECYCLES): "does not follow the end of a lifecycle",
        ("None", Check.LIFECYCLES): "not KeyRegistered",
        (str(TON), Check.LEDGER): "size: 7 vs 1",
    }


def forge_fill_by_sql(url: str, k: PositionKey, exec_id: str = "forged-by-hand") -> int:
    """Append a copy of the key's first fill, under a new exec_id, straight into the stored
    events table with SQL (no Ledger, no eventsourcing), as a hand-edit would; returns the
    version it took."""
    db, table, mark, stream = _raw_table(url, k)
    with db:
        rows = db.execute(
            f"SELECT originator_version, topic, state FROM {table} WHERE originator_id = {mark} "
            "ORDER BY originator_version",
            (stream,),
        ).fetchall()
        state = next(bytes(r[2]) for r in rows if r[1] == "posledger:Filled")
        forged = state.replace(b'"exec_id":"', f'"exec_id":"{exec_id}-'.encode(), 1)
        version = rows[-1][0] + 1
        db.execute(
            f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
            f"VALUES ({mark}, {mark}, {mark}, {mark})",
            (stream, version, "posledger:Filled", forged),
        )
    db.close()
    return int(version)


def damage_by_sql(
    url: str, k: PositionKey, version: int, state: bytes | None, *, snapshot: bool = False
) -> None:
    """Overwrite the state of the key's stored event (``snapshot``: its snapshot) at ``version``
    with ``state``, or delete the row (``state`` None), straight in the table with SQL, as a
    disk fault or a careless hand-edit would."""
    db, table, mark, stream = _raw_table(url, k, snapshot=snapshot)
    where = f"WHERE originator_id = {mark} AND originator_version = {mark}"
    with db:
        if state is None:
            changed = db.execute(f"DELETE FROM {table} {where}", (stream, version))
        else:
            changed = db.execute(
                f"UPDATE {table} SET state = {mark} {where}", (state, stream, version)
            )
        assert changed.rowcount == 1
    db.close()


def _raw_table(url: str, k: PositionKey, *, snapshot: bool = False) -> tuple[Any, str, str, object]:
    """A plain connection to a SQLite or PostgreSQL store, the name of its events (or snapshots)
    table, its parameter mark, and the key's stream id as the table stores it."""
    kind = "snapshots" if snapshot else "events"
    if url.startswith("sqlite"):
        return sqlite3.connect(url[len("sqlite:///") :]), f"stored_{kind}", "?", k.stream_id.hex
    import psycopg

    server, schema = url.split("?schema=")
    db = psycopg.connect(server, autocommit=True)
    db.execute(f"SET search_path TO {schema}")
    return db, f"posledger_{kind}", "%s", k.stream_id
