"""``posledger serve`` refuses, in one line, what would make it unsafe or useless: a token
variable that is not set, a token too short to be a password, a missing web extra. The served
view itself is tested in tests/web/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from posledger.demo import run_demo
from tests.cli.test_cli import assert_clean_usage_error, run_cli

TOKEN_ENV = "POSLEDGER_TEST_SERVE_TOKEN"


@pytest.fixture
def demo_db(tmp_path: Path) -> str:
    run_demo(f"sqlite:///{tmp_path / 'demo.db'}")
    return str(tmp_path / "demo.db")


def test_a_token_variable_that_is_not_set_is_refused(
    demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    result = run_cli("serve", "--db", demo_db, "--token-env", TOKEN_ENV, cwd=tmp_path)
    assert_clean_usage_error(result, f"the environment variable {TOKEN_ENV} is not set")


def test_a_short_token_is_refused(
    demo_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(os.environ, TOKEN_ENV, "hunter2")
    result = run_cli("serve", "--db", demo_db, "--token-env", TOKEN_ENV, cwd=tmp_path)
    assert_clean_usage_error(result, f"--token-env {TOKEN_ENV}", "at least 16 characters")
    assert result.stdout == "" and "hunter2" not in result.stderr


def test_without_the_web_extra_a_one_line_hint(demo_db: str, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None; from posledger.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    result = run_cli("serve", "--db", demo_db, cwd=tmp_path, code=code)
    assert_clean_usage_error(result, "pip install -e '.[web]'")


def test_a_missing_ledger_is_refused_before_serving(tmp_path: Path) -> None:
    result = run_cli("serve", "--db", "nowhere.db", cwd=tmp_path)
    assert_clean_usage_error(result, "no such file")


def test_help_says_where_the_token_comes_from(tmp_path: Path) -> None:
    result = run_cli("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--token-env" in result.stdout and "examples:" in result.stdout


def test_an_address_in_use_is_refused_in_one_line(demo_db: str, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--db", demo_db, "--port", str(port), cwd=tmp_path)
    assert_clean_usage_error(result, f"cannot listen on 127.0.0.1:{port}")
    assert result.stdout == ""
