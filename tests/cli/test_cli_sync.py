"""``posledger sync``: a real subprocess running real pybit against the fake Bybit server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import Fill, Ledger, PositionKey, Side
from posledger.testing.fake_bybit import EXECUTIONS, POSITIONS, FakeBybit, HttpError, RetCode
from tests.cli.test_cli import RICH_TERMINAL_ENV, assert_clean_usage_error, run_cli

API_KEY = "K-7f3a91-posledger-test-key"
API_SECRET = "S-c4d2e8-posledger-test-secret"
AGI = PositionKey(venue="bybit", account="main", category="linear", symbol="AGIUSDT")


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    """Wall-clock time: the command signs requests and judges snapshots with the real clock."""
    with FakeBybit(api_key=API_KEY, api_secret=API_SECRET, page_size=2) as server:
        yield server


def environment(fake: FakeBybit, **overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RICH_TERMINAL_ENV}
    env.update(
        BYBIT_API_KEY=API_KEY, BYBIT_API_SECRET=API_SECRET, POSLEDGER_BYBIT_ENDPOINT=fake.url
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def sync(
    fake: FakeBybit, url: str, *args: str, **env: str | None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "posledger.cli", "sync", "--db", url, *args],
        env=environment(fake, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_secrets_not_shown(result.stdout + result.stderr)
    return result


def assert_secrets_not_shown(text: str) -> None:
    assert API_KEY not in text and API_SECRET not in text
    assert "Traceback" not in text


def seed_002(fake: FakeBybit, url: str) -> None:
    """AGIUSDT short 4160 with a reduce-only exit resting; the exchange then fills 1000 of the
    exit and the bot never hears of it."""
    now = datetime.now(UTC)
    opening = fake.add_open_order("AGIUSDT", "Sell", "4160", "0.05", at=now - timedelta(hours=3))
    opened = fake.partial_fill(opening, "4160", at=now - timedelta(hours=3))
    exit_id = fake.add_open_order(
        "AGIUSDT", "Buy", "4160", "0.04784", reduce_only=True, at=now - timedelta(hours=2)
    )
    with Ledger.open(url) as ledger:
        ledger.request_open(
            AGI, order_id=opening, side="sell", qty="4160", at=now - timedelta(hours=3)
        )
        ledger.record_fill(
            AGI,
            Fill(
                exec_id=opened.exec_id,
                order_id=opening,
                side="sell",
                qty="4160",
                price="0.05",
                exec_time=now - timedelta(hours=3),
                seq=opened.seq,
            ),
        )
        ledger.request_exit(AGI, order_id=exit_id, qty="4160", at=now - timedelta(hours=2))
    fake.partial_fill(exit_id, "1000", at=now - timedelta(hours=1))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def events(url: str) -> list[str]:
    with Ledger.open(url) as ledger:
        return [type(e).__name__ for e in ledger.history(AGI)]


def test_once_recovers_the_missed_exit_fill_of_seed_002(fake: FakeBybit, url: str) -> None:
    seed_002(fake, url)
    result = sync(fake, url, "--once")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Synced bybit/main/linear at" in out
    assert "1 exchange positions" in out and "1 missed fill recovered, 0 corrections" in out
    row = next(line for line in out.splitlines() if line.startswith("AGIUSDT"))
    assert row.split()[:4] == ["AGIUSDT", "0", "1", "agrees"]
    with Ledger.open(url) as ledger:
        position = ledger.position(AGI)
    assert position is not None and (position.side, position.size) == (Side.SELL, Decimal(3160))
    assert events(url)[-1] == "PartiallyFilled" and "Reconciled" not in events(url)

    again = sync(fake, url, "--once", "--json")
    assert again.returncode == 0, again.stderr
    document = json.loads(again.stdout)
    assert document["fills_recovered"] == 0
    assert document["exchange_positions"] == [
        {"symbol": "AGIUSDT", "idx": 0, "side": "sell", "size": "3160"}
    ]
    assert [(o["key"], o["outcome"]) for o in document["outcomes"]] == [(str(AGI), "agrees")]


def test_an_inverse_category_reads_every_coin_unless_one_is_named(
    fake: FakeBybit, url: str
) -> None:
    """Without --settle-coin an inverse sync covers BTCUSD and ETHUSD (not linear's USDT, which
    would cover nothing); --settle-coin BTC narrows it to BTC-settled symbols."""
    fake.set_position("BTCUSD", "Buy", "100", "20000", category="inverse")
    fake.set_position("ETHUSD", "Sell", "500", "3000", category="inverse")
    Ledger.open(url).close()
    every = sync(fake, url, "--once", "--json", "--category", "inverse")
    assert every.returncode == 0, every.stderr
    held = json.loads(every.stdout)["exchange_positions"]
    assert {(p["symbol"], p["size"]) for p in held} == {("BTCUSD", "100"), ("ETHUSD", "500")}
    btc = sync(fake, url, "--once", "--json", "--category", "inverse", "--settle-coin", "BTC")
    assert btc.returncode == 0, btc.stderr
    assert [p["symbol"] for p in json.loads(btc.stdout)["exchange_positions"]] == ["BTCUSD"]


def test_held_corrections_are_proposed_for_approval_not_applied(fake: FakeBybit, url: str) -> None:
    """--hold phantom: the phantom AGIUSDT is proposed on the confirming round and the key is
    held; posledger corrections lists it and approve applies it."""
    with Ledger.open(url) as ledger:
        ledger.record_fill(
            AGI,
            Fill(
                exec_id="agi-1",
                order_id="",
                side="sell",
                qty="4160",
                price="0.05",
                exec_time=datetime.now(UTC) - timedelta(hours=3),
            ),
        )
    fake.add_instrument("AGIUSDT")
    rounds = [sync(fake, url, "--once", "--json", "--hold", "phantom") for _ in range(2)]
    assert [r.returncode for r in rounds] == [0, 0], rounds[-1].stderr
    outcomes = [json.loads(r.stdout)["outcomes"][0]["outcome"] for r in rounds]
    assert outcomes == ["suspect", "proposed"]
    with Ledger.open(url) as ledger:
        assert not ledger.can_trade(AGI)
        (held,) = ledger.proposals()
        assert held.proposal is not None
        proposal = held.proposal.proposal_id
    listed = run_cli("corrections", "--db", url, cwd=Path(url[len("sqlite:///") :]).parent)
    assert proposal in listed.stdout
    bad = sync(fake, url, "--once", "--hold-above", "-1")
    assert_clean_usage_error(bad, "hold_above_notional")


@pytest.mark.parametrize("endpoint", [POSITIONS, EXECUTIONS])
def test_an_exchange_fault_exits_3_and_writes_nothing(
    fake: FakeBybit, url: str, endpoint: str
) -> None:
    seed_002(fake, url)
    before = events(url)
    fake.inject(endpoint, HttpError(502), times=None)
    result = sync(fake, url, "--once")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "posledger sync: error: exchange unavailable, nothing written:"
    )
    assert result.stdout == ""
    assert events(url) == before
    assert fake.requests(endpoint)


@pytest.mark.parametrize("missing", ["BYBIT_API_KEY", "BYBIT_API_SECRET"])
def test_missing_credentials_are_one_line(fake: FakeBybit, url: str, missing: str) -> None:
    seed_002(fake, url)
    result = sync(fake, url, "--once", **{missing: None})
    assert_clean_usage_error(result, f"set {missing} in the environment")
    assert fake.requests() == []


def test_a_bad_interval_is_one_line(fake: FakeBybit, url: str) -> None:
    seed_002(fake, url)
    result = sync(fake, url, "--interval", "0")
    assert_clean_usage_error(result, "--interval must be a positive number of seconds")
    assert fake.requests() == []


def test_a_missing_ledger_is_not_created(fake: FakeBybit, tmp_path: Path) -> None:
    result = sync(fake, f"sqlite:///{tmp_path / 'new.db'}", "--once")
    assert_clean_usage_error(result, "does not exist", "init-db")
    assert not (tmp_path / "new.db").exists() and fake.requests() == []


@pytest.mark.parametrize(
    ("credential", "code"),
    [
        ("BYBIT_API_SECRET", "(ErrCode: 10004)"),
        ("BYBIT_API_KEY", "API key is invalid. (ErrCode: 10003)"),
    ],
    ids=["wrong secret", "wrong key"],
)
@pytest.mark.parametrize("mode", [("--once",), ("--interval", "0.01")], ids=["once", "loop"])
def test_refused_credentials_exit_4_in_one_line_without_them(
    fake: FakeBybit, url: str, credential: str, code: str, mode: tuple[str, ...]
) -> None:
    """The loop stops too: retrying a refused key forever only hides it."""
    seed_002(fake, url)
    before = events(url)
    wrong = "S-wrong-" + API_SECRET if credential == "BYBIT_API_SECRET" else "K-wrong-" + API_KEY
    result = sync(fake, url, *mode, **{credential: wrong})
    assert result.returncode == 4, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "posledger sync: error: Bybit refused the key pair in $BYBIT_API_KEY / $BYBIT_API_SECRET"
    )
    assert code in last and wrong not in result.stderr
    if mode == ("--once",):
        assert result.stderr.count("\n") == 1
    else:
        assert "sync stopped: the exchange refused the credentials" in result.stderr
        assert "Stopped." not in result.stdout
    assert len(fake.requests(POSITIONS)) == 1
    assert events(url) == before


def run_loop_until_read(
    fake: FakeBybit, command: list[str], env: dict[str, str], *, settle_s: float = 0.0
) -> tuple[int, str, str]:
    """Start the sync loop, wait until it has read the exchange (and ``settle_s`` more), stop it
    with Ctrl-C: its exit code, stdout and stderr."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not fake.requests(POSITIONS) and process.poll() is None:
            assert time.monotonic() < deadline, "the loop never read the exchange"
            time.sleep(0.05)
        time.sleep(settle_s)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, out, err


