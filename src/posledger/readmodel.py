"""Moved to :mod:`posledger.store.readmodel`; this path stays for code written against 0.1."""

from posledger.store.readmodel import (
    COLUMNS,
    OPEN_VIEW,
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
    "TABLE",
    "TRACKING_TABLE",
    "OpenPositionsProjection",
    "POPOPositionsView",
    "PositionsView",
    "ReadModel",
    "SQLitePositionsView",
]
