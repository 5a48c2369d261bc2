"""The webhook notifier against a real local HTTP server: every format delivered, server errors
retried with backoff, a server that is down blocks nothing, and no secret is ever sent."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from posledger import Ledger
from posledger.drivers.sync import Synchronizer
from posledger.ops.alerts import Alert, AlertKind, Alerts
from posledger.ops.webhook import WebhookNotifier
from tests.cli.test_cli_sync import API_KEY, API_SECRET
from tests.conftest import key as key_of
from tests.drivers.test_sync import ScriptedVenue
from tests.helpers import at, fill

TOKEN = "T0KEN-4f9e2c71-webhook-path-secret"


class Receiver:
    """A webhook server on 127.0.0.1: answers each POST with the next of ``statuses`` (then
    200) and keeps every body it received."""

    def __init__(self, statuses: Sequence[int] = (), port: int = 0) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/{TOKEN}"

    def bodies(self) -> list[Any]:
        return [json.loads(body) for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def alert(text: str) -> Alert:
    return Alert(
        AlertKind.FAILED_ROUNDS,
        text,
        {"scope": "bybit/main/linear", "error": f"sign error for {API_KEY}"},
        datetime(2025, 11, 12, 8, 0, tzinfo=UTC),
    )


LEAKY = f"Bybit positions: error sign! origin_string[1762934400000{API_KEY}5000] via {TOKEN}"


@pytest.mark.parametrize(
    ("format", "expected"),
    [
        ("slack", {"text": "3 rounds failed: " + LEAKY}),
        ("discord", {"content": "3 rounds failed: " + LEAKY}),
        ("telegram", {"chat_id": "-1001234", "text": "3 rounds failed: " + LEAKY}),
        (
            "json",
            {
                "kind": "failed_rounds",
                "text": "3 rounds failed: " + LEAKY,
                "at": "2025-11-12T08:00:00+00:00",
                "scope": "bybit/main/linear",
                "error": f"sign error for {API_KEY}",
            },
        ),
    ],
)
def test_each_format_is_delivered_with_every_secret_masked(
    receiver: Receiver, format: str, expected: dict[str, str]
) -> None:
    notifier = WebhookNotifier(
        receiver.url, format=format, chat_id="-1001234", secrets=[API_KEY, API_SECRET]
    )
    notifier(alert("3 rounds failed: " + LEAKY))
    notifier.close()
    assert notifier.delivered == 1
    ((path, raw),) = receiver.received
    assert path == f"/hook/{TOKEN}"
    masked = {
        name: text.replace(API_KEY, "***").replace(TOKEN, "***") for name, text in expected.items()
    }
    assert json.loads(raw) == masked
    assert API_KEY.encode() not in raw and TOKEN.encode() not in raw


def test_a_server_error_is_retried_with_backoff() -> None:
    receiver = Receiver(statuses=[500, 503])
    try:
        notifier = WebhookNotifier(receiver.url, format="slack", backoff_s=0.05)
        started = time.monotonic()
        notifier(alert("first"))
        notifier.close(timeout=10)
        assert time.monotonic() - started >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s
        assert (notifier.delivered, notifier.failed) == (1, 0)
        assert [b["text"] for b in receiver.bodies()] == ["first"] * 3
    finally:
        receiver.close()


def test_a_refusal_is_not_retried() -> None:
    receiver = Receiver(statuses=[400])
    try:
        notifier = WebhookNotifier(receiver.url, format="slack", backoff_s=0.05)
        notifier(alert("refused"))
        notifier.close(timeout=10)
        assert (notifier.delivered, notifier.failed, len(receiver.received)) == (0, 1, 1)
    finally:
        receiver.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_that_is_down_blocks_neither_the_ledger_nor_the_round() -> None:
    """Nothing listens on the port: rounds and writes go on at full speed, alerts queue (the
    oldest dropped and counted past the bound), and what is queued is delivered once a server
    listens there."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook/{TOKEN}"
    notifier = WebhookNotifier(url, format="json", queue_size=2, attempts=100, backoff_s=0.05)
    alerts = Alerts(notifier)
    venue = ScriptedVenue()
    with Ledger.open("memory://", observers=[alerts]) as ledger:
        sync = Synchronizer(ledger, venue, clock=lambda: venue.now, observers=[alerts])
        started = time.monotonic()
        for n in range(4):  # four phantoms: suspect, then corrected, each an alert
            key = key_of(f"S{n}USDT")
            ledger.record_fill(key, fill(f"open-{n}", "buy", "1", symbol=f"S{n}USDT"))
            for minute in (2 * n + 10, 2 * n + 11):
                venue.now = at(minute)
                sync.run_once()
        assert time.monotonic() - started < 5
        assert ledger.open_positions() == []
    assert notifier.dropped >= 4
    receiver = Receiver(port=port)
    try:
        notifier.close(timeout=10)
        kinds = [body["kind"] for body in receiver.bodies()]
        assert notifier.delivered == len(kinds) >= 2 and set(kinds) <= {"suspect", "correction"}
        assert receiver.bodies()[-1]["symbol"] == "S3USDT"  # the newest are kept
    finally:
        receiver.close()
