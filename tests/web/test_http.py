"""The web view over HTTP (Starlette's TestClient, in process) on SQLite and PostgreSQL: what it
shows, and that a decision needs the token's session, its CSRF token and the page's origin."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from html import escape

import pytest
from starlette.testclient import TestClient

from posledger import Ledger
from posledger.core.events import ProposalDecided
from posledger.web import create_app
from tests.audit.stores import ACCOUNT, BETA, BOOK_POLICY, with_books
from tests.conftest import key
from tests.helpers import at, fill
from tests.web.serving import HELD, TOKEN, csrf_of, demo_with_a_proposal

ORIGIN = {"Origin": "http://testserver"}


@contextmanager
def client(url: str, token: str | None = TOKEN) -> Iterator[tuple[TestClient, Ledger]]:
    with Ledger.open(url) as ledger, TestClient(create_app(ledger, token=token)) as browser:
        yield browser, ledger


def logged_in(browser: TestClient) -> str:
    answer = browser.post("/login", data={"token": TOKEN}, headers=ORIGIN, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return csrf_of(browser.get("/").text)


def still_open(ledger: Ledger, proposal: str) -> bool:
    return [s.proposal.proposal_id for s in ledger.proposals() if s.proposal] == [proposal]


def test_the_overview_shows_positions_and_proposals_read_only_without_a_token(
    durable_url: str,
) -> None:
    proposal = demo_with_a_proposal(durable_url)
    with client(durable_url, token=None) as (browser, ledger):
        page = browser.get("/")
        assert page.status_code == 200
        assert proposal in page.text and "phantom" in page.text
        assert 'data-key="bybit/main/linear/BTCUSDT#0"' in page.text
        assert "held" in page.text and "read-only" in page.text
        assert "/approve" not in page.text and "<form" not in page.text
        every_key = browser.get("/?all=1").text
        assert all(s in every_key for s in ("AGIUSDT", "SCAUSDT", "ETHUSDT", "SOLUSDT"))
        assert "-8.752896 USDT" in every_key  # the demo's realized PnL, in its settle coin
        assert browser.get("/login").status_code == 404
        refused = browser.post(
            f"/proposals/{proposal}/approve", data={"operator": "eve"}, headers=ORIGIN
        )
        assert refused.status_code == 403 and "read-only" in refused.text
        assert still_open(ledger, proposal)


def test_a_decision_is_refused_without_login_csrf_or_the_pages_origin(durable_url: str) -> None:
    proposal = demo_with_a_proposal(durable_url)
    approve = f"/proposals/{proposal}/approve"
    with client(durable_url) as (browser, ledger):
        assert "Log in to decide" in browser.get("/").text
        assert "/approve" not in browser.get("/").text  # no buttons before logging in
        not_logged_in = browser.post(approve, data={"operator": "eve"}, headers=ORIGIN)
        assert not_logged_in.status_code == 401
        wrong_token = browser.post("/login", data={"token": "x" * 30}, headers=ORIGIN)
        assert wrong_token.status_code == 403 and "not the token" in wrong_token.text
        csrf = logged_in(browser)
        answers = {
            "no csrf": browser.post(approve, data={"operator": "eve"}, headers=ORIGIN),
            "wrong csrf": browser.post(
                approve, data={"operator": "eve", "csrf": csrf[::-1]}, headers=ORIGIN
            ),
            "wrong origin": browser.post(
                approve,
                data={"operator": "eve", "csrf": csrf},
                headers={"Origin": "http://evil.example"},
            ),
            "no origin": browser.post(approve, data={"operator": "eve", "csrf": csrf}),
            "foreign referer": browser.post(
                approve,
                data={"operator": "eve", "csrf": csrf},
                headers={"Referer": "http://evil.example/page"},
            ),
            "no operator": browser.post(approve, data={"csrf": csrf}, headers=ORIGIN),
            "json body": browser.post(approve, json={"operator": "eve", "csrf": csrf}),
        }
        statuses = {why: answer.status_code for why, answer in answers.items()}
        assert statuses == {
            "no csrf": 403,
            "wrong csrf": 403,
            "wrong origin": 403,
            "no origin": 403,
            "foreign referer": 403,
            "no operator": 400,
            "json body": 415,
        }
        assert still_open(ledger, proposal)
        assert not any(isinstance(e, ProposalDecided) for e in ledger.history(HELD))


def test_login_sets_an_http_only_strict_cookie_and_logout_ends_the_session(
    durable_url: str,
) -> None:
    demo_with_a_proposal(durable_url)
    with client(durable_url) as (browser, _):
        answer = browser.post(
            "/login", data={"token": TOKEN}, headers=ORIGIN, follow_redirects=False
        )
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN not in cookie
        csrf = csrf_of(browser.get("/").text)
        assert "/approve" in browser.get("/").text
        ended = browser.post("/logout", data={"csrf": csrf}, headers=ORIGIN)
        assert ended.status_code == 200 and "Log in to decide" in ended.text


def test_an_approval_with_session_csrf_and_origin_applies_and_names_the_operator(
    durable_url: str,
) -> None:
    proposal = demo_with_a_proposal(durable_url)
    approve = f"/proposals/{proposal}/approve"
    with client(durable_url) as (browser, ledger):
        csrf = logged_in(browser)
        answer = browser.post(
            approve,
            data={"operator": "carol", "csrf": csrf},
            headers={**ORIGIN, "Accept": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "ok": True,
            "message": f"Approved {proposal} as carol: the correction is applied.",
        }
        decided = [e for e in ledger.history(HELD) if isinstance(e, ProposalDecided)]
        assert [(e.decision, e.operator) for e in decided] == [("approved", "carol")]
        assert ledger.can_trade(HELD) and ledger.proposals() == []
        assert 'data-key="bybit/main/linear/BTCUSDT#0"' not in browser.get("/").text
        assert 'value="carol"' not in browser.get("/").text  # no proposal left to decide
        again = browser.post(approve, data={"operator": "carol", "csrf": csrf}, headers=ORIGIN)
        assert again.status_code == 409 and "no open proposal" in again.text


def test_a_rejection_records_operator_and_reason(durable_url: str) -> None:
    proposal = demo_with_a_proposal(durable_url)
    reject = f"/proposals/{proposal}/reject"
    with client(durable_url) as (browser, ledger):
        csrf = logged_in(browser)
        no_reason = browser.post(reject, data={"operator": "dan", "csrf": csrf}, headers=ORIGIN)
        assert no_reason.status_code == 400 and still_open(ledger, proposal)
        answer = browser.post(
            reject,
            data={"operator": "dan", "csrf": csrf, "reason": "closed by hand"},
            headers=ORIGIN,
        )
        assert answer.status_code == 200 and "nothing corrected" in answer.text
        (decided,) = [e for e in ledger.history(HELD) if isinstance(e, ProposalDecided)]
        assert (decided.decision, decided.operator, decided.reason) == (
            "rejected",
            "dan",
            "closed by hand",
        )
        assert not ledger.position(HELD).held  # type: ignore[union-attr]


def test_an_approval_whose_evidence_no_longer_stands_is_refused(durable_url: str) -> None:
    proposal = demo_with_a_proposal(durable_url)
    with client(durable_url) as (browser, ledger):
        csrf = logged_in(browser)
        ledger.record_fill(HELD, fill("late", "buy", "1"))
        answer = browser.post(
            f"/proposals/{proposal}/approve",
            data={"operator": "carol", "csrf": csrf},
            headers={**ORIGIN, "Accept": "application/json"},
        )
        assert answer.status_code == 409 and not answer.json()["ok"]
        assert "withdrawn" in answer.json()["message"]
        assert ledger.position(HELD).size == 3  # type: ignore[union-attr]


def test_a_keys_page_shows_its_state_history_and_plot(durable_url: str) -> None:
    proposal = demo_with_a_proposal(durable_url)
    stream = HELD.stream_id
    with client(durable_url) as (browser, _):
        page = browser.get(f"/keys/{stream}")
        assert page.status_code == 200
        for text in ("BTCUSDT #0", "CorrectionProposed", proposal, "+2", "ExchangeSnapshot"):
            assert text in page.text
        assert f'src="/keys/{stream}/plot.svg?v=' in page.text
        plot = browser.get(f"/keys/{stream}/plot.svg")
        assert plot.headers["content-type"] == "image/svg+xml"
        assert plot.content.startswith(b"<?xml") and b"<svg" in plot.content
        assert browser.get("/keys/00000000-0000-0000-0000-000000000000").status_code == 404
        assert browser.get("/keys/not-a-key").status_code == 404
        headers = browser.get("/").headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_health_answers_with_the_log_position(durable_url: str) -> None:
    demo_with_a_proposal(durable_url)
    with client(durable_url) as (browser, ledger):
        answer = browser.get("/health")
        assert answer.status_code == 200
        document = answer.json()
        assert (document["status"], document["writable"]) == ("ok", True)
        assert document["log"] == ledger.application.recorder.max_notification_id()


def test_a_token_shorter_than_16_characters_is_refused() -> None:
    with Ledger.open("memory://") as ledger, pytest.raises(ValueError, match="16 characters"):
        create_app(ledger, token="short")


def test_positions_show_books_and_the_account_and_a_books_page_works(durable_url: str) -> None:
    """A book column and each account's row only where books exist; a book's own page, its
    name (with characters a URL would escape) shown escaped."""
    odd = ACCOUNT.in_book("grid/2 <b>&?")
    with Ledger.open(durable_url, allocation=BOOK_POLICY) as ledger:
        ledger.record_fill(key("BTCUSDT"), fill("p1", "buy", "1"))
        plain = TestClient(create_app(ledger, token=None))
        with plain as browser:
            page = browser.get("/").text
            assert "<th>book</th>" not in page and "account-row" not in page
        with_books(ledger)
        ledger.record_fill(odd, fill("o1", "buy", "1", exec_time=at(20)))
    with client(durable_url, token=None) as (browser, _):
        page = browser.get("/").text
        assert "<th>book</th>" in page
        ada = page[page.index("ADAUSDT") :]
        books = [cell.split("<")[0] for cell in ada.split('class="book">')[1:]]
        assert books == ["(default)", "alpha", "beta", "grid/2 &lt;b&gt;&amp;?", "= account", ""]
        assert f'data-account="{ACCOUNT}"' in page
        account = page[page.index(f'data-account="{ACCOUNT}"') :].split("</tr>")[0]
        assert 'class="num size">1<' in account  # -2 + 1.6 + 0.4 + 1: what the exchange holds
        assert "/keys/" not in account  # the account has no page of its own
        for book in (BETA, odd):
            answer = browser.get(f"/keys/{book.stream_id}")
            assert answer.status_code == 200
            assert "<h1>ADAUSDT #0</h1>" in answer.text
            assert f'book <strong class="book">{escape(book.book)}</strong>' in answer.text
            assert browser.get(f"/keys/{book.stream_id}/plot.svg").status_code == 200
        beta = browser.get(f"/keys/{BETA.stream_id}").text
        assert "adl -0.5 pro rata among alpha, beta: share -0.1" in beta
