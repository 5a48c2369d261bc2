"""The read model's tables, one recorder per backend: the positions table (a row per key), its
open-positions view and eventsourcing's tracking table, written in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import (
    Tracking,
    TrackingRecorder,
)
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.sqlite import (
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)

from posledger.core.contract import settle_coin
from posledger.core.errors import InvalidInput
from posledger.core.model import Status
from posledger.core.position import PositionState
from posledger.store.snapshot import decode, encode

if TYPE_CHECKING:
    pass

TABLE = "posledger_positions"
OPEN_VIEW = "posledger_open_positions"
TRACKING_TABLE = "posledger_positions_tracking"
COLUMNS: tuple[str, ...] = (
    "stream_id",
    "venue",
    "account",
    "category",
    "symbol",
    "idx",
    "status",
    "side",
    "size",
    "avg_entry_price",
    "realized_pnl",
    "fees",
    "funding",
    "lifecycle",
    "pending_orders",
    "version",
    "updated_at",
    "state",
    *(LATER_COLUMNS := ("settle_coin", "adopted_pnl", "unexplained_pnl")),
    "book",
)
"""The table's columns, in order; the open-positions view has the same ones. The
:data:`LATER_COLUMNS`, then ``book``, came with later releases: a table made before gains them
(at the end, where ``ALTER TABLE`` puts them) when its view is created again."""
KEY_INDEX_COLUMNS = "venue, account, category, symbol, idx, book"
"""The unique key of a row: a position key, its book included ('' for the default book)."""

SQLITE_MAX_PARAMS = 500


def _plain(value: Decimal | None) -> str | None:
    """A decimal as fixed-point text for SQLite (exact, and never scientific notation)."""
    return None if value is None else format(value, "f")


# --- the views (materialised view + tracking, one per backend) -------------------------------


class PositionsView(TrackingRecorder):
    """The table of positions plus the tracking of what it has applied, in one store.

    ``write`` upserts rows and records the tracking object in ONE transaction, and fails with
    eventsourcing's ``IntegrityError`` (writing nothing) when that notification, or a later one,
    is already tracked: that is what makes the projection exactly-once."""

    def create_view(self) -> None:
        """Create the tables and the view if they are missing (idempotent)."""

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        raise NotImplementedError

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        raise NotImplementedError

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        raise NotImplementedError


class POPOPositionsView(POPOTrackingRecorder, PositionsView):
    """In-process view for ``memory://``: rows live in this object."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[UUID, PositionState] = {}

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        with self._database_lock:
            return {i: self._rows[i] for i in stream_ids if i in self._rows}

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        with self._database_lock:
            self._assert_tracking_uniqueness(tracking)
            for state in states:
                self._rows[state.key.stream_id] = state
            self._insert_tracking(tracking)

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        with self._database_lock:
            rows = list(self._rows.values())
        return [s for s in rows if not open_only or s.status is Status.OPEN]


