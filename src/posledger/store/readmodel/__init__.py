"""An open-positions read model: one SQL row per position key, kept exactly once from the log.

Dashboards, reports and programs in other languages read positions with plain SQL, without
replaying events::

    SELECT symbol, idx, side, size, avg_entry_price, realized_pnl
      FROM posledger_open_positions            -- a view: posledger_positions WHERE status='open'
     WHERE account = 'main';

The table ``posledger_positions`` lives in the same database (and PostgreSQL schema) as the event
store. It is derived data: the projection folds each position event into the key's stored row
(its ``state`` column holds the whole :class:`PositionState`, so no event is ever re-read) and
writes the row together with eventsourcing's tracking record (the position in the notification
log) in one transaction. A notification processed a second time, by a restart or by a second
runner, fails on the tracking record's uniqueness and rolls back whole: every event is applied
exactly once, and a crash never leaves a half-applied one behind. A restart continues from the
tracking position, so after downtime :meth:`ReadModel.catch_up` applies exactly what was missed.

Columns (PostgreSQL types; SQLite stores every quantity as TEXT holding the exact decimal, never
REAL, and times as ISO 8601 text): ``stream_id`` (uuid, primary key), ``venue``, ``account``,
``category``, ``symbol`` (text), ``idx`` (integer), ``status`` (``flat``/``pending``/``open``),
``side`` (``buy``/``sell`` or NULL), ``size``, ``avg_entry_price``, ``realized_pnl``, ``fees``,
``funding`` (numeric), ``lifecycle``, ``pending_orders`` (integer: how many orders are working),
``version`` (bigint: the stream version the row reflects), ``updated_at`` (timestamptz),
``state`` (jsonb: the full state as `posledger.store.snapshot.encode` writes it, decimals as
strings), ``settle_coin`` (text: the coin ``realized_pnl``, ``fees`` and ``funding`` are in,
NULL where the symbol follows no known naming; sum money per settle coin, never across them),
``adopted_pnl`` and ``unexplained_pnl`` (numeric: what money reconciliation brought in from the
exchange's records, docs/design.md#money), ``book`` (text: the key's book, '' for the default
book, docs/books.md; part of the unique key ``(venue, account, category, symbol, idx, book)``).
A table made by an earlier release gains the later columns (and the book in its key) the next
time the view is created (``ReadModel.open`` or ``posledger init-db``). The tracking table is
``posledger_positions_tracking``. An account's net size is its books' sizes summed with sells
negated (``GROUP BY venue, account, category, symbol, idx``).

Backends: on PostgreSQL :meth:`ReadModel.run_forever` follows new events live through
LISTEN/NOTIFY on the event store's channel; SQLite has no live subscription, so it polls.
``memory://`` keeps events inside the :class:`~posledger.Ledger` object that wrote them, so an
in-memory read model must share that ledger (:meth:`ReadModel.attach`): it sees only that
ledger's events (of this process), keeps its table in process, and starts from scratch when
recreated.

The views are eventsourcing tracking recorders and :class:`OpenPositionsProjection` is an
eventsourcing ``Projection``, so eventsourcing's own ``ProjectionRunner`` can drive them on
PostgreSQL too; :class:`ReadModel` adds page-wise catch-up, a race-free live loop, tolerance of
a second runner on the same view, and :class:`~posledger.StorageUnavailable` errors.
"""

from posledger.store.readmodel.runner import OpenPositionsProjection, ReadModel
from posledger.store.readmodel.views import (
    COLUMNS,
    OPEN_VIEW,
    TABLE,
    TRACKING_TABLE,
    POPOPositionsView,
    PositionsView,
    SQLitePositionsView,
)

__all__ = [
    "COLUMNS",
    "OPEN_VIEW",
    "TABLE",
    "TRACKING_TABLE",
    "OpenPositionsProjection",
    "POPOPositionsView",
    "PositionsView",
    "ReadModel",
    "SQLitePositionsView",
]
