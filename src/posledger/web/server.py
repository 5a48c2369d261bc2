"""Running the web view under uvicorn until Ctrl-C (or SIGTERM), ending the pages' event
streams first so the server stops at once instead of waiting for them."""

from __future__ import annotations

import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from posledger.web.context import WebContext

SHUTDOWN_GRACE_S = 5
"""Seconds requests still running get when the server stops."""


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """The listening socket (port 0: any free one), or OSError when the address cannot be had."""
    return socket.create_server((host, port))


def run(app: Starlette, listener: socket.socket) -> None:
    """Serve ``app`` (:func:`~posledger.web.create_app`) on ``listener`` until the process is
    told to stop."""
    host, port = listener.getsockname()[:2]
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    _Server(config, app.state.web).run(sockets=[listener])


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, web: WebContext) -> None:
        super().__init__(config)
        self.web = web

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.web.watcher.end_streams()
        super().handle_exit(sig, frame)
