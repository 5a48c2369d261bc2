"""Who may write through the web view: nobody unless a token is configured; then a browser
session opened with that token, a CSRF token bound to the session (synchronizer token) in
every form, and a request from the page's own origin.

Sessions live in this process's memory: a restart logs everyone out, which is the safe way
round. The token is compared in constant time and never stored in a cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs
from starlette.requests import Request

from posledger.core.errors import InvalidInput

SESSION_COOKIE = "posledger_session"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1000
"""Sessions kept at once; the oldest goes first (logins are a person's, not a crowd's)."""
MIN_TOKEN_LENGTH = 16


@attrs.define
class Session:
    """A logged-in browser: its CSRF token, when it expires, and the operator name it last
    decided as (offered again in the next form)."""

    csrf: str
    expires: float
    operator: str = ""


class Sessions:
    """The open sessions, by the random id their cookie carries. Thread-safe."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, limit: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def start(self) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=time.monotonic() + self.ttl_s)
        with self._lock:
            while len(self._by_id) >= self.limit:
                del self._by_id[next(iter(self._by_id))]
            self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is not None and session.expires < time.monotonic():
                del self._by_id[session_id]
                return None
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)


class Refused(Exception):
    """A write the guard does not let through; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Guard:
    """Checks every write: writable at all, from this origin, logged in, with its CSRF token."""

    def __init__(self, token: str | None, sessions: Sessions | None = None) -> None:
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise InvalidInput(f"token must have at least {MIN_TOKEN_LENGTH} characters")
        self._digest = _digest(token) if token is not None else None
        self.sessions = sessions or Sessions()

    @property
    def writable(self) -> bool:
        """False without a token: the view is read-only and shows no buttons."""
        return self._digest is not None

    def token_matches(self, given: str) -> bool:
        return self._digest is not None and hmac.compare_digest(self._digest, _digest(given))

    def session(self, request: Request) -> Session | None:
        """The request's session, if writes are on and its cookie names a live one."""
        if not self.writable:
            return None
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def check_origin(self, request: Request) -> None:
        """Refuse a write whose Origin (else Referer) is not this server's own origin."""
        if not self.writable:
            raise Refused(403, "read-only: the server was started without a token")
        claimed = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
        own = str(request.base_url).rstrip("/")
        if claimed != own:
            raise Refused(403, f"refused: the request came from {claimed or 'no origin'}")

    def check_write(self, request: Request, form: Mapping[str, str]) -> Session:
        """The session a decision is made in, or Refused: origin, login, then CSRF token."""
        self.check_origin(request)
        session = self.session(request)
        if session is None:
            raise Refused(401, "log in first: writes need the token")
        if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
            raise Refused(403, "refused: the form's CSRF token does not match your session")
        return session


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None