def test_the_loop_stops_cleanly_on_ctrl_c(fake: FakeBybit, url: str) -> None:
    seed_002(fake, url)
    command = [sys.executable, "-m", "posledger.cli", "sync", "--db", url, "--interval", "3600"]
    code, out, err = run_loop_until_read(fake, command, environment(fake))
    assert code == 0, err
    assert_secrets_not_shown(out + err)
    assert out.startswith("Syncing bybit/main/linear (USDT) into sqlite:///")
    assert out.rstrip().endswith("Stopped.")
    assert "posledger.drivers.sync: sync round" in err and "fills_recovered=1" in err
    assert events(url)[-1] == "PartiallyFilled"


def test_a_root_handler_sees_only_masked_text(fake: FakeBybit, url: str) -> None:
    """``logging.basicConfig()`` (a root handler) in the process running the loop: records
    propagate to it, so the mask must be in the record, not in posledger's own handler. The
    exchange's error text holds the API key (as Bybit's ``error sign! origin_string[…]`` does)."""
    seed_002(fake, url)
    fake.inject(POSITIONS, RetCode(10016, f"server busy for key {API_KEY}", 0), times=None)
    program = (
        "import logging, sys; logging.basicConfig(level=logging.INFO); "
        "from posledger.cli import main; "
        f"sys.exit(main(['sync', '--db', {url!r}, '--interval', '3600']))"
    )
    _, out, err = run_loop_until_read(
        fake, [sys.executable, "-c", program], environment(fake), settle_s=0.5
    )
    assert "server busy for key ***" in err, err
    assert "WARNING:posledger.drivers.sync:" in err  # the root handler's own format
    assert_secrets_not_shown(out + err)
