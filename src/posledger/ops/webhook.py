"""A webhook notifier: posts each alert as JSON to one URL, from a thread of its own.

It never blocks the ledger or a round: calling it only queues the alert (a bounded queue; when
full, the oldest alert is dropped, counted and logged). Its worker posts with retries and
exponential backoff on a server error (5xx), a rate limit (429) or no answer; any other
refusal (a 4xx) is given up at once. Nothing secret leaves: every text is masked with
:class:`~posledger.ops.secrets.Secrets` (the API keys it is given, URL passwords, its own URL)
and its log lines name only the URL's scheme and host (a Slack, Discord or Telegram webhook
URL is itself a credential).

Formats: ``json`` (the alert's kind, text, time and fields), ``slack`` (``{"text": ...}``),
``discord`` (``{"content": ...}``), ``telegram`` (``{"chat_id": ..., "text": ...}``, for a bot's
``sendMessage`` URL).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from posledger.ops.alerts import Alert
from posledger.ops.secrets import SHORT, Secrets

log = logging.getLogger("posledger.webhook")

RETRIED_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def _json(alert: Alert, text: str, chat_id: str | None) -> dict[str, Any]:
    return {"kind": alert.kind.value, "text": text, "at": alert.at.isoformat(), **alert.fields}


FORMATS: dict[str, Callable[[Alert, str, str | None], dict[str, Any]]] = {
    "json": _json,
    "slack": lambda alert, text, chat_id: {"text": text},
    "discord": lambda alert, text, chat_id: {"content": text},
    "telegram": lambda alert, text, chat_id: {"chat_id": chat_id, "text": text},
}
"""Each format's JSON body for an alert, its (masked) text and the Telegram chat id."""


def _url_secrets(url: str) -> list[str]:
    """What of a webhook URL may be a credential: the URL, its password, and each path segment
    or query value long enough to be a token (Slack's, Discord's and Telegram's are in the
    path). Masking a harmless long segment too ("services") costs nothing."""
    parts = urlsplit(url)
    pieces = [*parts.path.split("/"), *(value for _, value in parse_qsl(parts.query))]
    return [url, parts.password or "", *(piece for piece in pieces if len(piece) >= SHORT)]


class WebhookNotifier:
    """Posts alerts to ``url`` in ``format`` (see :data:`FORMATS`; ``telegram`` needs
    ``chat_id``). ``secrets`` (API keys, tokens) are masked in every body. Use it as an
    :class:`~posledger.ops.alerts.Alerts` hook; :meth:`close` delivers what is queued (for
    at most ``timeout`` seconds) and stops the worker."""

    def __init__(
        self,
        url: str,
        *,
        format: str = "json",
        chat_id: str | None = None,
        secrets: Iterable[str] = (),
        queue_size: int = 100,
        attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 5.0,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown webhook format {format!r}: one of {sorted(FORMATS)}")
        if format == "telegram" and not chat_id:
            raise ValueError("the telegram format needs a chat_id")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook URL must be an http(s) URL")
        self.url = url
        self.where = f"{parts.scheme}://{parts.hostname}"
        """The URL as logs name it: scheme and host only."""
        self.format = format
        self.chat_id = chat_id
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._mask = Secrets([*secrets, *_url_secrets(url)])
        self._queue: deque[Alert] = deque(maxlen=queue_size)
        self._changed = threading.Condition()
        self._busy = False
        self._stop = threading.Event()
        self.delivered = self.failed = self.dropped = 0
        self._worker = threading.Thread(target=self._run, name="posledger-webhook", daemon=True)
        self._worker.start()

    def __call__(self, alert: Alert) -> None:
        """Queue ``alert``; never blocks. When the queue is full the oldest alert is dropped."""
        with self._changed:
            full = len(self._queue) == self._queue.maxlen
            if full:
                self.dropped += 1
            self._queue.append(alert)
            self._changed.notify_all()
        if full:
            log.warning(
                "webhook %s: queue full, the oldest alert was dropped (%d so far)",
                self.where,
                self.dropped,
            )

    def body(self, alert: Alert) -> bytes:
        """The JSON posted for ``alert``, secrets masked."""
        masked = Alert(
            alert.kind,
            self._mask(alert.text),
            {name: self._mask(value) for name, value in alert.fields.items()},
            alert.at,
        )
        return json.dumps(FORMATS[self.format](masked, masked.text, self.chat_id)).encode()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then stop the worker."""
        with self._changed:
            self._changed.wait_for(lambda: not self._queue and not self._busy, timeout)
            self._stop.set()
            self._changed.notify_all()
        self._worker.join(timeout=self.timeout_s + 1)

    def __enter__(self) -> WebhookNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._stop.is_set())
                if self._stop.is_set():
                    return
                alert = self._queue.popleft()
                self._busy = True
            try:
                self._deliver(alert)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _deliver(self, alert: Alert) -> None:
        """Post one alert, retrying what a retry can fix; give up after ``attempts``."""
        body = self.body(alert)
        for attempt in range(1, self.attempts + 1):
            problem = self._post(body)
            if problem is None:
                self.delivered += 1
                return
            retry, why = problem
            if not retry or attempt == self.attempts or self._stop.is_set():
                break
            delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            log.info("webhook %s: %s; retrying in %.1fs", self.where, why, delay)
            if self._stop.wait(delay):
                break
        self.failed += 1
        log.warning("webhook %s: %s alert not delivered: %s", self.where, alert.kind.value, why)

    def _post(self, body: bytes) -> tuple[bool, str] | None:
        """None when the server took it, else (whether to retry, why not), masked."""
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
            return None
        except urllib.error.HTTPError as error:
            return error.code in RETRIED_STATUSES, f"HTTP {error.code}"
        except OSError as error:
            return True, self._mask(f"{type(error).__name__}: {error}")
