"""Bulk loading: many keys' states from their latest snapshots and the events after them.

eventsourcing's ``repository.get`` reads one aggregate at a time (a snapshot query, then an
events query, per key), so rebuilding ten thousand keys costs twenty thousand round trips. Here
the latest snapshot of every key comes from one query, and the events after them from one query
per batch of keys (PostgreSQL) or one cheap indexed query per key (SQLite, in process). The
result is exactly what ``repository.get`` with the ledger's snapshot projector returns.

Keys are discovered from their ``KeyRegistered`` rows through a partial index on that topic
(created with the tables), instead of scanning the whole notification log.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.sqlite import SQLiteApplicationRecorder

from posledger.core.events import KeyRegistered, PositionEvent
from posledger.core.model import PositionKey, cached_key
from posledger.core.position import PositionState, evolve, key_of
from posledger.store.corruption import DAMAGE, corrupted, reading_stream
from posledger.store.decoding import StoredEventDecoder
from posledger.store.gc_pause import gc_paused
from posledger.store.snapshot import PositionSnapshot, decode, project_from_store

KEY_INDEX = "posledger_key_registered_idx"
POSTGRES_KEYS_PER_QUERY = 1_000
SQLITE_KEYS_PER_QUERY = 300
"""Keys whose tails one query reads (SQLite binds three values per key)."""
Row = tuple[Any, int, str, bytes]
"""(originator_id, originator_version, topic, state) as a recorder stores them."""
LogRow = tuple[int, Any, int, str, bytes]
"""(notification id, originator_id, originator_version, topic, state) of the notification log."""
LOG_END = 2**63 - 1
"""No upper bound on a read of the log (PostgreSQL's largest bigint)."""


def key_index_statement(table: str, qualified_table: str | None = None) -> str:
    """The partial index on ``KeyRegistered`` rows (one per key, so it costs nothing to keep)."""
    return (
        f'CREATE INDEX IF NOT EXISTS "{table}_{KEY_INDEX}" ON {qualified_table or table} '
        f"(originator_id) WHERE topic = '{KeyRegistered.TOPIC}'"
    )


def ensure_key_index(app: Any) -> None:
    """Create the key index on a SQLite store (PostgreSQL's comes with its tables)."""
    recorder = app.recorder
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(key_index_statement(recorder.events_table_name))


@gc_paused()
def registered_keys(app: Any) -> dict[uuid.UUID, PositionKey]:
    """Every key of the store, by stream id, from its ``KeyRegistered`` event."""
    decoder = StoredEventDecoder(app.mapper)
    keys = {}
    for row in _store(app).registrations():
        try:
            if decoder.standard:  # the key's fields are plain JSON strings and an int
                fields = json.loads(bytes(row[3]))
                keys[decoder.stream_id(row[0])] = cached_key(
                    fields["venue"],
                    fields["account"],
                    fields["category"],
                    fields["symbol"],
                    fields["idx"],
                    fields.get("book", ""),
                )
            else:
                event = decoder(*row)
                assert isinstance(event, KeyRegistered)
                keys[event.originator_id] = key_of(event)
        except DAMAGE as error:
            raise corrupted(row[0], error, version=row[1]) from error
    return keys


def log_rows(
    app: Any, after: int, stop: int, topics: Sequence[str], limit: int
) -> Sequence[LogRow]:
    """Up to ``limit`` rows of the notification log with one of ``topics``, with ids in
    ``(after, stop]``, in id order: the rows ``select_notifications`` returns, read with a plain
    cursor (no ``Notification`` object or id conversion per row)."""
    return _store(app).log(after, stop, topics, limit)


def registered_ids(app: Any) -> list[uuid.UUID]:
    """Every stream id of the store (one per key): the key index alone, nothing decoded."""
    decoder = StoredEventDecoder(app.mapper)
    return [decoder.stream_id(stream) for stream in _store(app).registered_ids()]


@gc_paused()
def load_states(
    app: Any, stream_ids: Collection[uuid.UUID] | None = None
) -> dict[uuid.UUID, PositionState]:
    """The current state of each of ``stream_ids`` (every key if None) that exists."""
    store = _store(app)
    decoder = StoredEventDecoder(app.mapper)
    ids = (
        [decoder.stream_id(s) for s in store.registered_ids()]
        if stream_ids is None
        else list(stream_ids)
    )
    if not ids:
        return {}
    states: dict[uuid.UUID, PositionState] = {}
    for snapshotted, tails in store.latest(ids, decoder):
        states.update(snapshotted)
        for row in tails:
            try:
                event = decoder(*row)
                assert isinstance(event, PositionEvent)
                stream = event.originator_id
                states[stream] = evolve(states.get(stream), event)
            except DAMAGE as error:
                state = states.get(decoder.stream_id(row[0]))
                key = None if state is None else state.key
                raise corrupted(row[0], error, key, row[1]) from error
    return states


def _snapshot_states(
    rows: Iterable[Row], decoder: StoredEventDecoder
) -> Iterator[tuple[uuid.UUID, PositionState]]:
    """The state in each snapshot row: parsed here, without the mapper's object hook, when the
    rows are plain JSON (``decode`` reads the transcoder's objects of older snapshots too)."""
    for row in rows:
        try:
            if decoder.standard:
                state = decode(json.loads(bytes(row[3]))["state"])
            else:
                snapshot = decoder(*row)
                assert isinstance(snapshot, PositionSnapshot)
                state = decode(snapshot.state)
        except DAMAGE as error:
            raise corrupted(row[0], error, version=row[1], what="snapshot") from error
        yield decoder.stream_id(row[0]), state


class _Store:
    """What a bulk load needs from a store."""

    def registrations(self) -> Iterable[Row]:
        raise NotImplementedError

    def registered_ids(self) -> Iterable[uuid.UUID | str]:
        """The stream id of every ``KeyRegistered`` row, as stored."""
        return [row[0] for row in self.registrations()]

    def latest(
        self, ids: list[uuid.UUID], decoder: StoredEventDecoder
    ) -> Iterator[tuple[dict[uuid.UUID, PositionState], Iterable[Row]]]:
        """Batch by batch of ``ids``: the states in their latest snapshots, and every
        stream's events after its snapshot (after version 0 without one), in version order
        per stream."""
        states = dict(self.snapshots(ids, decoder))
        yield states, self.tails({s: states[s].version if s in states else 0 for s in ids})

    def snapshots(
        self, ids: list[uuid.UUID], decoder: StoredEventDecoder
    ) -> Iterator[tuple[uuid.UUID, PositionState]]:
        """The state in the latest snapshot of each of ``ids`` that has one."""
        raise NotImplementedError

    def tails(self, versions: dict[uuid.UUID, int]) -> Iterator[Row]:
        """Each stream's events after the given version, in version order per stream."""
        raise NotImplementedError

    def log(self, after: int, stop: int, topics: Sequence[str], limit: int) -> Sequence[LogRow]:
        """A page of the notification log (see :func:`log_rows`)."""
        raise NotImplementedError


def _store(app: Any) -> _Store:
    recorder = app.recorder
    snapshots = app.snapshots.recorder if app.snapshots is not None else None
    if isinstance(recorder, SQLiteApplicationRecorder) and snapshots is not None:
        return _SQLiteStore(recorder, snapshots)
    postgres = sys.modules.get("eventsourcing.postgres")  # imported only with psycopg at hand
    if (
        postgres is not None
        and isinstance(recorder, postgres.PostgresApplicationRecorder)
        and snapshots is not None
    ):
        return _PostgresStore(recorder, snapshots)
    return _RepositoryStore(app)


class _SQLiteStore(_Store):
    def __init__(self, recorder: SQLiteApplicationRecorder, snapshots: Any) -> None:
        self.datastore = recorder.datastore
        self.events = recorder.events_table_name
        self.snapshot_table = snapshots.events_table_name

    def registrations(self) -> Iterable[Row]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT originator_id, originator_version, topic, state FROM "
                f"{self.events} WHERE topic = '{KeyRegistered.TOPIC}'"
            )
            return [tuple(row) for row in cursor.fetchall()]

    def registered_ids(self) -> Iterable[uuid.UUID | str]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT originator_id FROM {self.events} WHERE topic = '{KeyRegistered.TOPIC}'"
            )
            return [row[0] for row in cursor.fetchall()]

    def snapshots(
        self, ids: list[uuid.UUID], decoder: StoredEventDecoder
    ) -> Iterator[tuple[uuid.UUID, PositionState]]:
        # Per key, the max() is one probe of the primary key, then one row is read: older
        # snapshots (a key gets one per snapshot_every events) are never touched.
        query = (
            "SELECT k.n, s.originator_version, s.topic, s.state "
            f"FROM k CROSS JOIN {self.snapshot_table} AS s ON s.originator_id = k.id "
            "AND s.originator_version = (SELECT max(originator_version) FROM "
            f"{self.snapshot_table} WHERE originator_id = k.id)"
        )
        for rows in self._per_key("id", [(stream.hex,) for stream in ids], query):
            yield from _snapshot_states([(ids[n], v, t, state) for n, v, t, state in rows], decoder)

    def tails(self, versions: dict[uuid.UUID, int]) -> Iterator[Row]:
        # Each key is a primary-key range probe; ordered by the keys' place in the list.
        query = (
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM k CROSS JOIN {self.events} AS e ON e.originator_id = k.id "
            "AND e.originator_version > k.after ORDER BY k.n, e.originator_version"
        )
        keys = [(stream.hex, after) for stream, after in versions.items()]
        for rows in self._per_key("id, after", keys, query):
            yield from (tuple(row) for row in rows)

    def _per_key(
        self, columns: str, keys: list[tuple[Any, ...]], query: str
    ) -> Iterator[list[Any]]:
        """The rows of ``query`` over ``k(n, <columns>)``: ``keys`` as a VALUES list, ``n``
        their index in it, a batch of keys per query."""
        for start in range(0, len(keys), SQLITE_KEYS_PER_QUERY):
            batch = keys[start : start + SQLITE_KEYS_PER_QUERY]
            row = "(" + ",".join("?" * (len(batch[0]) + 1)) + ")"
            with self.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"WITH k(n, {columns}) AS (VALUES {','.join([row] * len(batch))}) {query}",
                    [v for n, key in enumerate(batch, start) for v in (n, *key)],
                )
                rows = cursor.fetchall()
            # Yielded with the transaction ended: a caller that stops early (a damaged row)
            # leaves nothing open for the garbage collector to close after the store is gone.
            yield rows

    def log(self, after: int, stop: int, topics: Sequence[str], limit: int) -> Sequence[LogRow]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT rowid, originator_id, originator_version, topic, state FROM "
                f"{self.events} WHERE rowid > ? AND rowid <= ? "
                f"AND topic IN ({','.join('?' * len(topics))}) ORDER BY rowid LIMIT ?",
                (after, stop, *topics, limit),
            )
            rows: list[LogRow] = cursor.fetchall()  # sqlite3.Row: indexable like the tuple
            return rows


