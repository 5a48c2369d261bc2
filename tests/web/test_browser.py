"""The web view in a real headless browser (Debian's chromium driven by Playwright) over the
demo store plus a held key: log in, see the positions, approve the proposal in the page, and
see the position change without the page reloading (server-sent events); and it fits a phone.

Never skipped: CI installs chromium (.ci/run)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from posledger import Ledger
from posledger.core.events import ProposalDecided
from tests.conftest import key
from tests.helpers import fill
from tests.web.serving import HELD, TOKEN, demo_with_a_proposal, served

CHROMIUM = os.environ.get("POSLEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
"""Debian's chromium (apt-get install chromium), or the browser this variable names."""
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
NEW_KEY = key("XRPUSDT", account="main")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))  # events connected


def test_approving_in_the_page_changes_the_position_without_a_reload(
    durable_url: str, chromium: Browser
) -> None:
    proposal = demo_with_a_proposal(durable_url)
    with served(durable_url) as base:
        page = chromium.new_page(viewport=LAPTOP)
        log_in(page, base)
        held = page.locator('tr[data-key="bybit/main/linear/BTCUSDT#0"]')
        expect(held).to_contain_text("held")
        expect(held.locator("td.size")).to_have_text("2")
        page.evaluate("window.sameDocument = true")

        card = page.locator(f'[data-proposal="{proposal}"]')
        operator = card.locator("form[action$='/approve'] input[name=operator]")
        operator.fill("dana")  # still typing when another process trades: the page follows...
        with Ledger.open(durable_url) as bot:
            bot.record_fill(NEW_KEY, fill("xrp-1", "sell", "150", "0.52"))
        added = page.locator('tr[data-key="bybit/main/linear/XRPUSDT#0"]')
        expect(added.locator("td.size")).to_have_text("150")
        expect(added).to_contain_text("short")
        expect(operator).to_have_value("dana")  # ...without wiping the form being filled in

        card.locator("button.approve").click()
        expect(page.locator("#notice")).to_contain_text("the correction is applied")
        expect(held).to_have_count(0)  # flat and no longer held: gone from the open positions
        expect(page.locator("[data-live='/parts/proposals']")).to_contain_text("No open proposals")
        assert page.evaluate("window.sameDocument") is True  # never reloaded
    with Ledger.open(durable_url) as ledger:
        decided = [e for e in ledger.history(HELD) if isinstance(e, ProposalDecided)]
        assert [(e.decision, e.operator) for e in decided] == [("approved", "dana")]


def test_the_pages_fit_a_phone_and_a_key_page_follows_its_key(
    durable_url: str, chromium: Browser
) -> None:
    demo_with_a_proposal(durable_url)
    with served(durable_url, token=None) as base:
        page = chromium.new_page(viewport=PHONE)
        page.goto(f"{base}/?all=1")
        expect(page.locator("#live")).to_have_class(re.compile(r"\bon\b"))
        assert page.locator("button").count() == 0  # read-only: nothing to press
        assert_fits(page)
        page.goto(f"{base}/keys/{HELD.stream_id}")
        expect(page.locator(".plot img")).to_have_js_property("complete", True)
        assert page.locator(".plot img").evaluate("img => img.naturalWidth") > 0
        assert_fits(page)
        expect(page.locator(".state .size")).to_contain_text("long 2")
        with Ledger.open(durable_url) as bot:
            bot.record_fill(HELD, fill("btc-more", "buy", "1"))
        expect(page.locator(".state .size")).to_contain_text("long 3")
        expect(page.locator(".timeline")).to_contain_text("btc-more")


def assert_fits(page: Page) -> None:
    """Nothing wider than the screen: no sideways scrolling on a phone."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"
