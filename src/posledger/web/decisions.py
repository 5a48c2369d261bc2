"""The writes: logging in with the token, logging out, and approving or rejecting a proposed
correction as a named operator (docs/design.md#approval). Every one passes the guard first.

A form posted by the page's script (``Accept: application/json``) is answered in JSON and the
page is not reloaded: the log watcher shows the change. Without the script the browser posts
the form and gets a short page saying what happened.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from posledger.core.errors import InvalidInput, StorageUnavailable
from posledger.web.context import web_context
from posledger.web.security import SESSION_COOKIE, Refused, Session

MAX_FORM_BYTES = 8 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


def login_form(request: Request) -> Response:
    """``GET /login``: the token form (there is none on a read-only server)."""
    web = web_context(request)
    if not web.guard.writable:
        return _answer(request, Refused(404, "read-only: the server was started without a token"))
    return web.render(request, "login.html", {"log": "", "error": ""})


async def login(request: Request) -> Response:
    """``POST /login``: a right token opens a session (an HttpOnly, SameSite=Strict cookie)."""
    web = web_context(request)
    try:
        web.guard.check_origin(request)
        form = await _form(request)
    except Refused as refused:
        return _answer(request, refused)
    if not web.guard.token_matches(form.get("token", "")):
        values = {"log": "", "error": "That is not the token this server was started with."}
        return web.render(request, "login.html", values, status_code=403)
    session_id, _ = web.guard.sessions.start()
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    """``POST /logout``: end this browser's session."""
    web = web_context(request)
    try:
        web.guard.check_write(request, await _form(request))
    except Refused as refused:
        return _answer(request, refused)
    web.guard.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def approve(request: Request) -> Response:
    """``POST /proposals/{proposal}/approve``: apply the proposed correction, if its evidence
    still stands (else it is withdrawn and 409 says why)."""
    ledger = web_context(request).ledger
    proposal = request.path_params["proposal"]

    def decide(operator: str, form: dict[str, str]) -> tuple[int, str]:
        result = ledger.approve(proposal, operator=operator)
        if result.applied:
            return 200, f"Approved {proposal} as {operator}: the correction is applied."
        return 409, f"Refused {proposal}: {result.detail}; it is withdrawn."

    return await _decision(request, decide)


async def reject(request: Request) -> Response:
    """``POST /proposals/{proposal}/reject``: close the proposal without correcting."""
    ledger = web_context(request).ledger
    proposal = request.path_params["proposal"]

    def decide(operator: str, form: dict[str, str]) -> tuple[int, str]:
        reason = form.get("reason", "").strip()
        if not reason:
            raise Refused(400, "say why: the reason is recorded with the rejection")
        ledger.reject(proposal, operator=operator, reason=reason)
        return 200, f"Rejected {proposal} as {operator}: nothing corrected."

    return await _decision(request, decide)


Decide = Callable[[str, dict[str, str]], tuple[int, str]]
"""A decision taken as ``operator`` with the posted form: (HTTP status, what happened)."""


async def _decision(request: Request, decide: Decide) -> Response:
    try:
        form = await _form(request)
        session = web_context(request).guard.check_write(request, form)
        operator = _operator(form, session)
        status, message = await run_in_threadpool(decide, operator, form)
    except Refused as refused:
        return _answer(request, refused)
    except InvalidInput as error:
        return _answer(request, Refused(409, str(error)))
    except StorageUnavailable as error:
        return _answer(request, Refused(503, f"nothing decided: {error}"))
    return _answer(request, None, status, message)


def _operator(form: dict[str, str], session: Session) -> str:
    operator = form.get("operator", "").strip()
    if not operator:
        raise Refused(400, "say who decides: the operator name is recorded with the decision")
    session.operator = operator
    return operator


async def _form(request: Request) -> dict[str, str]:
    """The posted form: URL-encoded (what a form and the page's script send), at most
    MAX_FORM_BYTES."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise Refused(415, f"post the form as {FORM_TYPE}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "the form is too large")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form could not be read") from None


def _answer(
    request: Request, refused: Refused | None, status: int = 200, message: str = ""
) -> Response:
    """JSON for the page's script, a short page for a plain form post."""
    if refused is not None:
        status, message = refused.status, str(refused)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": status == 200, "message": message}, status_code=status)
    values = {"log": "", "ok": status == 200, "message": message}
    return web_context(request).render(request, "decided.html", values, status_code=status)
