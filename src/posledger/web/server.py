"""Running the web view under uvicorn until Ctrl-C (or SIGTERM), ending the pages' event
streams first so the server stops at once instead of waiting for them."""

from __future__ import annotations

from types import FrameType

import uvicorn
from starlette.applications import Starlette

from posledger.web.context import WebContext

SHUTDOWN_GRACE_S = 5
"""Seconds requests still running get when the server stops."""


def run(app: Starlette, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` (:func:`~posledger.web.create_app`) at ``host:port`` until the process
    is told to stop."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    _Server(config, app.state.web).run()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, web: WebContext) -> None:
        super().__init__(config)
        self.web = web

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.web.watcher.end_streams()
        super().handle_exit(sig, frame)
