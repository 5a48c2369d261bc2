"""The pybit private WebSocket as a :class:`~posledger.drivers.bybit_stream.BybitStream` uses
it: built by a factory, asked whether it is connected or has heard a pong, and shut for good.
pybit hides these behind its own threads and reconnects; every access here survives a socket
that is half built or already gone."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("posledger.bybit_stream")

MessageHandler = Callable[[Any], None]
WebSocketFactory = Callable[[MessageHandler], Any]
"""Builds a connected pybit private ``WebSocket`` whose ``callback_function`` is the handler."""


def pybit_websocket(
    *, api_key: str, api_secret: str, testnet: bool = False, **options: Any
) -> WebSocketFactory:
    """A factory of pybit private WebSockets with these keys (``options``: pybit's, such as
    ``ping_interval``, ``ping_timeout``, ``domain``, ``demo``)."""

    def connect(handler: MessageHandler) -> Any:
        from pybit.unified_trading import WebSocket  # type: ignore[import-untyped]

        return WebSocket(
            channel_type="private",
            api_key=api_key,
            api_secret=api_secret,
            testnet=testnet,
            callback_function=handler,
            **options,
        )

    return connect


def is_connected(ws: Any) -> bool:
    try:
        return ws is not None and bool(ws.is_connected())
    except Exception:
        return False


def pong_token(ws: Any) -> object:
    """Changes whenever the socket receives a pong (websocket-client's ``last_pong_tm``): on a
    quiet account pongs are the only sign of life, and pybit keeps them from the callback."""
    app = getattr(ws, "ws", None)
    pong = getattr(app, "last_pong_tm", None)
    return None if not pong else (id(app), pong)


def shut(ws: Any) -> None:
    """Close a pybit WebSocket for good: no reconnect from its error handler, its thread ended."""
    if ws is None:
        return
    threads = [getattr(ws, "wst", None), getattr(ws, "custom_ping_timer", None)]
    try:
        ws.handle_error = False
        ws.exit()
    except Exception as error:
        log.warning("closing the Bybit WebSocket failed: %s: %s", type(error).__name__, error)
    for thread in threads:
        if isinstance(thread, threading.Thread) and thread is not threading.current_thread():
            thread.join(timeout=10)
