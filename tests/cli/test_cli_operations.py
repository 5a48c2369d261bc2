"""``posledger sync``'s operations arguments refused in one line, before anything is read."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from posledger import Ledger
from posledger.testing.fake_bybit import FakeBybit
from tests.cli.test_cli import assert_clean_usage_error
from tests.cli.test_cli_sync import fake, sync  # noqa: F401 (fake is a fixture)


@pytest.fixture
def url(tmp_path: Path) -> str:
    location = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(location).close()
    return location


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        (["--webhook", "http://127.0.0.1:9/x", "--webhook-format", "telegram"], "chat_id"),
        (["--webhook", "ftp://example.invalid/x"], "must be an http(s) URL"),
        (["--webhook", "http://127.0.0.1:9/x", "--alert-after-failed-rounds", "0"], "at least 1"),
    ],
)
def test_a_bad_webhook_is_one_line(
    fake: FakeBybit,  # noqa: F811
    url: str,
    arguments: list[str],
    needle: str,
) -> None:
    result = sync(fake, url, "--once", *arguments)
    assert_clean_usage_error(result, needle)
    assert fake.requests() == []


def test_a_metrics_port_in_use_is_one_line(fake: FakeBybit, url: str) -> None:  # noqa: F811
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sync(fake, url, "--once", "--metrics-port", str(port))
    assert_clean_usage_error(result, f"cannot serve metrics on port {port}")
    assert fake.requests() == []
