"""The read model's table in PostgreSQL (imported only for a PostgreSQL store: psycopg is
an optional dependency and slow to import)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import (
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg.types.json import Jsonb

from posledger.core.contract import settle_coin
from posledger.core.errors import InvalidInput
from posledger.core.position import PositionState
from posledger.store.readmodel.views import (
    COLUMNS,
    KEY_INDEX_COLUMNS,
    OPEN_VIEW,
    TABLE,
    TRACKING_TABLE,
    PositionsView,
)
from posledger.store.snapshot import decode, encode


class PostgresPositionsView(PostgresTrackingRecorder, PositionsView):
    """The table in the event store's PostgreSQL schema, quantities as NUMERIC."""

    def __init__(
        self, datastore: PostgresDatastore, *, tracking_table_name: str = TRACKING_TABLE
    ) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name)
        if not datastore.single_row_tracking:
            raise InvalidInput("the positions read model needs single-row tracking")
        schema, table = Identifier(datastore.schema), Identifier(TABLE)
        view = Identifier(OPEN_VIEW)
        columns = SQL(", ").join(Identifier(c) for c in COLUMNS)

        def upgrade(last_column: str, statements: str) -> Composed:
            """``statements`` run once, on a table without ``last_column``, then its view
            dropped (to be created again with every column)."""
            return SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
                "to_regclass({name}) AND attname = {column} AND NOT attisdropped) THEN "
                + statements
                + "DROP VIEW IF EXISTS {schema}.{view}; END IF; END $$"
            ).format(
                name=Literal(f'"{datastore.schema}"."{TABLE}"'),
                column=Literal(last_column),
                schema=schema,
                table=table,
                index=Identifier(f"{TABLE}_key"),
                view=view,
            )

        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "stream_id uuid PRIMARY KEY, venue text NOT NULL, account text NOT NULL, "
                "category text NOT NULL, symbol text NOT NULL, idx integer NOT NULL, "
                "status text NOT NULL, side text, size numeric NOT NULL, "
                "avg_entry_price numeric, realized_pnl numeric NOT NULL, "
                "fees numeric NOT NULL, funding numeric NOT NULL, "
                "lifecycle integer NOT NULL, pending_orders integer NOT NULL, "
                "version bigint NOT NULL, updated_at timestamptz NOT NULL, "
                "state jsonb NOT NULL, settle_coin text, adopted_pnl numeric NOT NULL DEFAULT 0, "
                "unexplained_pnl numeric NOT NULL DEFAULT 0, book text NOT NULL DEFAULT '')"
            ).format(schema=schema, table=table),
            # A table made before the later columns existed gains them (and its view the
            # columns) once; later opens only read the catalog, taking no lock a dashboard
            # would wait on. No money was checked before them: their default 0 is exact.
            upgrade(
                "unexplained_pnl",
                "ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS settle_coin text, "
                "ADD COLUMN IF NOT EXISTS adopted_pnl numeric NOT NULL DEFAULT 0, "
                "ADD COLUMN IF NOT EXISTS unexplained_pnl numeric NOT NULL DEFAULT 0; ",
            ),
            # A table made before books: every row is the default book's, and the key (its
            # unique index) gains the book.
            upgrade(
                "book",
                "ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS book text NOT NULL "
                "DEFAULT ''; DROP INDEX IF EXISTS {schema}.{index}; ",
            ),
            SQL("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {schema}.{table} ({key})").format(
                index=Identifier(f"{TABLE}_key"),
                schema=schema,
                table=table,
                key=SQL(KEY_INDEX_COLUMNS),
            ),
            SQL("CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (status)").format(
                index=Identifier(f"{TABLE}_status"), schema=schema, table=table
            ),
            # Only if missing: replacing it on every open would need its owner's rights
            # and an exclusive lock that blocks the dashboards reading it.
            SQL(
                "DO $$ BEGIN IF to_regclass({name}) IS NULL THEN "
                "CREATE VIEW {schema}.{view} AS "
                "SELECT {columns} FROM {schema}.{table} WHERE status = 'open'; "
                "END IF; END $$"
            ).format(
                name=Literal(f'"{datastore.schema}"."{OPEN_VIEW}"'),
                schema=schema,
                view=view,
                columns=columns,
                table=table,
            ),
        ]
        self.upsert_statement: Composed = SQL(
            "INSERT INTO {schema}.{table} ({columns}) VALUES ({values}) "
            "ON CONFLICT (stream_id) DO UPDATE SET {updates}"
        ).format(
            schema=schema,
            table=table,
            columns=columns,
            values=SQL(", ").join(SQL("%s") for _ in COLUMNS),
            updates=SQL(", ").join(
                SQL("{c} = EXCLUDED.{c}").format(c=Identifier(c)) for c in COLUMNS[1:]
            ),
        )
        self.select_states_statement = SQL(
            "SELECT state FROM {schema}.{table} WHERE stream_id = ANY(%s)"
        ).format(schema=schema, table=table)
        self.select_unknown_coins_statement = SQL(
            "SELECT stream_id, venue, category, symbol FROM {schema}.{table} "
            "WHERE settle_coin IS NULL"
        ).format(schema=schema, table=table)
        self.update_coin_statement = SQL(
            "UPDATE {schema}.{table} SET settle_coin = %s WHERE stream_id = %s"
        ).format(schema=schema, table=table)
        self.select_all_statement = SQL("SELECT state FROM {schema}.{table}").format(
            schema=schema, table=table
        )
        self.select_open_statement = SQL("SELECT state FROM {schema}.{view}").format(
            schema=schema, view=view
        )
        self.lock_timeout_statement = SQL("SET LOCAL lock_timeout = '{0}s'").format(
            datastore.lock_timeout
        )

    def create_view(self) -> None:
        self.create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.select_unknown_coins_statement)
            rows: list[DictRow] = curs.fetchall()
            coins = [
                (coin, row["stream_id"])
                for row in rows
                if (coin := settle_coin(row["venue"], row["category"], row["symbol"]))
            ]
            if coins:
                curs.executemany(self.update_coin_statement, coins)

    # eventsourcing retries these ten times whatever the deadline; the read model bounds
    # its retries by the ledger's timeout instead (see ReadModel._call).
    def max_tracking_id(self, application_name: str) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return self._max_tracking_id(application_name, curs)

    def has_tracking_id(self, application_name: str, notification_id: int | None) -> bool:
        return TrackingRecorder.has_tracking_id(self, application_name, notification_id)

    def states(self, stream_ids: Iterable[UUID]) -> dict[UUID, PositionState]:
        ids = list(stream_ids)
        if not ids:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_states_statement, (ids,))
            states = (decode(row["state"]) for row in curs.fetchall())
            return {s.key.stream_id: s for s in states}

    def write(self, states: Sequence[PositionState], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.lock_timeout_statement)
            if states:
                curs.executemany(self.upsert_statement, [self._row(s) for s in states])
            self._insert_tracking(curs, tracking)

    def select_states(self, *, open_only: bool = False) -> list[PositionState]:
        statement = self.select_open_statement if open_only else self.select_all_statement
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement)
            rows: list[DictRow] = curs.fetchall()
            return [decode(row["state"]) for row in rows]

    @staticmethod
    def _row(state: PositionState) -> tuple[Any, ...]:
        key = state.key
        return (
            key.stream_id,
            key.venue,
            key.account,
            key.category,
            key.symbol,
            key.idx,
            state.status.value,
            state.side.value if state.side is not None else None,
            state.size,
            state.avg_entry_price,
            state.realized_pnl,
            state.fees,
            state.funding,
            state.lifecycle,
            len(state.pending_orders),
            state.version,
            state.updated_at,
            Jsonb(encode(state)),
            key.settle_coin,
            state.adopted_pnl,
            state.unexplained_pnl,
            key.book,
        )
