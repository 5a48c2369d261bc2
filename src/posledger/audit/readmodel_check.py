"""Check ``read_model`` of :func:`~posledger.audit.verify`: the read model's table
(:mod:`posledger.store.readmodel`), where the store has one, equals the replay.

The table is compared column by column, for the read model's columns it has: dashboards read
them with plain SQL, so a column that disagrees with the events is wrong wherever it is read.
Its ``state`` column, which the read model's own reads return, is decoded as the read model
decodes it and compared whole. The table holds one row per key, so a missing row is a problem
too (a read model that is behind shows up here).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from posledger.audit.findings import Check, Findings, Problem, state_differences
from posledger.audit.format import shortened
from posledger.audit.source import audit_storage_errors
from posledger.core.errors import PosledgerError
from posledger.core.model import PositionKey
from posledger.core.position import PositionState
from posledger.store.application import LedgerApplication
from posledger.store.readmodel import COLUMNS, TABLE
from posledger.store.snapshot import decode

KEY_COLUMNS = tuple(field.name for field in attrs.fields(PositionKey) if field.init)
"""The columns that name a row's key: PositionKey's own fields."""
COMPARED_COLUMNS = tuple(c for c in COLUMNS if c not in {"stream_id", *KEY_COLUMNS, "state"})
"""The read model's columns that hold one value of a state, each named after the state's
attribute; the others name the key, or hold the whole state."""


def read_model_rows(app: LedgerApplication) -> list[dict[str, Any]] | None:
    """Every row of the read-model table in the application's store, with every column as
    stored; None where the store has no such table (the read model has no reader of raw rows:
    its own reads decode the ``state`` column alone)."""
    datastore: Any = getattr(app.recorder, "datastore", None)
    backend = _backend(datastore)
    with audit_storage_errors(app.description):
        if backend == "sqlite":
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)
                )
                if cursor.fetchone() is None:
                    return None
                cursor.execute(f'SELECT * FROM "{TABLE}"')
                return [dict(row) for row in cursor.fetchall()]
        if backend == "postgres":
            from psycopg import sql

            schema = datastore.schema
            with datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    "SELECT 1 FROM information_schema.tables "
                    "WHERE table_schema = %s AND table_name = %s",
                    (schema, TABLE),
                )
                if cursor.fetchone() is None:
                    return None
                cursor.execute(
                    sql.SQL("SELECT * FROM {}.{}").format(
                        sql.Identifier(schema), sql.Identifier(TABLE)
                    )
                )
                return [dict(row) for row in cursor.fetchall()]
    return None


def _backend(datastore: object) -> str | None:
    """``sqlite`` or ``postgres``: whose datastore (eventsourcing's, or a subclass of it) the
    event store uses; None for one without SQL (``memory://``)."""
    for cls in type(datastore).__mro__:
        for backend in ("sqlite", "postgres"):
            if cls.__module__.startswith(f"eventsourcing.{backend}"):
                return backend
    return None


def compare_read_model(
    rows: list[dict[str, Any]], findings: Findings, states: Mapping[uuid.UUID, PositionState]
) -> None:
    """Compare the read-model rows with the replayed ``states`` of the sound streams: every key
    has its row, every row its key, and each of :data:`COMPARED_COLUMNS` the table has holds
    the replayed value, and the ``state`` column decodes to the replayed state."""
    columns: set[str] = set(rows[0]) if rows else set()
    by_stream: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        stream_id = _row_stream(row)
        if stream_id is None:
            findings.problems.append(
                Problem(
                    None,
                    Check.READ_MODEL,
                    f"{TABLE} row without a recognisable key "
                    f"({', '.join(KEY_COLUMNS)} or stream_id): {shortened(row, 120)}",
                )
            )
            continue
        by_stream[stream_id] = row
    compared = [name for name in COMPARED_COLUMNS if name in columns]
    for stream_id, state in states.items():
        stream = findings.streams[stream_id]
        found = by_stream.pop(stream_id, None)
        if found is None:
            findings.problem(
                stream,
                Check.READ_MODEL,
                f"{TABLE} has no row for this key "
                f"(replay: {state.status.value} {state.signed_size:+} at v{state.version})",
            )
            continue
        wrong = [
            f"{name}: table {found[name]!r}, replay {_expected(state, name)!s}"
            for name in compared
            if not _same(_expected(state, name), found[name])
        ]
        if "state" in found:
            wrong += _state_differences(found["state"], state)
        if wrong:
            findings.problem(
                stream,
                Check.READ_MODEL,
                f"{TABLE} differs from the replay: " + "; ".join(wrong),
                state.version,
            )
    for stream_id, row in by_stream.items():
        known = findings.streams.get(stream_id)
        if known is not None and (known.broken or known.key is None):
            continue  # already reported; nothing sound to compare with
        findings.problems.append(
            Problem(
                _row_key(row),
                Check.READ_MODEL,
                f"{TABLE} has a row for a key the event log does not hold",
            )
        )


def _expected(state: PositionState, column: str) -> object:
    """What the read model writes in ``column`` for ``state``: the attribute of that name (for
    ``pending_orders``, how many orders are working; ``settle_coin`` is the key's)."""
    if column == "settle_coin":
        return state.key.settle_coin
    value = getattr(state, column)
    return len(value) if column == "pending_orders" else value


def _state_differences(stored: object, state: PositionState) -> list[str]:
    """How the row's ``state`` column, decoded as the read model decodes it (SQLite holds its
    JSON as text), differs from the replayed state."""
    try:
        data: Any = json.loads(stored) if isinstance(stored, str) else stored
        decoded = decode(data)
    except (PosledgerError, ValueError, TypeError, KeyError, ArithmeticError) as error:
        return [f"state: cannot be decoded: {shortened(error)}"]
    return [
        f"state.{name}: table {a}, replay {b}"
        for name, a, b in state_differences(decoded, state)[:6]
    ]


def _same(expected: object, stored: object) -> bool:
    """Whether a stored column holds the expected value, as either backend stores it (SQLite:
    decimals and times as text)."""
    if expected is None or stored is None:
        return (expected is None or expected == "") and (stored is None or stored == "")
    if isinstance(expected, Decimal):
        try:
            return Decimal(str(stored)) == expected
        except ArithmeticError:
            return False
    if isinstance(expected, datetime):
        if isinstance(stored, str):
            try:
                stored = datetime.fromisoformat(stored)
            except ValueError:
                return False
        return isinstance(stored, datetime) and stored.tzinfo is not None and stored == expected
    if isinstance(expected, str):
        return str(stored) == expected or str(stored).lower() == expected
    if isinstance(expected, int):
        try:
            return int(str(stored)) == expected
        except ValueError:
            return False
    return stored == expected


def _row_key(row: Mapping[str, Any]) -> PositionKey | None:
    """The key a row names: by its key columns (a table without ``book``, as made before
    books, holds the default book's rows) or, in a hand-made table, ``position_idx``."""
    fields = {name: row[name] for name in KEY_COLUMNS if name in row}
    if "book" in fields and fields["book"] is None:
        fields["book"] = ""
    if "idx" not in fields and "position_idx" in row:
        fields["idx"] = row["position_idx"]
    if not all(name in fields for name in KEY_COLUMNS if name != "book"):
        return None
    try:
        return PositionKey(**fields)
    except (PosledgerError, ValueError, TypeError):
        return None


def _row_stream(row: Mapping[str, Any]) -> uuid.UUID | None:
    key = _row_key(row)
    if key is not None:
        return key.stream_id
    for name in ("stream_id", "originator_id"):
        value = row.get(name)
        if value is not None:
            try:
                return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
            except ValueError:
                return None
    return None
