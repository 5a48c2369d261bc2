"""``posledger positions / history / verify / export``, run as real subprocesses (stdout piped,
as in CI or ``> file``) against real SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from posledger import Ledger, PositionKey
from posledger.audit import HISTORY_COLUMNS, STATE_COLUMNS, history_rows
from posledger.demo import AGI, ETH, run_demo
from tests.audit.stores import damage_by_sql, forge_fill_by_sql
from tests.cli.test_cli import assert_clean_usage_error, run_cli
from tests.conftest import T0, key
from tests.helpers import at, fill

BTC, XRP_LONG, XRP_SHORT = key("BTCUSDT"), key("XRPUSDT", idx=1), key("XRPUSDT", idx=2)
D = Decimal


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo ledger, as `posledger demo` writes it (read-only for these tests)."""
    path = tmp_path_factory.mktemp("demo") / "posledger-demo.db"
    run_demo(f"sqlite:///{path}")
    return path


def small_ledger(url: str) -> None:
    """BTC open long 1.5; ETH opened and closed; two XRP hedge legs."""
    with Ledger.open(url, clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("b1", "buy", "1.5", "43000.5", fee="0.01", exec_time=at(1)))
        eth = key("ETHUSDT")
        ledger.record_fill(eth, fill("e1", "buy", "2", "3000", exec_time=at(2)))
        ledger.record_fill(eth, fill("e2", "sell", "2", "3100", exec_time=at(3)))
        ledger.record_fill(XRP_LONG, fill("x1", "buy", "10", "0.5", exec_time=at(4)))
        ledger.record_fill(XRP_SHORT, fill("x2", "sell", "4", "0.55", exec_time=at(5)))


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    small_ledger(url)
    return url


# --- positions -----------------------------------------------------------------------------