class _PostgresStore(_Store):
    def __init__(self, recorder: Any, snapshots: Any) -> None:
        self.datastore = recorder.datastore
        schema = f'"{recorder.datastore.schema}"'
        self.events = f'{schema}."{recorder.events_table_name}"'
        self.snapshot_table = f'{schema}."{snapshots.events_table_name}"'
        self.followable: str = recorder.followable

    def _rows(
        self, query: str, params: tuple[Any, ...] = (), *, ordered: bool = False
    ) -> list[Any]:
        """``ordered``: read in the order of an index, never sort: on a table not analyzed yet
        the planner would sort every remaining row of the log to return one page of it."""
        from psycopg.rows import tuple_row

        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as cursor,
        ):
            with conn.transaction():
                # The planner's guesses on a table not analyzed yet can cross the JIT threshold;
                # compiling costs more than these index lookups.
                cursor.execute(b"SET LOCAL jit = off")
                if ordered:
                    cursor.execute(b"SET LOCAL enable_sort = off")
                cursor.execute(query.encode(), params)
                rows: list[Any] = cursor.fetchall()
            return rows

    def registrations(self) -> Iterable[Row]:
        return self._rows(
            "SELECT originator_id, originator_version, topic, state FROM "
            f"{self.events} WHERE topic = '{KeyRegistered.TOPIC}'"
        )

    def registered_ids(self) -> Iterable[uuid.UUID | str]:
        return [
            row[0]
            for row in self._rows(
                f"SELECT originator_id FROM {self.events} WHERE topic = '{KeyRegistered.TOPIC}'"
            )
        ]

    def latest(
        self, ids: list[uuid.UUID], decoder: StoredEventDecoder
    ) -> Iterator[tuple[dict[uuid.UUID, PositionState], Iterable[Row]]]:
        # One statement per batch, so one round trip and one MVCC snapshot of the store: each
        # key's latest snapshot (one backward probe of the primary key; older ones are not
        # read), then its events after it. OFFSET 0 keeps the per-key subquery a nested loop
        # over the primary key index: on a table not analyzed yet the planner would otherwise
        # hash-join a full scan.
        query = (
            "WITH k AS MATERIALIZED "
            "(SELECT * FROM unnest(%s::uuid[]) WITH ORDINALITY AS k(id, n)), "
            "s AS MATERIALIZED (SELECT k.id, k.n, s.originator_version, s.topic, s.state FROM k "
            f"CROSS JOIN LATERAL (SELECT * FROM {self.snapshot_table} WHERE originator_id = k.id "
            "ORDER BY originator_version DESC LIMIT 1) AS s) "
            "SELECT 0 AS part, n, id, originator_version, topic, state FROM s "
            "UNION ALL SELECT 1, k.n, e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM k LEFT JOIN s USING (id) CROSS JOIN LATERAL (SELECT * FROM {self.events} "
            "WHERE originator_id = k.id "
            "AND originator_version > coalesce(s.originator_version, 0) OFFSET 0) AS e "
            "ORDER BY part, n, originator_version"
        )
        for start in range(0, len(ids), POSTGRES_KEYS_PER_QUERY):
            rows = self._rows(query, (ids[start : start + POSTGRES_KEYS_PER_QUERY],))
            split = next((i for i, row in enumerate(rows) if row[0]), len(rows))
            snapshot_rows = [row[2:] for row in rows[:split]]
            yield dict(_snapshot_states(snapshot_rows, decoder)), [row[2:] for row in rows[split:]]

    def log(self, after: int, stop: int, topics: Sequence[str], limit: int) -> Sequence[LogRow]:
        return self._rows(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            f"FROM {self.events} WHERE notification_id > %s AND notification_id <= %s "
            f"AND topic = ANY(%s) AND {self.followable} ORDER BY notification_id LIMIT %s",
            (after, stop, list(topics), limit),
            ordered=True,
        )


