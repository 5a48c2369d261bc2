"""What ``posledger sync`` runs beside its rounds: a Prometheus endpoint (``--metrics-port``)
and alerts posted to a webhook (``--webhook``), built from the command's arguments as the
observers of its ledger and synchronizer (docs/operations.md#metrics, #alerts)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from posledger.cli.base import UsageError, argument

WEBHOOK_ENV = "POSLEDGER_WEBHOOK_URL"
"""The webhook URL, when not given by ``--webhook`` (it is a credential: keep it out of ps)."""

OPERATIONS_ARGUMENTS = (
    argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve Prometheus metrics on this port (0: any free one, printed)",
    ),
    argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the metrics endpoint listens on (default: 127.0.0.1)",
    ),
    argument(
        "--webhook",
        default=None,
        metavar="URL",
        help=f"post alerts to this URL (default: ${WEBHOOK_ENV})",
    ),
    argument(
        "--webhook-format",
        choices=("json", "slack", "discord", "telegram"),
        default="json",
        help="the webhook's body (default: json)",
    ),
    argument("--webhook-chat-id", default=None, metavar="ID", help="the Telegram chat to post to"),
    argument(
        "--alert-after-failed-rounds",
        type=int,
        default=3,
        metavar="N",
        help="alert when this many rounds in a row fail (default: 3)",
    ),
)


@contextmanager
def operations(args: argparse.Namespace, secrets: Sequence[str]) -> Iterator[list[Any]]:
    """The observers the arguments ask for, their servers and threads running; on exit the
    webhook delivers what is queued (a few seconds at most) and the endpoint stops."""
    observers: list[Any] = []
    with ExitStack() as stack:
        if args.metrics_port is not None:
            observers.append(stack.enter_context(_metrics(args)))
        url = args.webhook or os.environ.get(WEBHOOK_ENV)
        if url:
            observers.append(stack.enter_context(_alerts(args, url, secrets)))
        yield observers


@contextmanager
def _metrics(args: argparse.Namespace) -> Iterator[Any]:
    try:
        from prometheus_client import CollectorRegistry, start_http_server

        from posledger.ops.metrics import Metrics
    except ImportError:
        hint = "--metrics-port needs prometheus-client: pip install -e '.[metrics]'"
        raise UsageError(hint) from None
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    try:
        server, thread = start_http_server(
            args.metrics_port, addr=args.metrics_host, registry=registry
        )
    except OSError as error:
        raise UsageError(f"cannot serve metrics on port {args.metrics_port}: {error}") from None
    host, port = server.server_address[:2]
    print(f"Serving metrics on http://{host!s}:{port}/metrics", file=sys.stderr, flush=True)
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def _alerts(args: argparse.Namespace, url: str, secrets: Sequence[str]) -> Iterator[Any]:
    from posledger.ops.alerts import Alerts
    from posledger.ops.webhook import WebhookNotifier

    if args.alert_after_failed_rounds < 1:
        raise UsageError("--alert-after-failed-rounds must be at least 1")
    try:
        notifier = WebhookNotifier(
            url, format=args.webhook_format, chat_id=args.webhook_chat_id, secrets=secrets
        )
    except ValueError as error:
        raise UsageError(f"--webhook: {error}") from None
    try:
        yield Alerts(notifier, failed_rounds=args.alert_after_failed_rounds)
    finally:
        notifier.close()
