"""Flat records and pandas DataFrames of history rows, position states and verify problems.

Quantities, prices and PnL stay ``Decimal`` (never float); the column lists and their kinds are
shared with ``posledger export``, which writes the same records to CSV, JSON Lines and Parquet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from posledger.audit.books import BOOK_PNL_COLUMNS, PNL_COLUMNS, BookPnl, pnl_fields
from posledger.audit.extras import notebook_module
from posledger.audit.findings import Problem
from posledger.audit.format import side_value, signed_size
from posledger.audit.history import HistoryRow
from posledger.audit.money import MONEY_COLUMNS, MoneyRow, money_record
from posledger.audit.verification import VerifyReport
from posledger.core.errors import InvalidInput
from posledger.core.position import PositionState

HISTORY_COLUMNS = (
    "key",
    "time",
    "version",
    "event",
    "lifecycle",
    "side_before",
    "size_before",
    "side_after",
    "size_after",
    "signed_size_before",
    "signed_size_after",
    "size_change",
    "status",
    "side",
    "qty",
    "price",
    "fee",
    "exec_id",
    "order_id",
    "reason",
    "reduce_only",
    "absorbed",
    "overfill",
    "realized_pnl",
    "settle_coin",
    "evidence_taken_at",
    "evidence_side",
    "evidence_size",
    "evidence_seq",
    "evidence_avg_price",
    "evidence_confirmations",
)
STATE_COLUMNS = (
    "key",
    "venue",
    "account",
    "category",
    "symbol",
    "idx",
    "book",
    "status",
    "side",
    "size",
    "signed_size",
    "avg_entry_price",
    "settle_coin",
    *PNL_COLUMNS,
    "lifecycle",
    "lifecycle_realized_pnl",
    "lifecycle_fees",
    "lifecycle_funding",
    "pending_orders",
    "opened_at",
    "updated_at",
    "version",
    "overfills",
    "suspect_size",
    "suspect_count",
)
PROBLEM_COLUMNS = ("key", "check", "version", "detail")
TIME_COLUMNS = (
    "time",
    "evidence_taken_at",
    "opened_at",
    "updated_at",
    "window_start",
    "window_end",
)
"""Columns holding aware UTC datetimes."""
INT_COLUMNS = ("version", "lifecycle", "idx", "pending_orders", "overfills")
NULLABLE_INT_COLUMNS = ("evidence_seq", "evidence_confirmations", "suspect_count")
BOOL_COLUMNS = ("reduce_only", "absorbed", "adopted")


def history_record(row: HistoryRow) -> dict[str, Any]:
    """One history row as a flat record with :data:`HISTORY_COLUMNS` (exact values)."""
    evidence = row.evidence
    return {
        "key": str(row.key),
        "time": row.time,
        "version": row.version,
        "event": row.event,
        "lifecycle": row.lifecycle,
        "side_before": row.side_before,
        "size_before": row.size_before,
        "side_after": row.side_after,
        "size_after": row.size_after,
        "signed_size_before": row.signed_size_before,
        "signed_size_after": row.signed_size_after,
        "size_change": row.size_change,
        "status": row.status,
        "side": row.side,
        "qty": row.qty,
        "price": row.price,
        "fee": row.fee,
        "exec_id": row.exec_id,
        "order_id": row.order_id,
        "reason": row.reason,
        "reduce_only": row.reduce_only,
        "absorbed": row.absorbed,
        "overfill": row.overfill,
        "realized_pnl": row.realized_pnl,
        "settle_coin": row.key.settle_coin,
        "evidence_taken_at": evidence.taken_at if evidence else None,
        "evidence_side": evidence.side if evidence else None,
        "evidence_size": evidence.size if evidence else None,
        "evidence_seq": evidence.seq if evidence else None,
        "evidence_avg_price": evidence.avg_price if evidence else None,
        "evidence_confirmations": evidence.confirmations if evidence else None,
    }


def _problem_record(problem: Problem) -> dict[str, Any]:
    return {
        "key": str(problem.key) if problem.key is not None else None,
        "check": problem.check.value,
        "version": problem.version,
        "detail": problem.detail,
    }


def state_record(state: PositionState) -> dict[str, Any]:
    """One position state as a flat record with :data:`STATE_COLUMNS` (exact values)."""
    key = state.key
    suspect = state.suspect
    return {
        "key": str(key),
        "venue": key.venue,
        "account": key.account,
        "category": key.category,
        "symbol": key.symbol,
        "idx": key.idx,
        "book": key.book,
        "status": state.status.value,
        "side": side_value(state.side),
        "size": state.size,
        "signed_size": state.signed_size,
        "avg_entry_price": state.avg_entry_price,
        "settle_coin": key.settle_coin,
        **pnl_fields(state),
        "lifecycle": state.lifecycle,
        "lifecycle_realized_pnl": state.lifecycle_realized_pnl,
        "lifecycle_fees": state.lifecycle_fees,
        "lifecycle_funding": state.lifecycle_funding,
        "pending_orders": len(state.pending_orders),
        "opened_at": state.opened_at,
        "updated_at": state.updated_at,
        "version": state.version,
        "overfills": state.overfills,
        "suspect_size": signed_size(suspect.side, suspect.size) if suspect else None,
        "suspect_count": suspect.count if suspect else None,
    }


def to_dataframe(
    items: Iterable[HistoryRow]
    | Iterable[PositionState]
    | Mapping[Any, PositionState]
    | Iterable[Problem]
    | Iterable[MoneyRow]
    | Iterable[BookPnl]
    | VerifyReport,
) -> Any:
    """A pandas DataFrame of history rows (one per event), of position states (one per key; a
    ``replay_all`` dict works too), of money checks (``money_rows``), of an account's books
    (``book_pnl``), or of a verify report's problems. Quantities, prices and PnL
    stay ``Decimal`` (object columns, never float: convert explicitly with ``.astype(float)``
    for plotting); times are ``datetime64[…, UTC]``; ``key`` is the key's text form. An empty
    input gives the history columns."""
    pandas = notebook_module("pandas", "to_dataframe")
    if isinstance(items, VerifyReport):
        items = items.problems
    values: list[object] = list(items.values() if isinstance(items, Mapping) else items)
    columns: tuple[str, ...]
    if values and all(isinstance(v, PositionState) for v in values):
        columns = STATE_COLUMNS
        records = [state_record(v) for v in values if isinstance(v, PositionState)]
    elif values and all(isinstance(v, Problem) for v in values):
        frame = pandas.DataFrame.from_records(
            [_problem_record(v) for v in values if isinstance(v, Problem)],
            columns=list(PROBLEM_COLUMNS),
        )
        frame["version"] = frame["version"].astype("Int64")
        return frame
    elif values and all(isinstance(v, MoneyRow) for v in values):
        columns = MONEY_COLUMNS
        records = [money_record(v) for v in values if isinstance(v, MoneyRow)]
    elif values and all(isinstance(v, BookPnl) for v in values):
        columns = BOOK_PNL_COLUMNS
        records = [v.record() for v in values if isinstance(v, BookPnl)]
    elif all(isinstance(v, HistoryRow) for v in values):
        columns = HISTORY_COLUMNS
        records = [history_record(v) for v in values if isinstance(v, HistoryRow)]
    else:
        kinds = sorted({type(v).__name__ for v in values})
        raise InvalidInput(
            "to_dataframe takes HistoryRow, PositionState, MoneyRow, BookPnl or Problem items, "
            f"got {kinds}"
        )
    frame = pandas.DataFrame.from_records(records, columns=list(columns))
    for name in columns:
        if name in TIME_COLUMNS:
            frame[name] = pandas.to_datetime(frame[name], utc=True)
        elif name in INT_COLUMNS:
            frame[name] = frame[name].astype("int64")
        elif name in NULLABLE_INT_COLUMNS:
            frame[name] = frame[name].astype("Int64")
        elif name in BOOL_COLUMNS:
            frame[name] = frame[name].astype(bool)
        elif frame[name].dtype != object and not len(frame):
            frame[name] = frame[name].astype(object)
    return frame
