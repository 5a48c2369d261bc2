"""``posledger serve`` as a real process (uvicorn on 127.0.0.1) over SQLite and PostgreSQL:
read-only without a token, a decision recorded with its operator, events that name the key
another process changed, and /health through a store outage."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2
import pytest
from starlette.testclient import TestClient

from posledger import Ledger
from posledger.core.events import ProposalDecided
from posledger.web import create_app
from posledger.web.live import LogWatcher
from tests.helpers import fill
from tests.tcp_proxy import TcpProxy
from tests.web.serving import HELD, demo_with_a_proposal, log_in, served

EVENT_WAIT_S = 15.0


def test_without_a_token_the_served_page_is_read_only(durable_url: str) -> None:
    proposal = demo_with_a_proposal(durable_url)
    with served(durable_url, token=None) as base:
        page = httpx2.get(f"{base}/")
        assert page.status_code == 200 and proposal in page.text and "read-only" in page.text
        assert "<form" not in page.text
        refused = httpx2.post(
            f"{base}/proposals/{proposal}/approve",
            data={"operator": "eve"},
            headers={"Origin": base},
        )
        assert refused.status_code == 403
    with Ledger.open(durable_url) as ledger:
        assert not ledger.can_trade(HELD)


def test_an_approval_through_the_served_page_is_recorded_with_the_operator(
    durable_url: str,
) -> None:
    proposal = demo_with_a_proposal(durable_url)
    with served(durable_url) as base, httpx2.Client() as browser:
        csrf = log_in(browser, base)
        answer = browser.post(
            f"{base}/proposals/{proposal}/approve",
            data={"operator": "erin", "csrf": csrf},
            headers={"Origin": base},
        )
        assert answer.status_code == 200 and "the correction is applied" in answer.text
    with Ledger.open(durable_url) as ledger:
        decided = [e for e in ledger.history(HELD) if isinstance(e, ProposalDecided)]
        assert [(e.decision, e.operator) for e in decided] == [("approved", "erin")]
        assert ledger.can_trade(HELD)


def test_the_event_stream_names_the_key_another_process_changed(durable_url: str) -> None:
    demo_with_a_proposal(durable_url)
    with (
        served(durable_url) as base,
        httpx2.stream("GET", f"{base}/events", timeout=EVENT_WAIT_S) as stream,
    ):
        events = sse_events(stream.iter_lines())
        assert next(events) == ("hello", {"log": None, "problem": None})
        first = next(events)  # the log where the watcher starts following it
        assert first[0] == "changed" and first[1]["keys"] is None
        with Ledger.open(durable_url) as writer:
            writer.record_fill(HELD, fill("from-the-bot", "buy", "1"))
            written = writer.application.recorder.max_notification_id()
        name, data = next(events)
    assert name == "changed"
    assert (data["log"], data["keys"]) == (written, [str(HELD.stream_id)])


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, object]]]:
    """(event, data) pairs of a server-sent event stream; keep-alive comments skipped."""
    name = ""
    for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            yield name, json.loads(line[len("data: ") :])


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    parts = urlsplit(postgres_url)
    with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy, postgres_url.replace(f":{parts.port}/", f":{proxy.port}/", 1)


def test_health_and_pages_answer_503_while_the_store_is_cut_off_then_recover(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, url = proxied
    demo_with_a_proposal(url)
    with Ledger.open(url, timeout=2) as ledger, TestClient(create_app(ledger)) as browser:
        assert browser.get("/health").status_code == 200
        proxy.cut()
        down = browser.get("/health")
        assert down.status_code == 503
        assert down.json()["status"] == "unavailable" and "127.0.0.1" in down.json()["reason"]
        page = browser.get("/")
        assert page.status_code == 503 and "The store does not answer" in page.text
        proxy.restore()
        give_up = time.monotonic() + 10
        while browser.get("/health").status_code != 200:
            assert time.monotonic() < give_up, "the store did not come back"
            time.sleep(0.2)
        assert browser.get("/").status_code == 200


def test_open_pages_hear_when_the_store_stops_answering_and_when_it_is_back(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, url = proxied
    demo_with_a_proposal(url)

    async def listen(watcher: LogWatcher) -> list[tuple[str, object]]:
        page = watcher.subscribe()
        await watcher.poll()  # where the log is
        proxy.cut()
        await watcher.poll()
        await watcher.poll()  # still down: said once
        proxy.restore()
        give_up = time.monotonic() + 10
        while watcher.problem is not None or page.empty():
            assert time.monotonic() < give_up, "the store did not come back"
            await watcher.poll()
        heard = []
        while not page.empty():
            message = page.get_nowait()
            assert message is not None
            name, data = message.split("\n")[:2]
            heard.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
        return heard

    with Ledger.open(url, timeout=2) as ledger:
        heard = asyncio.run(listen(LogWatcher(ledger, interval=0.1)))
    assert [name for name, _ in heard] == ["changed", "store", "store"]
    problem, back = heard[1][1], heard[2][1]
    assert isinstance(problem, dict) and "127.0.0.1" in problem["problem"]
    assert back == {"problem": None}
