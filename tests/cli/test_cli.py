"""The ``posledger`` command, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from posledger.cli import main

RICH_TERMINAL_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "NO_COLOR")


def run_cli(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m posledger.cli ARGS`` with stdout piped (not a terminal), as in CI or `> file`."""
    env = {k: v for k, v in os.environ.items() if k not in RICH_TERMINAL_ENV}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "posledger.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def assert_clean_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_demo_runs_and_prints_the_story(tmp_path: Path) -> None:
    result = run_cli("demo", "--db", "tmp.db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in (
        "1. The bot opens ETHUSDT and SOLUSDT",
        "raised ExchangeUnavailable(",
        "Events written: none (the ledger is unchanged)",
        "exchange shows flat: 1/2 snapshots",
        "Reconciled   ETHUSDT   phantom       long 0.5 -> flat",
        "Closed       SOLUSDT   phantom",
        "Reconciled         BTCUSDT   unfilled_open",
        "short 2136.9 -> short 2036.0",
        "Reconciled   AGIUSDT   stale_quantity   short 4160 -> short 3160",
        "Reconciled   HNTUSDT   stale_quantity   short 60 -> short 59.88",
        "open_positions(): 2 before, 0 after",
        "Demo complete: 10 chapters, 36 events written to tmp.db, plus 6 KeyRegistered (one "
        "per key): 42 in all.",
        "Corrections: phantom 2, stale_quantity 2, unfilled_open 1. Open positions at the end: 0.",
        "Explore it: posledger history --db tmp.db AGIUSDT, posledger verify --db tmp.db",
    ):
        assert line in out, line
    assert (tmp_path / "tmp.db").is_file()
    verified = run_cli("verify", "--db", "tmp.db", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "6 keys, 42 events" in verified.stdout  # the demo's own count


def test_piped_output_is_plain_text(tmp_path: Path) -> None:
    out = run_cli("demo", cwd=tmp_path).stdout
    assert "\x1b[" not in out
    assert not [line for line in out.splitlines() if line != line.rstrip()]
    assert max(len(line) for line in out.splitlines()) <= 120
    assert (tmp_path / "posledger-demo.db").is_file()  # the default, in the working directory


def test_a_second_run_starts_from_a_fresh_ledger_and_says_so(tmp_path: Path) -> None:
    first = run_cli("demo", "--db", "again.db", cwd=tmp_path)
    second = run_cli("demo", "--db", "again.db", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Deleted the previous demo ledger again.db" in second.stdout
    assert "Deleted" not in first.stdout
    assert second.stdout.split("\n", 1)[1] == first.stdout


def test_db_in_a_missing_directory_is_a_clean_error(tmp_path: Path) -> None:
    result = run_cli("demo", "--db", str(tmp_path / "nowhere" / "demo.db"), cwd=tmp_path)
    assert_clean_usage_error(result, "posledger demo: error:", "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_db_that_is_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    assert_clean_usage_error(run_cli("demo", "--db", str(tmp_path), cwd=tmp_path), "directory")


def test_an_existing_file_that_is_not_a_ledger_is_not_deleted(tmp_path: Path) -> None:
    precious = tmp_path / "notes.db"
    precious.write_text("not a ledger\n")
    result = run_cli("demo", "--db", "notes.db", cwd=tmp_path)
    assert_clean_usage_error(result, "not a posledger ledger")
    assert precious.read_text() == "not a ledger\n"


def test_an_unwritable_directory_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process, because root (CI containers) can write into a chmod 500 directory.
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    assert main(["demo", "--db", str(tmp_path / "demo.db")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"posledger demo: error: cannot create {tmp_path / 'demo.db'}: "
        f"directory {tmp_path.resolve()} is not writable"
    ]
    assert not (tmp_path / "demo.db").exists()


@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"]])
def test_help_has_examples(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "posledger demo --db" in result.stdout


def test_no_command_prints_usage_and_exits_2(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2 and "usage: posledger" in result.stderr


def test_without_rich_a_one_line_hint_and_exit_2(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['rich'] = None; from posledger.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    result = run_cli("demo", "--db", "x.db", cwd=tmp_path, code=code)
    assert_clean_usage_error(result, "pip install -e '.[cli]'")
    assert not (tmp_path / "x.db").exists()


# --- init-db and a PostgreSQL store that is not set up ---------------------------------------


def test_init_db_takes_db_like_every_command_and_still_the_url_alone(tmp_path: Path) -> None:
    for args, name in (
        (["--db", "sqlite:///flag.db"], "flag.db"),
        (["sqlite:///alone.db"], "alone.db"),
    ):
        result = run_cli("init-db", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Ledger tables ready" in result.stdout
        assert (tmp_path / name).is_file()
    assert_clean_usage_error(run_cli("init-db", cwd=tmp_path), "posledger init-db --db URL")
    both = run_cli("init-db", "--db", "sqlite:///a.db", "sqlite:///b.db", cwd=tmp_path)
    assert_clean_usage_error(both, "two URLs given")
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists()


def _elsewhere(postgres_url: str, *, dbname: str | None = None, port: int | None = None) -> str:
    """The test server's URL with another database or port (and no schema)."""
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    login = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{login}{parts.hostname}:{port or parts.port}/{dbname or parts.path[1:]}"


def test_a_missing_schema_is_one_line_naming_it_and_init_db(
    postgres_url: str, tmp_path: Path
) -> None:
    url = postgres_url.replace("?schema=", "?schema=missing_", 1)
    schema = url.split("?schema=")[1]
    result = run_cli("positions", "--db", url, cwd=tmp_path)
    assert_clean_usage_error(
        result, f'schema "{schema}" does not exist', "posledger init-db --db URL"
    )


def test_a_missing_database_is_one_line_at_once(postgres_url: str, tmp_path: Path) -> None:
    import time

    url = _elsewhere(postgres_url, dbname="posledger_no_such_db")
    started = time.monotonic()
    result = run_cli("verify", "--db", url, cwd=tmp_path)
    assert time.monotonic() - started < 4  # the CLI waits 5 s for an unreachable store
    assert_clean_usage_error(result, url, 'database "posledger_no_such_db" does not exist')


def test_a_refused_connection_is_one_line_saying_refused(postgres_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    result = run_cli("init-db", "--db", _elsewhere(postgres_url, port=port), cwd=tmp_path)
    assert_clean_usage_error(result, "Connection refused")
    assert "couldn't get a connection" in result.stderr
