"""History rows: every event of a key explained, from a ledger, a URL or the events."""

from __future__ import annotations

from decimal import Decimal

from posledger import Ledger, PositionState
from posledger.audit import HistoryRow, history_rows, history_stream
from posledger.core.events import KeyRegistered, PositionEvent
from posledger.core.position import project
from tests.audit.stores import BTC, ETH, D, build, source_of, varied_history
from tests.conftest import T0
from tests.helpers import at


def test_history_rows_explain_every_event_with_exact_sizes() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        varied_history(ledger)
        rows = history_rows(ledger, BTC)
    got = [
        (r.version, r.event, r.lifecycle, r.signed_size_before, r.signed_size_after, r.reason)
        for r in rows
    ]
    assert got == [
        (1, "KeyRegistered", 0, 0, 0, None),
        (2, "OpenRequested", 1, 0, 0, None),
        (3, "PartiallyFilled", 1, 0, 1, "trade"),
        (4, "Filled", 1, 1, 3, "trade"),
        (5, "ExitRequested", 1, 3, 3, None),
        (6, "Filled", 1, 3, 2, "trade"),
        (7, "Filled", 2, 2, -3, "trade"),  # the flip: lifecycle 1 ends, 2 starts
        (8, "Closed", 1, -3, -3, "filled"),
        (9, "FundingSettled", 2, -3, -3, "funding"),
        (10, "ExchangeSnapshot", 2, -3, -3, "suspect"),
        (11, "Reconciled", 2, -3, -2, "stale_quantity"),
        (12, "ExchangeSnapshot", 2, -2, -2, "suspect"),
        (13, "Reconciled", 2, -2, 0, "phantom"),
        (14, "Closed", 2, 0, 0, "phantom"),
        (15, "OpenRequested", 3, 0, 0, None),
        (16, "OrderEnded", 3, 0, 0, "Cancelled"),
        (17, "Closed", 3, 0, 0, "order_ended"),
    ]
    by_version = {r.version: r for r in rows}
    assert all(isinstance(r.size_after, Decimal) for r in rows)
    partial = by_version[3]
    assert (partial.side, partial.qty, partial.price, partial.fee) == ("buy", 1, 100, D("0.1"))
    assert (partial.exec_id, partial.order_id, partial.status) == ("e1", "o1", "open")
    assert by_version[6].reduce_only and by_version[6].side_before == "buy"
    flip = by_version[7]
    assert (flip.side_before, flip.size_before, flip.side_after, flip.size_after) == (
        "buy",
        2,
        "sell",
        3,
    )
    assert flip.size_change == -5
    stale = by_version[11]
    assert stale.evidence is not None
    assert (stale.evidence.taken_at, stale.evidence.side, stale.evidence.size) == (
        at(11),
        "sell",
        2,
    )
    assert (stale.evidence.seq, stale.evidence.confirmations) == (11, 2)
    suspect = by_version[12].evidence
    assert suspect is not None and (suspect.size, suspect.side, suspect.confirmations) == (
        0,
        None,
        1,
    )
    assert by_version[13].status == "flat" and by_version[14].lifecycle == 2
    assert [r.time for r in rows][-1] == at(15)
    assert by_version[9].realized_pnl == by_version[8].realized_pnl - D("0.03")


def test_history_rows_from_a_url_or_from_events_equal_the_ledgers(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0) as ledger:
        build(ledger)
        from_ledger = history_rows(ledger, BTC)
        events = ledger.history(BTC) + ledger.history(ETH)
    assert history_rows(durable_url, BTC) == from_ledger
    assert history_rows(events, BTC) == from_ledger
    assert history_rows(events[: len(from_ledger)]) == from_ledger


def test_history_stream_equals_history_rows_per_key(store: Ledger, ledger_url: str) -> None:
    streamed = list(history_stream(source_of(store, ledger_url), page_size=4))
    assert len(streamed) == sum(s.version for s in store.positions())
    for state in store.positions():
        assert [r for r in streamed if r.key == state.key] == history_rows(store, state.key)


def test_the_history_helpers_agree_with_project() -> None:
    """Rows are folded with evolve: the last row's sizes are the projected state's."""
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        build(ledger)
        for current in ledger.positions():
            events: list[PositionEvent] = ledger.history(current.key)
            state = project(None, events)
            rows: list[HistoryRow] = history_rows(events)
            assert state is not None and isinstance(state, PositionState)
            assert (rows[-1].side_after, rows[-1].size_after) == (
                state.side.value if state.side else None,
                state.size,
            )
            assert isinstance(events[0], KeyRegistered)
