"""Audits of a store whose accounts have books (docs/books.md): verify, history, frames and
per-book PnL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from posledger import InvalidInput, Ledger
from posledger.audit import (
    BOOK_PNL_COLUMNS,
    Check,
    book_pnl,
    history_rows,
    history_stream,
    plot_position,
    replay_all,
    state_html,
    state_record,
    to_dataframe,
    verify,
)
from posledger.audit.history import row_tone
from posledger.audit.source import PAGE_SIZE, notifications
from posledger.audit.verification import _LogChecks
from posledger.core.events import POSITION_TOPICS, ExecutionSeen
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


def test_only_executions_shared_between_books_wait_for_the_end_of_the_log() -> None:
    """An execution whose marker names its stream and payload is settled when both are read,
    keeping one small entry; the ADL and the funding split between alpha and beta wait whole."""
    with Ledger.open("memory://", clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
        checks = _LogChecks()
        topics = (*POSITION_TOPICS, ExecutionSeen.TOPIC)
        for notification, decode in notifications(ledger.application, topics, None, PAGE_SIZE):
            checks.read(notification, decode)
    executions = checks.executions
    assert sorted(a.exec_id for a in executions.applied.values()) == ["adl1", "fund1"]
    assert len(executions.settled) == 4  # ba1, bb1, bb2 and man1 (the default book's, whole)
    checks.finish()
    assert not checks.findings.problems and not executions.markers


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


# --- history, frames, plots -----------------------------------------------------------------------


def test_a_books_history_explains_each_share_it_took_and_markers_are_not_positions(
    ledger_url: str,
) -> None:
    with Ledger.open(ledger_url, clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
        source = source_of(ledger, ledger_url)
        alpha = history_rows(source, ALPHA)
        unassigned = history_rows(source, ACCOUNT)
        # the OrderBooked markers of a1, b1 and b2 are neither keys nor events of one
        assert list(replay_all(source)) == [ACCOUNT, ALPHA, BETA]
        streamed = list(history_stream(source))
        assert len(streamed) == sum(s.version for s in ledger.positions())
    allocated = [(r.exec_id, r.reason) for r in alpha if r.event == "Allocated"]
    assert allocated == [
        ("adl1", "adl -0.5 pro rata among alpha, beta: share -0.4"),
        (
            "fund1",
            "funding +0.003 pro rata among alpha, beta: share +0.00240000",
        ),
        (None, "phantom -1.8 to the unassigned book (default): share 0"),
    ]
    # every book's correction shows what the exchange showed (the account flat), not the
    # book's own size after it
    [corrected] = [r for r in alpha if r.event == "Reconciled"]
    assert corrected.evidence is not None
    assert (corrected.evidence.side, corrected.evidence.size) == (None, 0)
    assert corrected.size_after == Decimal("1.6")
    assert [(r.exec_id, r.reason) for r in unassigned if r.event == "Allocated"] == [
        ("man1", "trade -0.2 to the unassigned book (default): share -0.2"),
        (None, "phantom -1.8 to the unassigned book (default): share -1.8"),
    ]
    assert all(r.size_change == 0 for r in alpha if r.event == "Allocated")
    assert {row_tone(r) for r in alpha if r.event == "Allocated"} == {"allocation"}
    assert alpha._repr_html_().count("background:#e3f2fd") == 3
    assert str(alpha[0].key).endswith("@alpha")


def test_book_pnl_gives_each_book_and_the_account_over_them(ledger_url: str) -> None:
    with Ledger.open(ledger_url, clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
        rows = book_pnl(source_of(ledger, ledger_url), BETA)  # any book's key names the account
        account = ledger.account_position(ACCOUNT)
    assert [(r.book, r.state.signed_size) for r in rows] == [
        ("", D("-2.0")),
        ("alpha", D("1.6")),
        ("beta", D("0.4")),
        (None, 0),
    ]
    books, total = rows[:-1], rows[-1]
    for column in ("realized_pnl", "fees", "funding", "booked_pnl"):
        assert sum(r.record()[column] for r in books) == total.record()[column], column
    assert total.record()["funding"] == D("0.003") and total.record()["fees"] == D("0.0001")
    assert account is not None and total.state.realized_pnl == account.realized_pnl
    page = rows._repr_html_()
    assert "(account)" in page and "(default)" in page and "font-weight:bold" in page
    with pytest.raises(InvalidInput, match="no events in any book"):
        book_pnl(source_of(ledger, ledger_url), key("NOUSDT"))

    pd = pytest.importorskip("pandas")
    frame = to_dataframe(rows)
    assert list(frame.columns) == list(BOOK_PNL_COLUMNS)
    assert frame["book"].tolist()[:3] == ["", "alpha", "beta"]
    assert frame["book"].isna().tolist() == [False, False, False, True]  # the account's row
    assert all(isinstance(v, Decimal) for v in frame["realized_pnl"])
    assert isinstance(frame, pd.DataFrame)


def test_states_frames_and_plots_name_the_book() -> None:
    with Ledger.open("memory://", clock=lambda: T0, allocation=BOOK_POLICY) as ledger:
        with_books(ledger)
        states = replay_all(ledger)
        assert [state_record(s)["book"] for s in states.values()] == ["", "alpha", "beta"]
        assert f"{ACCOUNT}@alpha" in state_html(states[ALPHA])
        matplotlib = pytest.importorskip("matplotlib")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_position(ledger, BETA)
        assert "ADAUSDT #0" in ax.get_title(loc="left")
        assert "book beta" in ax.get_title(loc="left")
        plt.close(ax.figure)
        ax = plot_position(ledger, ACCOUNT)
        assert "book" not in ax.get_title(loc="left")
        plt.close(ax.figure)
