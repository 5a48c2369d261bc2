"""``posledger serve``: the live web view over a ledger (docs/operations.md#web-view)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from posledger.cli.base import DB_ARGUMENT, PROG, UsageError, argument, open_ledger, subcommand
from posledger.core.errors import InvalidInput

if TYPE_CHECKING:
    from rich.console import Console

WEB_HINT = "the web view needs starlette, uvicorn and jinja2: pip install -e '.[web]'"


@subcommand(
    "serve",
    help="a live web page of the positions, their history and the proposals to decide",
    description="""\
Serve the live web view of a ledger: open positions with their state and last evidence,
each key's history with its position plot, and the open proposals. Pages update by
themselves (server-sent events following the store's log); /health answers 200 while
the store does, 503 with the reason when it does not.

Read-only unless --token-env names an environment variable holding a token (at least
16 characters; never on the command line, where `ps` shows it). Then a
browser that logs in with the token may approve and reject proposals, naming the
operator; every form carries a CSRF token and must come from the page's own origin.
Serve over TLS (a reverse proxy) anywhere but 127.0.0.1: the token is a password.

Exit status: 0 after Ctrl-C, 2 when the ledger cannot be opened or an option is wrong.""",
    epilog=f"""\
examples:
  {PROG} serve --db posledger-demo.db                     read-only, http://127.0.0.1:8000
  POSLEDGER_WEB_TOKEN=$(openssl rand -hex 24) \\
    {PROG} serve --db sqlite:///positions.db --token-env POSLEDGER_WEB_TOKEN
""",
    arguments=(
        DB_ARGUMENT,
        argument(
            "--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)"
        ),
        argument(
            "--port",
            type=int,
            default=8000,
            help="the port (default: %(default)s; 0: any free one, printed on start)",
        ),
        argument(
            "--token-env",
            metavar="NAME",
            help="the environment variable holding the token that allows decisions",
        ),
        argument(
            "--poll",
            type=float,
            default=1.0,
            metavar="SECONDS",
            help="how often the store's log is read while a page is open (default: %(default)s)",
        ),
    ),
)
def serve(args: argparse.Namespace, console: Console) -> int:
    token = _token(args.token_env)
    if args.poll <= 0:
        raise UsageError(f"--poll must be a positive number of seconds, got {args.poll}")
    try:
        from posledger.web import create_app
        from posledger.web.server import listen, run
    except ImportError:
        raise UsageError(WEB_HINT) from None
    with open_ledger(args.db) as ledger:
        try:
            app = create_app(ledger, token=token, poll_interval=args.poll)
        except InvalidInput as error:
            raise UsageError(f"--token-env {args.token_env}: {error}") from None
        try:
            listener = listen(args.host, args.port)
        except OSError as error:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {error}") from None
        host, port = listener.getsockname()[:2]
        mode = f"decisions need the token in ${args.token_env}" if token else "read-only"
        console.print(
            f"Serving {ledger.settings.description} at http://{host}:{port} ({mode}); "
            "Ctrl-C stops.",
            soft_wrap=True,
        )
        run(app, listener)
    return 0


def _token(name: str | None) -> str | None:
    """The token from the environment variable ``name`` (None: no --token-env, read-only)."""
    if name is None:
        return None
    token = os.environ.get(name, "")
    if not token:
        raise UsageError(f"--token-env {name}: the environment variable {name} is not set")
    return token