def test_positions_show_each_pnl_in_its_settle_coin_and_never_add_coins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'coins.db'}"
    inverse = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    with Ledger.open(url, clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("b1", "buy", "2", "40000", exec_time=at(1)))
        ledger.record_fill(BTC, fill("b2", "sell", "1", "41000", fee="0.5", exec_time=at(2)))
        for n, (side, qty, price) in enumerate(
            [("buy", "100", "20000"), ("buy", "100", "30000"), ("sell", "150", "25000")]
        ):
            ledger.record_fill(inverse, fill(f"i{n}", side, qty, price, exec_time=at(3 + n)))
    result = run_cli("positions", "--db", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {
        cells[2]: cells for cells in map(str.split, lines) if cells[:1] in (["linear"], ["inverse"])
    }
    assert rows["BTCUSDT"][7:11] == ["40000", "1000", "0.5", "USDT"]
    assert rows["BTCUSD"][7:11] == ["24000", "0.00025", "0", "BTC"]
    assert "per settle coin: 0.00025 BTC, 1000 USDT." in " ".join(result.stdout.split())
    history = run_cli("history", "--db", url, "BTCUSD", cwd=tmp_path).stdout
    assert "realized PnL 0.00025 BTC, fees 0 BTC" in history
    document = json.loads(run_cli("positions", "--db", url, "--json", cwd=tmp_path).stdout)
    coins = {p["symbol"]: p["settle_coin"] for p in document["positions"]}
    assert coins == {"BTCUSDT": "USDT", "BTCUSD": "BTC"}


def test_positions_lists_open_ones_and_all_with_exact_sizes(
    sqlite_ledger: str, tmp_path: Path
) -> None:
    result = run_cli("positions", "--db", sqlite_ledger, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        line.split()[:6] == ["main", "BTCUSDT", "0", "open", "long", "1.5"] for line in lines
    )
    assert "ETHUSDT" not in result.stdout
    assert "3 open of 4 keys" in result.stdout and "--all lists the others" in result.stdout

    every = run_cli("positions", "--db", sqlite_ledger, "--all", cwd=tmp_path).stdout
    assert "ETHUSDT" in every and "flat" in every and "3 open of 4 keys" in every

    document = json.loads(
        run_cli("positions", "--db", sqlite_ledger, "--json", cwd=tmp_path).stdout
    )
    assert document["keys"] == 4
    by_symbol = {(p["symbol"], p["idx"]): p for p in document["positions"]}
    assert set(by_symbol) == {("BTCUSDT", 0), ("XRPUSDT", 1), ("XRPUSDT", 2)}
    btc = by_symbol[("BTCUSDT", 0)]
    assert (btc["size"], btc["avg_entry_price"], btc["fees"]) == ("1.5", "43000.5", "0.01")
    assert btc["signed_size"] == "1.5" and by_symbol[("XRPUSDT", 2)]["signed_size"] == "-4"
    assert set(btc) == set(STATE_COLUMNS)


def test_the_demo_ledger_from_a_fresh_install(tmp_path: Path) -> None:
    """`posledger demo`, then the audit commands on the file it wrote, by its plain path."""
    assert run_cli("demo", cwd=tmp_path).returncode == 0
    result = run_cli("positions", "--db", "posledger-demo.db", "--all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for symbol in ("AGIUSDT", "SCAUSDT", "HNTUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT"):
        assert symbol in result.stdout
    assert "0 open of 6 keys" in result.stdout
    assert run_cli("verify", "--db", "posledger-demo.db", cwd=tmp_path).returncode == 0


# --- history -------------------------------------------------------------------------------


def test_history_explains_the_seed_002_correction(demo_db: Path, tmp_path: Path) -> None:
    result = run_cli("history", "--db", f"sqlite:///{demo_db}", "AGIUSDT", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "bybit/aged-exits/linear/AGIUSDT#0" in out
    assert "now flat, lifecycle 1" in out
    lines = out.splitlines()
    stale = next(line for line in lines if "Reconciled" in line)
    assert "-4160 -> -3160" in stale and "stale_quantity" in stale and "-3160 at" in stale
    suspect = next(line for line in lines if "ExchangeSnapshot" in line)
    assert "suspect" in suspect
    assert any("Filled" in line and "sell 4160 @" in line and "agi-x1" in line for line in lines)
    assert "\x1b[" not in out and max(len(line) for line in lines) <= 120


def test_history_as_json_equals_the_audit_rows(demo_db: Path, tmp_path: Path) -> None:
    result = run_cli("history", "--db", str(demo_db), "agiusdt", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = history_rows(f"sqlite:///{demo_db}", AGI)
    assert document["key"] == str(AGI)
    assert [r["event"] for r in document["rows"]] == [r.event for r in expected]
    assert set(document["rows"][0]) == set(HISTORY_COLUMNS)
    stale = next(r for r in document["rows"] if r["event"] == "Reconciled")
    assert (stale["size_before"], stale["size_after"], stale["reason"]) == (
        "4160",
        "3160",
        "stale_quantity",
    )
    assert stale["evidence_confirmations"] == 2 and stale["time"].endswith("+00:00")


def test_an_unknown_symbol_suggests_the_ledgers_own(demo_db: Path, tmp_path: Path) -> None:
    result = run_cli("history", "--db", str(demo_db), "AGIUSD", cwd=tmp_path)
    assert_clean_usage_error(result, "no key for symbol 'AGIUSD'", "Did you mean AGIUSDT")
    far = run_cli("history", "--db", str(demo_db), "DOGE", cwd=tmp_path)
    assert_clean_usage_error(far, "The ledger holds AGIUSDT, BTCUSDT")


def test_hedge_legs_are_chosen_with_idx(sqlite_ledger: str, tmp_path: Path) -> None:
    both = run_cli("history", "--db", sqlite_ledger, "XRPUSDT", cwd=tmp_path)
    assert_clean_usage_error(both, "XRPUSDT names 2 keys", "#1", "#2", "--idx")
    short = run_cli(
        "history", "--db", sqlite_ledger, "XRPUSDT", "--idx", "2", "--json", cwd=tmp_path
    )
    assert short.returncode == 0, short.stderr
    assert json.loads(short.stdout)["key"] == str(XRP_SHORT)
    missing = run_cli("history", "--db", sqlite_ledger, "XRPUSDT", "--idx", "0", cwd=tmp_path)
    assert_clean_usage_error(missing, "no key matches --idx 0", str(XRP_LONG))
    other = run_cli("history", "--db", sqlite_ledger, "XRPUSDT", "--account", "alt", cwd=tmp_path)
    assert_clean_usage_error(other, "no key matches --account alt")


@pytest.mark.parametrize("idx", ["5", "x"])
def test_a_bad_idx_is_one_line(sqlite_ledger: str, tmp_path: Path, idx: str) -> None:
    result = run_cli("history", "--db", sqlite_ledger, "BTCUSDT", "--idx", idx, cwd=tmp_path)
    assert_clean_usage_error(result, "posledger history: error: argument --idx")


# --- where the ledger is -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["positions", "verify", "history", "export"])
def test_a_missing_sqlite_file_is_an_error_not_a_new_empty_ledger(
    tmp_path: Path, command: str
) -> None:
    extra = {
        "history": ["BTCUSDT"],
        "export": ["--format", "csv", "--out", "x.csv"],
    }.get(command, [])
    for db in (f"sqlite:///{tmp_path / 'absent.db'}", "absent.db"):
        result = run_cli(command, "--db", db, *extra, cwd=tmp_path)
        assert_clean_usage_error(result, "absent.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("db", "needle"),
    [
        ("mysql://root@localhost/db", "unknown ledger URL scheme 'mysql'"),
        ("memory://", "nothing to read"),
        ("postgresql://localhost", "needs a host and a database"),
        ("postgresql://postgres@127.0.0.1:1/test", "127.0.0.1:1"),
        ("sqlite:///nowhere/at/all.db", "does not exist"),
    ],
)
def test_wrong_or_unreachable_urls_are_one_line(tmp_path: Path, db: str, needle: str) -> None:
    assert_clean_usage_error(run_cli("positions", "--db", db, cwd=tmp_path), needle)


def test_a_file_that_is_not_a_ledger_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    result = run_cli("positions", "--db", "notes.txt", cwd=tmp_path)
    assert_clean_usage_error(result, "not a SQLite database")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    result = run_cli("verify", "--db", f"sqlite:///{other}", cwd=tmp_path)
    assert_clean_usage_error(result, "without a posledger ledger")
    assert [row[0] for row in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")] == [
        "t"
    ]


def test_a_postgres_schema_without_tables_is_not_created(postgres_url: str, tmp_path: Path) -> None:
    result = run_cli("positions", "--db", postgres_url, cwd=tmp_path)
    assert_clean_usage_error(result, "tables are missing", "init-db")
    import psycopg

    server, schema = postgres_url.split("?schema=")
    with psycopg.connect(server) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert tables == (0,)


# --- verify --------------------------------------------------------------------------------


@pytest.fixture
def durable_ledger(durable_url: str) -> Iterator[str]:
    small_ledger(durable_url)
    yield durable_url


def test_verify_is_clean_then_exits_1_on_an_event_inserted_with_sql(
    durable_ledger: str, tmp_path: Path
) -> None:
    clean = run_cli("verify", "--db", durable_ledger, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "OK: 4 keys, 10 events, 5 executions, 5 markers" in clean.stdout

    version = forge_fill_by_sql(durable_ledger, BTC)
    broken = run_cli("verify", "--db", durable_ledger, cwd=tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Traceback" not in broken.stdout + broken.stderr
    out = broken.stdout
    assert "1 problem(s) in 1 key(s)" in out
    assert f"{BTC}: 1 problem(s)" in out
    problem = next(line for line in out.splitlines() if "forged-by-hand" in line)
    assert problem.split()[:2] == [str(version), "executions"]

    document = json.loads(run_cli("verify", "--db", durable_ledger, "--json", cwd=tmp_path).stdout)
    assert document["ok"] is False
    assert [(p["key"], p["check"], p["version"]) for p in document["problems"]] == [
        (str(BTC), "executions", version)
    ]


def test_verify_lists_an_unknown_execution_type_and_still_exits_0(
    durable_url: str, tmp_path: Path
) -> None:
    with Ledger.open(durable_url) as ledger:
        odd = fill("odd-1", "buy", "1", exec_time=T0, kind="unknown", venue_type="Novel")
        ledger.record_fill(BTC, odd)
    result = run_cli("verify", "--db", durable_url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "executions of an unknown type" in result.stdout
    assert "odd-1" in result.stdout and "Novel" in result.stdout
    document = json.loads(run_cli("verify", "--db", durable_url, "--json", cwd=tmp_path).stdout)
    assert (document["ok"], document["unknown_executions"]) == (
        True,
        [{"key": str(BTC), "version": 2, "exec_id": "odd-1", "venue_type": "Novel"}],
    )


@pytest.mark.parametrize(
    ("damage", "what"),
    [(None, "event version 4 does not follow 2"), (b'{"timestamp": {', "Failed to deserialise")],
    ids=["a deleted event", "a garbled event"],
)
def test_a_damaged_store_is_one_line_naming_the_stream_exit_1(
    durable_ledger: str, tmp_path: Path, damage: bytes | None, what: str
) -> None:
    eth = key("ETHUSDT")
    damage_by_sql(durable_ledger, eth, 3, damage)
    for command in (
        ("positions",),
        ("history", "ETHUSDT"),
        ("export", "--format", "csv", "--out", "history.csv"),
    ):
        result = run_cli(*command, "--db", durable_ledger, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(
            f"posledger {command[0]}: error: the stored stream of {eth} ({eth.stream_id}) is "
            "damaged"
        )
        assert what in lines[0]
        assert lines[0].endswith(
            f"`posledger verify --db '{durable_ledger}'` reports every problem"
        )
    assert not [p for p in tmp_path.iterdir() if "history.csv" in p.name]
    verified = run_cli("verify", "--db", durable_ledger, cwd=tmp_path)
    assert verified.returncode == 1 and f"{eth}: " in verified.stdout


# --- export --------------------------------------------------------------------------------


def test_export_csv_and_jsonl_hold_every_event_exactly(demo_db: Path, tmp_path: Path) -> None:
    expected = sum(len(history_rows(f"sqlite:///{demo_db}", k)) for k in (AGI, ETH))
    for format in ("csv", "jsonl"):
        out = tmp_path / f"history.{format}"
        result = run_cli(
            "export", "--db", str(demo_db), "--format", format, "--out", out.name, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert f"Wrote 42 history rows from sqlite:///{demo_db} to history.{format}" in (
            result.stdout
        )
        if format == "csv":
            with out.open(newline="") as file:
                rows = list(csv.DictReader(file))
            assert list(rows[0]) == list(HISTORY_COLUMNS)
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 42
        mine = [r for r in rows if r["key"] in (str(AGI), str(ETH))]
        assert len(mine) == expected
        stale = next(r for r in rows if r["key"] == str(AGI) and r["event"] == "Reconciled")
        assert (stale["size_before"], stale["size_after"]) == ("4160", "3160")
        assert stale["signed_size_after"] == "-3160"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.jsonl"]


def test_export_parquet_keeps_types(demo_db: Path, tmp_path: Path) -> None:
    parquet = pytest.importorskip("pyarrow.parquet")
    for what, rows, columns in (("history", 42, HISTORY_COLUMNS), ("positions", 6, STATE_COLUMNS)):
        out = tmp_path / f"{what}.parquet"
        result = run_cli(
            "export", "--db", str(demo_db), "--format", "parquet", "--out", str(out),
            "--what", what, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        table = parquet.read_table(out)
        assert table.num_rows == rows and table.column_names == list(columns)
        assert str(table.schema.field("version").type) == "int64"
        assert str(table.schema.field("updated_at" if what == "positions" else "time").type) == (
            "timestamp[us, tz=UTC]"
        )
    records = parquet.read_table(tmp_path / "positions.parquet").to_pylist()
    agi = next(r for r in records if r["symbol"] == "AGIUSDT")
    assert (agi["status"], agi["size"], agi["realized_pnl"]) == ("flat", "0", "-3.41280")
    assert Decimal(agi["realized_pnl"]) == D("-3.41280")


def test_export_without_pyarrow_says_how_to_install_it(demo_db: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None; from posledger.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    result = run_cli(
        "export", "--db", str(demo_db), "--format", "parquet", "--out", "x.parquet",
        cwd=tmp_path, code=code,
    )  # fmt: skip
    assert_clean_usage_error(result, "pip install -e '.[export]'")
    assert not (tmp_path / "x.parquet").exists()


def test_export_to_a_missing_directory_is_one_line(demo_db: Path, tmp_path: Path) -> None:
    result = run_cli(
        "export", "--db", str(demo_db), "--format", "csv", "--out", "no/such/dir/x.csv",
        cwd=tmp_path,
    )  # fmt: skip
    assert_clean_usage_error(result, "does not exist")


# --- terminals and help --------------------------------------------------------------------


def test_a_progress_bar_only_on_an_interactive_stderr(demo_db: Path, tmp_path: Path) -> None:
    plain = run_cli("verify", "--db", str(demo_db), cwd=tmp_path)
    assert plain.stderr == ""
    code = (
        "import os, sys; os.environ['TTY_INTERACTIVE'] = '1'; from posledger.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    shown = run_cli("verify", "--db", str(demo_db), cwd=tmp_path, code=code)
    assert shown.returncode == 0, shown.stderr
    assert "verifying the ledger" in shown.stderr
    assert "OK: 6 keys, 42 events" in shown.stdout and "OK: 6 keys, 42 events" in plain.stdout


@pytest.mark.parametrize("command", ["positions", "history", "verify", "export", "sync"])
def test_every_command_has_examples_in_its_help(tmp_path: Path, command: str) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and f"posledger {command} --db" in result.stdout
