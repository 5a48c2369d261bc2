"""The CLI on a ledger whose accounts have books (docs/books.md): a book column and account rows
only where books exist, ``--book`` filters, and keys named with their book."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posledger import AllocationPolicy, Ledger, ReconcilePolicy
from tests.audit.stores import ACCOUNT, BOOK_POLICY, with_books
from tests.cli.test_cli import assert_clean_usage_error, run_cli
from tests.cli.test_cli_audit import small_ledger
from tests.conftest import T0
from tests.helpers import at, fill, snapshot


@pytest.fixture
def books_ledger(tmp_path: Path) -> str:
    """The small ledger's keys (default books only), and ADAUSDT with books alpha and beta
    (long 1.6 and 0.4) and the default book short 2 (it took a manual trade and a phantom)."""
    url = f"sqlite:///{tmp_path / 'books.db'}"
    small_ledger(url)
    with Ledger.open(url, clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
    return url


def rows_of(out: str, symbol: str) -> list[list[str]]:
    return [cells for cells in map(str.split, out.splitlines()) if symbol in cells]


def test_single_book_output_has_no_book_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    small_ledger(url)
    out = run_cli("positions", "--db", url, "--all", cwd=tmp_path).stdout
    header = out.splitlines()[0].split()
    assert header[:4] == ["account", "symbol", "idx", "status"]
    assert "book" not in header and "= account" not in out
    assert "accounts" not in json.loads(
        run_cli("positions", "--db", url, "--json", cwd=tmp_path).stdout
    )


def test_positions_show_each_book_and_the_account_over_them(
    books_ledger: str, tmp_path: Path
) -> None:
    result = run_cli("positions", "--db", books_ledger, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:5] == [
        "account",
        "symbol",
        "idx",
        "book",
        "status",
    ]
    assert [cells[3:8] for cells in rows_of(result.stdout, "ADAUSDT")] == [
        ["(default)", "open", "short", "2", "1.3"],
        ["alpha", "open", "long", "1.6", "1"],
        ["beta", "open", "long", "0.4", "1.1"],
        ["=", "account", "flat", "0", "-0.013"],  # the exchange's flat account; its PnL
    ]
    btc = rows_of(result.stdout, "BTCUSDT")
    assert btc[0][3:5] == ["open", "long"]  # no book named: an empty book cell
    assert "6 open of 7 keys" in result.stdout

    document = json.loads(run_cli("positions", "--db", books_ledger, "--json", cwd=tmp_path).stdout)
    books = {p["book"]: p["signed_size"] for p in document["positions"] if p["symbol"] == "ADAUSDT"}
    assert books == {"": "-2.0", "alpha": "1.6", "beta": "0.4"}
    [account] = document["accounts"]
    assert (account["key"], account["signed_size"], account["fees"]) == (
        str(ACCOUNT),
        "0",
        "0.00010000",
    )


def test_book_filters_positions_and_picks_a_key_in_history(
    books_ledger: str, tmp_path: Path
) -> None:
    alpha = run_cli("positions", "--db", books_ledger, "--book", "alpha", cwd=tmp_path).stdout
    assert [cells[1:5] for cells in rows_of(alpha, "ADAUSDT")] == [
        ["ADAUSDT", "0", "alpha", "open"]
    ]
    assert "= account" not in alpha and "BTCUSDT" not in alpha
    assert "1 open of 1 keys in book 'alpha'" in " ".join(alpha.split())
    default = run_cli("positions", "--db", books_ledger, "--book", "", cwd=tmp_path).stdout
    assert "BTCUSDT" in default and "alpha" not in default

    ambiguous = run_cli("history", "--db", books_ledger, "ADAUSDT", cwd=tmp_path)
    assert_clean_usage_error(ambiguous, "names 3 keys", "--book")
    beta = run_cli("history", "--db", books_ledger, "ADAUSDT", "--book", "beta", cwd=tmp_path)
    assert beta.returncode == 0, beta.stderr
    assert beta.stdout.splitlines()[0] == f"{ACCOUNT}@beta"
    shares = [line for line in beta.stdout.splitlines() if "Allocated" in line]
    # the ADL's and the funding's shares, and the phantom's (zero: the unassigned book took it)
    assert len(shares) == 3 and "adl -0.5 pro" in shares[0] and "phantom -1.8" in shares[2]
    missing = run_cli("history", "--db", books_ledger, "ADAUSDT", "--book", "gamma", cwd=tmp_path)
    assert_clean_usage_error(missing, "no key matches --book 'gamma'")
    for command in (("positions",), ("history", "ADAUSDT")):
        bad = run_cli(*command, "--db", books_ledger, "--book", " x", cwd=tmp_path)
        assert_clean_usage_error(bad, "argument --book", "book must be printable")


def test_corrections_name_the_book_holding_the_proposal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'held.db'}"
    hold = ReconcilePolicy(hold_for_approval={"phantom"})
    with Ledger.open(
        url, clock=lambda: T0, policy=hold, allocation=AllocationPolicy(unassigned="manual")
    ) as ledger:
        alpha = ACCOUNT.in_book("alpha")
        ledger.request_open(alpha, order_id="a1", side="buy", qty="1", at=at(0))
        ledger.record_fill(alpha, fill("f1", "buy", "1", order_id="a1", exec_time=at(1)))
        for minute in (10, 11):
            ledger.reconcile(snapshot(at(minute), symbols=["ADAUSDT"]), now=at(minute))
        assert ledger.proposals()
    out = run_cli("corrections", "--db", url, cwd=tmp_path).stdout
    assert "main/ADAUSDT#0@manual" in out, out


def test_export_writes_the_book_column_and_one_book_with_book(
    books_ledger: str, tmp_path: Path
) -> None:
    def exported(name: str, *options: str) -> list[dict[str, object]]:
        out = tmp_path / name
        result = run_cli(
            "export", "--db", books_ledger, "--format", "jsonl", "--out", str(out), *options,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    books = [row["book"] for row in exported("positions.jsonl", "--what", "positions")]
    assert sorted(books) == ["", "", "", "", "", "alpha", "beta"]  # type: ignore[type-var]
    rows = exported("beta.jsonl", "--book", "beta")
    assert {r["key"] for r in rows} == {f"{ACCOUNT}@beta"} and len(rows) == 13
