"""What every endpoint of the web view shares: the ledger, the guard, the log watcher, the plot
cache and the templates, and rendering a template with what every page shows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from posledger.ledger import Ledger
from posledger.web.live import LogWatcher
from posledger.web.plots import Plots
from posledger.web.security import Guard

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")


@attrs.frozen
class WebContext:
    """The web view's state, at ``app.state.web``."""

    ledger: Ledger
    guard: Guard
    watcher: LogWatcher
    plots: Plots = attrs.field(factory=Plots)

    def render(
        self,
        request: Request,
        template: str,
        values: Mapping[str, Any],
        status_code: int = 200,
    ) -> HTMLResponse:
        """``template`` with ``values`` and what every page shows: the store, and whether (and
        as whom) this browser may decide."""
        session = self.guard.session(request)
        common = {
            "store": self.ledger.settings.description,
            "writable": self.guard.writable,
            "session": session,
            "csrf": session.csrf if session else "",
            "operator": session.operator if session else "",
        }
        return TEMPLATES.TemplateResponse(
            request, template, {**common, **values}, status_code=status_code
        )


def web_context(request: Request) -> WebContext:
    """The WebContext of the app serving ``request``."""
    context: WebContext = request.app.state.web
    return context