class SQLitePositionsView(SQLiteTrackingRecorder, PositionsView):
    """The table in the event store's SQLite file. Quantities are TEXT holding the exact decimal
    (a NUMERIC or REAL column would round them through a binary float)."""

    def __init__(self, datastore: SQLiteDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        if not datastore.single_row_tracking:
            raise InvalidInput("the positions read model needs single-row tracking")
        self.insert_tracking_statement = (
            f"INSERT INTO {TRACKING_TABLE} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE SET notification_id = :notification_id "
            f"WHERE {TRACKING_TABLE}.notification_id < :notification_id "
            "RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {TRACKING_TABLE} WHERE application_name=?"
        )
        names = ", ".join(COLUMNS)
        self.upsert_statement = (
            f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            "ON CONFLICT (stream_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        )

    def construct_create_table_statements(self) -> list[str]:
        quantity = "TEXT NOT NULL"
        return [
            f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
            "application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {TABLE} ("
            "stream_id TEXT PRIMARY KEY, venue TEXT NOT NULL, account TEXT NOT NULL, "
            "category TEXT NOT NULL, symbol TEXT NOT NULL, idx INTEGER NOT NULL, "
            "status TEXT NOT NULL, side TEXT, "
            f"size {quantity}, avg_entry_price TEXT, realized_pnl {quantity}, "
            f"fees {quantity}, funding {quantity}, "
            "lifecycle INTEGER NOT NULL, pending_orders INTEGER NOT NULL, "
            "version INTEGER NOT NULL, updated_at TEXT NOT NULL, state TEXT NOT NULL, "
            f"settle_coin TEXT, adopted_pnl {quantity} DEFAULT '0', "
            f"unexplained_pnl {quantity} DEFAULT '0', book TEXT NOT NULL DEFAULT '')",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_key ON {TABLE} ({KEY_INDEX_COLUMNS})",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_status ON {TABLE} (status)",
            f"CREATE VIEW IF NOT EXISTS {OPEN_VIEW} AS SELECT {', '.join(COLUMNS)} "
            f"FROM {TABLE} WHERE status = 'open'",
        ]

    def create_view(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT name FROM pragma_table_info('{TABLE}')")
            names = {row["name"] for row in c.fetchall()}
            if names and "settle_coin" not in names:
                c.execute(f"ALTER TABLE {TABLE} ADD COLUMN settle_coin TEXT")
                for column in ("adopted_pnl", "unexplained_pnl"):  # no money checked before
                    c.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT NOT NULL DEFAULT '0'")
                c.execute(f"DROP VIEW IF EXISTS {OPEN_VIEW}")
                c.execute(f"SELECT stream_id, venue, category, symbol FROM {TABLE}")
                coins = [(settle_coin(*row[1:]), row[0]) for row in c.fetchall()]
                c.executemany(f"UPDATE {TABLE} SET settle_coin = ? WHERE stream_id = ?", coins)
            if names and "book" not in names:  # every row before books is the default book's
                c.execute(f"ALTER TABLE {TABLE} ADD COLUMN book TEXT NOT NULL DEFAULT ''")
                c.execute(f"DROP INDEX IF EXISTS {TABLE}_key")
                c.execute(f"DROP VIEW IF EXISTS {OPEN_VIEW}")
        self.create_table()

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        ids = [str(i) for i in stream_ids]
        found: dict[UUID, PositionState] = {}
        with self.datastore.transaction(commit=False) as c:
            for start in range(0, len(ids), SQLITE_MAX_PARAMS):
                chunk = ids[start : start + SQLITE_MAX_PARAMS]
                c.execute(
                    f"SELECT stream_id, state FROM {TABLE} "
                    f"WHERE stream_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
                for row in c.fetchall():
                    found[UUID(row["stream_id"])] = decode(json.loads(row["state"]))
        return found

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        # The transaction starts with a write, so it takes SQLite's write lock (waiting up to
        # the lock timeout) instead of failing on a snapshot another writer made stale.
        with self.datastore.transaction(commit=True) as c:
            if states:
                c.executemany(self.upsert_statement, [self._row(s) for s in states])
            self._insert_tracking(c, tracking)

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT state FROM {OPEN_VIEW if open_only else TABLE}")
            return [decode(json.loads(row["state"])) for row in c.fetchall()]

    @staticmethod
    def _row(state: PositionState) -> tuple[Any, ...]:
        key = state.key
        return (
            str(key.stream_id),
            key.venue,
            key.account,
            key.category,
            key.symbol,
            key.idx,
            state.status.value,
            state.side.value if state.side is not None else None,
            _plain(state.size),
            _plain(state.avg_entry_price),
            _plain(state.realized_pnl),
            _plain(state.fees),
            _plain(state.funding),
            state.lifecycle,
            len(state.pending_orders),
            state.version,
            state.updated_at.isoformat(),
            json.dumps(encode(state), separators=(",", ":")),
            key.settle_coin,
            _plain(state.adopted_pnl),
            _plain(state.unexplained_pnl),
            key.book,
        )
