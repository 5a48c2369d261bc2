"""Moved to :mod:`posledger.drivers.bybit_stream`; this path stays for code written against 0.1."""

from posledger.drivers.bybit_stream import (
    END_STATUSES,
    SEQ_MEMORY,
    TOPICS,
    BybitStream,
    MessageHandler,
    StreamHealth,
    WebSocketFactory,
    pybit_websocket,
)

__all__ = [
    "END_STATUSES",
    "SEQ_MEMORY",
    "TOPICS",
    "BybitStream",
    "MessageHandler",
    "StreamHealth",
    "WebSocketFactory",
    "pybit_websocket",
]
