"""Moved to :mod:`posledger.store.readmodel`; this path stays for code written against 0.1."""

from posledger.store.readmodel import (
    COLUMNS,
    OPEN_VIEW,
    PAGE,
    READ_MODEL_TABLES_HINT,
    SQLITE_MAX_PARAMS,
    TABLE,
    TRACKING_TABLE,
    OpenPositionsProjection,
    POPOPositionsView,
    PositionsView,
    ReadModel,
    SQLitePositionsView,
)

__all__ = [
    "COLUMNS",
    "OPEN_VIEW",
    "PAGE",
    "READ_MODEL_TABLES_HINT",
    "SQLITE_MAX_PARAMS",
    "TABLE",
    "TRACKING_TABLE",
    "OpenPositionsProjection",
    "POPOPositionsView",
    "PositionsView",
    "ReadModel",
    "SQLitePositionsView",
]
