"""The web view as an ASGI application (Starlette): routes, security headers, and the log
watcher's life."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from posledger.core.errors import StorageUnavailable
from posledger.ledger import Ledger
from posledger.web import decisions, pages
from posledger.web.context import HERE, WebContext
from posledger.web.live import LogWatcher, events, health
from posledger.web.security import Guard

POLL_INTERVAL_S = 1.0
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
"""Scripts, styles and images from this server only; no framing (clickjacking)."""


def create_app(
    ledger: Ledger, *, token: str | None = None, poll_interval: float = POLL_INTERVAL_S
) -> Starlette:
    """The web view over ``ledger`` (owned by the caller, who closes it). Without ``token``
    it is read-only; with one (16 characters at least), a browser that logs in with it may
    approve and reject proposals. ``poll_interval``: seconds between reads of the log while a
    page listens."""
    web = WebContext(ledger=ledger, guard=Guard(token), watcher=LogWatcher(ledger, poll_interval))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watching = asyncio.create_task(web.watcher.run())
        try:
            yield
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={StorageUnavailable: pages.store_unavailable},
    )
    app.state.web = web
    app.add_middleware(SecurityHeaders)
    return app


ROUTES = [
    Route("/", pages.overview),
    Route("/parts/positions", pages.positions_part),
    Route("/parts/proposals", pages.proposals_part),
    Route("/keys/{stream}", pages.key_page),
    Route("/keys/{stream}/parts/state", pages.key_state_part),
    Route("/keys/{stream}/parts/timeline", pages.key_timeline_part),
    Route("/keys/{stream}/plot.svg", pages.key_plot),
    Route("/login", decisions.login_form, methods=["GET"]),
    Route("/login", decisions.login, methods=["POST"]),
    Route("/logout", decisions.logout, methods=["POST"]),
    Route("/proposals/{proposal}/approve", decisions.approve, methods=["POST"]),
    Route("/proposals/{proposal}/reject", decisions.reject, methods=["POST"]),
    Route("/events", events),
    Route("/health", health),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (a plain ASGI middleware: streams pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
