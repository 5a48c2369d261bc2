"""Audits of a store whose accounts have books (docs/books.md): verify, history, frames and
per-book PnL."""

from __future__ import annotations

from posledger import Ledger
from posledger.audit import Check, verify
from tests.audit.stores import (
    ACCOUNT,
    ALPHA,
    BETA,
    BOOK_POLICY,
    D,
    append,
    filled,
    source_of,
    with_books,
)
from tests.conftest import T0, key
from tests.helpers import at, fill

GAMMA = ACCOUNT.in_book("gamma")
OTHER_ACCOUNT = key("DOTUSDT")


# --- verify ---------------------------------------------------------------------------------------


def test_verify_accepts_books_order_markers_and_executions_split_between_books(
    ledger_url: str,
) -> None:
    with Ledger.open(
        ledger_url, clock=lambda: T0, allocation=BOOK_POLICY, snapshot_every=3
    ) as ledger:
        with_books(ledger)
        report = verify(source_of(ledger, ledger_url))
        assert report.ok, str(report)
        assert report.keys_checked == 3  # the account's default book, alpha and beta
        # ba1, bb1, bb2, man1 once each; adl1 and fund1 once in each book: 8 applied, 6 marked
        assert (report.executions_checked, report.markers_checked) == (8, 6)


def test_an_exec_id_in_another_account_or_shares_that_do_not_add_up_are_caught(
    ledger_url: str,
) -> None:
    """adl1 (split between alpha and beta) applied again in another account's key, a third
    share of it appended in book gamma, and bb1 applied twice in beta: the first and last are
    applied twice, the second makes the shares differ from the account's execution its marker
    records."""
    with Ledger.open(ledger_url, clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
        ledger.record_fill(OTHER_ACCOUNT, fill("d1", "buy", "1", exec_time=at(1)))
        ledger.record_fill(GAMMA, fill("g1", "buy", "1", exec_time=at(1)))
        assert verify(source_of(ledger, ledger_url)).ok
        v = {s.key: s.version for s in ledger.positions()}
        append(
            ledger.application,
            filled(OTHER_ACCOUNT, v[OTHER_ACCOUNT] + 1, "adl1", "sell", "0.5", kind="adl"),
            filled(GAMMA, v[GAMMA] + 1, "adl1", "sell", "0.1", price=D("0.9"), kind="adl"),
            filled(BETA, v[BETA] + 1, "bb1", "buy", "1", price=D("1.10")),
        )
        report = verify(source_of(ledger, ledger_url))
    found = {(str(p.key), p.check): p.detail for p in report.problems}
    assert set(found) == {
        (str(OTHER_ACCOUNT), Check.EXECUTIONS),
        (str(ALPHA), Check.EXECUTIONS),
        (str(BETA), Check.EXECUTIONS),
    }, str(report)
    assert "'adl1' applied again" in found[str(OTHER_ACCOUNT), Check.EXECUTIONS]
    assert "3 books' shares" in found[str(ALPHA), Check.EXECUTIONS]
    assert "'bb1' applied again" in found[str(BETA), Check.EXECUTIONS]
