"""The read-only pages: the overview (open proposals, positions), a key's page (its state, its
proposal, the position plot, the history timeline), and the parts of both that a page fetches
again when the log says they changed."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from posledger.audit.history import history_rows
from posledger.core.errors import StorageUnavailable
from posledger.core.position import PositionState
from posledger.web.context import web_context
from posledger.web.live import log_position
from posledger.web.views import (
    PositionView,
    ProposalView,
    pnl_totals,
    proposal_views,
    timeline,
    watched,
)


def overview(request: Request) -> HTMLResponse:
    """``GET /``: what waits for a decision, and the positions (``?all=1``: every key)."""
    web = web_context(request)
    log = log_position(web.ledger)  # read first: the states below are at least this new
    values = {"log": log, **_positions(request), **_proposals(request)}
    return web.render(request, "overview.html", values)


def positions_part(request: Request) -> HTMLResponse:
    """``GET /parts/positions``: the positions table alone."""
    return web_context(request).render(request, "parts/positions.html", _positions(request))


def proposals_part(request: Request) -> HTMLResponse:
    """``GET /parts/proposals``: the open proposals alone."""
    return web_context(request).render(request, "parts/proposals.html", _proposals(request))


def key_page(request: Request) -> HTMLResponse:
    """``GET /keys/{stream}``: one key's state, proposal, plot and history."""
    web = web_context(request)
    log = log_position(web.ledger)
    values = {"log": log, **_key_state(request), **_key_timeline(request)}
    return web.render(request, "key.html", values)


def key_state_part(request: Request) -> HTMLResponse:
    """``GET /keys/{stream}/parts/state``: the key's state, proposal and plot."""
    return web_context(request).render(request, "parts/key_state.html", _key_state(request))


def key_timeline_part(request: Request) -> HTMLResponse:
    """``GET /keys/{stream}/parts/timeline``: the key's history, newest first."""
    return web_context(request).render(request, "parts/timeline.html", _key_timeline(request))


def key_plot(request: Request) -> Response:
    """``GET /keys/{stream}/plot.svg``: the position plot, drawn on the server."""
    web = web_context(request)
    state = _state(request)
    rows = history_rows(web.ledger, state.key)
    return Response(
        web.plots.svg(str(state.key.stream_id), rows),
        media_type="image/svg+xml",
        headers={"Cache-Control": "private, max-age=3600"},
    )


def store_unavailable(request: Request, error: Exception) -> Response:
    """Any page while the store does not answer: 503 and why (the page retries when live)."""
    assert isinstance(error, StorageUnavailable)
    return web_context(request).render(
        request, "unavailable.html", {"log": "", "reason": str(error)}, status_code=503
    )


def _positions(request: Request) -> dict[str, Any]:
    every_key = request.query_params.get("all") == "1"
    states = web_context(request).ledger.positions()
    shown = watched(states, every_key)
    return {
        "positions": shown,
        "books": any(p.key.book for p in shown),
        "every_key": every_key,
        "keys": len(states),
        "totals": pnl_totals(states),
    }


def _proposals(request: Request) -> dict[str, Any]:
    return {"proposals": proposal_views(web_context(request).ledger.proposals())}


def _key_state(request: Request) -> dict[str, Any]:
    state = _state(request)
    proposal = ProposalView.of(state.key, state.proposal) if state.proposal else None
    return {"position": PositionView.of(state), "proposal": proposal}


def _key_timeline(request: Request) -> dict[str, Any]:
    state = _state(request)
    rows = history_rows(web_context(request).ledger, state.key)
    return {"position": PositionView.of(state), "timeline": timeline(rows), "events": len(rows)}


def _state(request: Request) -> PositionState:
    """The state of the key named by the path's stream id, or 404."""
    try:
        stream = uuid.UUID(request.path_params["stream"])
    except ValueError:
        raise HTTPException(404, "no such key") from None
    for state in web_context(request).ledger.positions():
        if state.key.stream_id == stream:
            return state
    raise HTTPException(404, "no such key")
