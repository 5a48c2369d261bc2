"""The live web view (``posledger serve``): open positions with their last evidence, each key's
history and position plot, and the open proposals with approve / reject buttons, kept current
from the store's notification log through server-sent events (docs/operations.md#web-view).

Starlette, uvicorn, Jinja2 and matplotlib are the optional extra ``web`` (``pip install -e
'.[web]'``). Read-only unless started with a token; writes then need a session opened with the
token, the session's CSRF token and a request from the page's own origin.

Modules: ``app`` (routes, headers, lifespan), ``pages`` (what is read), ``decisions`` (what is
written), ``security`` (sessions, the guard), ``live`` (log watcher, events, health), ``views``
(what the templates show), ``plots`` (the SVG plot), ``context`` (what endpoints share).
"""

from posledger.web.app import create_app

__all__ = ["create_app"]