class _RepositoryStore(_Store):
    """In-memory stores: already in process, so the repository is as fast as anything."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def registrations(self) -> Iterable[Row]:
        recorder = self.app.recorder
        top = recorder.max_notification_id() or 0
        return [
            (n.originator_id, n.originator_version, n.topic, n.state)
            for n in recorder.select_notifications(
                start=0, limit=top + 1, topics=[KeyRegistered.TOPIC], inclusive_of_start=False
            )
        ]

    def snapshots(
        self, ids: list[uuid.UUID], decoder: StoredEventDecoder
    ) -> Iterator[tuple[uuid.UUID, PositionState]]:
        """Every state whole (its tail is then empty)."""
        for stream in ids:
            try:
                with reading_stream(stream, app=self.app):
                    state = self.app.repository.get(stream, projector_func=project_from_store)
            except AggregateNotFoundError:
                continue
            yield stream, state

    def tails(self, versions: dict[uuid.UUID, int]) -> Iterator[Row]:
        return iter(())

    def log(self, after: int, stop: int, topics: Sequence[str], limit: int) -> Sequence[LogRow]:
        return [
            (n.id, n.originator_id, n.originator_version, n.topic, n.state)
            for n in self.app.recorder.select_notifications(
                start=after, limit=limit, stop=stop, topics=list(topics), inclusive_of_start=False
            )
        ]
