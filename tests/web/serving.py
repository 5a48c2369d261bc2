"""A store with a proposal waiting, and ``posledger serve`` running over it as a real process
(uvicorn on 127.0.0.1) for the HTTP and browser tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2

from posledger.demo import run_demo
from tests.ledger.test_approval import BTC, propose_phantom

TOKEN_ENV = "POSLEDGER_TEST_WEB_TOKEN"
TOKEN = "test-token-9f2c41d7e8a3b6"
POLL_S = 0.2
STARTUP_S = 30.0
HELD = BTC
"""The key the proposal holds: long 2 in the ledger, flat on the exchange twice."""


def demo_with_a_proposal(url: str) -> str:
    """The demo's ledger plus one held phantom (BTCUSDT, account main); its proposal id."""
    run_demo(url)
    return propose_phantom(url)


@contextmanager
def served(url: str, *, token: str | None = TOKEN) -> Iterator[str]:
    """``posledger serve --db url --port 0`` in its own process, the token (if any) in its
    environment; yields the base URL it prints once /health answers, and stops it with
    Ctrl-C's signal."""
    command = [sys.executable, "-m", "posledger", "serve", "--db", url]
    command += ["--port", "0", "--poll", str(POLL_S)]
    env = dict(os.environ)
    if token is not None:
        command += ["--token-env", TOKEN_ENV]
        env[TOKEN_ENV] = token
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = _wait_until_up(process)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        errors = process.stderr.read() if process.stderr else ""
        assert "Traceback" not in errors, errors


def _wait_until_up(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    started = process.stdout.readline()  # "Serving URL at http://127.0.0.1:PORT (...)"
    found = re.search(r"at (http://127\.0\.0\.1:\d+) ", started)
    if found is None:
        output = process.communicate()
        raise AssertionError(f"posledger serve exited {process.returncode}: {started} {output}")
    base = found.group(1)
    give_up = time.monotonic() + STARTUP_S
    while time.monotonic() < give_up:
        try:
            if httpx2.get(f"{base}/health", timeout=2).status_code == 200:
                return base
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"posledger serve did not answer at {base} within {STARTUP_S} s")


def log_in(client: httpx2.Client, base: str, token: str = TOKEN) -> str:
    """Log ``client`` in through the form; the CSRF token the overview's forms carry."""
    answer = client.post(f"{base}/login", data={"token": token}, headers={"Origin": base})
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get(f"{base}/").text)


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
