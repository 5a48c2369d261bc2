"""The scripted replay of both seed incidents (``posledger.demo``): exact events and numbers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from posledger import InvalidInput, Ledger, Outcome, PositionState
from posledger.core.events import Closed, ExchangeSnapshot, PartiallyFilled, Reconciled
from posledger.demo import (
    AGI,
    BTC,
    ETH,
    HNT,
    SCA,
    SOL,
    Chapter,
    holding,
    no_wall_clock,
    play,
    run_demo,
)


@pytest.fixture(scope="module")
def chapters() -> list[Chapter]:
    return run_demo()


def chapter(chapters: list[Chapter], title_start: str) -> Chapter:
    (found,) = [c for c in chapters if c.title.startswith(title_start)]
    return found


def rows(item: Chapter) -> list[tuple[str, str, str]]:
    return [(w.name, w.symbol, w.label) for w in item.events]


def open_symbols(states: tuple[PositionState, ...]) -> list[str]:
    return [state.key.symbol for state in states]


# Every event each chapter writes, in order: (event, symbol, kind/reason/label).
EXPECTED_EVENTS: dict[int, list[tuple[str, str, str]]] = {
    1: [
        ("OpenRequested", "ETHUSDT", "open"),
        ("Filled", "ETHUSDT", "trade"),
        ("ExitRequested", "ETHUSDT", "reduce-only"),
        ("OpenRequested", "SOLUSDT", "open"),
        ("Filled", "SOLUSDT", "trade"),
        ("ExitRequested", "SOLUSDT", "reduce-only"),
    ],
    2: [],
    3: [
        ("ExchangeSnapshot", "ETHUSDT", "suspect"),
        ("ExchangeSnapshot", "SOLUSDT", "suspect"),
    ],
    4: [
        ("Reconciled", "ETHUSDT", "phantom"),
        ("Closed", "ETHUSDT", "phantom"),
        ("Reconciled", "SOLUSDT", "phantom"),
        ("Closed", "SOLUSDT", "phantom"),
    ],
    5: [
        ("OpenRequested", "BTCUSDT", "open"),
        ("ExchangeSnapshot", "BTCUSDT", "suspect"),
        ("Reconciled", "BTCUSDT", "unfilled_open"),
        ("Closed", "BTCUSDT", "unfilled_open"),
    ],
    6: [
        ("OpenRequested", "AGIUSDT", "open"),
        ("Filled", "AGIUSDT", "trade"),
        ("OpenRequested", "SCAUSDT", "open"),
        ("Filled", "SCAUSDT", "trade"),
        ("OpenRequested", "HNTUSDT", "open"),
        ("Filled", "HNTUSDT", "trade"),
        ("ExitRequested", "AGIUSDT", "reduce-only"),
        ("ExitRequested", "SCAUSDT", "reduce-only"),
        ("ExitRequested", "HNTUSDT", "reduce-only"),
    ],
    7: [("PartiallyFilled", "SCAUSDT", "trade")],
    8: [
        ("ExchangeSnapshot", "AGIUSDT", "suspect"),
        ("ExchangeSnapshot", "HNTUSDT", "suspect"),
    ],
    9: [
        ("Reconciled", "AGIUSDT", "stale_quantity"),
        ("Reconciled", "HNTUSDT", "stale_quantity"),
    ],
    10: [
        ("Filled", "AGIUSDT", "trade"),
        ("Closed", "AGIUSDT", "filled"),
        ("Filled", "SCAUSDT", "trade"),
        ("Closed", "SCAUSDT", "filled"),
        ("Filled", "HNTUSDT", "trade"),
        ("Closed", "HNTUSDT", "filled"),
    ],
}

# open_positions() before and after each chapter.
EXPECTED_OPEN: dict[int, tuple[list[str], list[str]]] = {
    1: ([], ["ETHUSDT", "SOLUSDT"]),
    2: (["ETHUSDT", "SOLUSDT"], ["ETHUSDT", "SOLUSDT"]),
    3: (["ETHUSDT", "SOLUSDT"], ["ETHUSDT", "SOLUSDT"]),
    4: (["ETHUSDT", "SOLUSDT"], []),
    5: ([], []),
    6: ([], ["AGIUSDT", "HNTUSDT", "SCAUSDT"]),
    7: (["AGIUSDT", "HNTUSDT", "SCAUSDT"], ["AGIUSDT", "HNTUSDT", "SCAUSDT"]),
    8: (["AGIUSDT", "HNTUSDT", "SCAUSDT"], ["AGIUSDT", "HNTUSDT", "SCAUSDT"]),
    9: (["AGIUSDT", "HNTUSDT", "SCAUSDT"], ["AGIUSDT", "HNTUSDT", "SCAUSDT"]),
    10: (["AGIUSDT", "HNTUSDT", "SCAUSDT"], []),
}


def test_the_chapters_are_numbered_and_tell_both_seeds_in_order(chapters: list[Chapter]) -> None:
    assert [c.number for c in chapters] == list(range(1, 11))
    assert [c.seed for c in chapters] == ["000"] * 5 + ["002"] * 5
    assert all(c.title and c.narrative and c.commands for c in chapters)


@pytest.mark.parametrize("number", sorted(EXPECTED_EVENTS))
def test_each_chapter_writes_exactly_the_expected_events(
    chapters: list[Chapter], number: int
) -> None:
    assert rows(chapters[number - 1]) == EXPECTED_EVENTS[number]


@pytest.mark.parametrize("number", sorted(EXPECTED_OPEN))
def test_open_positions_before_and_after_each_chapter(chapters: list[Chapter], number: int) -> None:
    item = chapters[number - 1]
    before, after = EXPECTED_OPEN[number]
    assert (open_symbols(item.open_before), open_symbols(item.open_after)) == (before, after)


def test_a_failed_read_is_not_a_snapshot_and_changes_nothing(chapters: list[Chapter]) -> None:
    item = chapter(chapters, "TP/SL fill on Bybit unseen")
    assert item.events == () and item.reports == ()
    assert item.open_before == item.open_after  # same states, same versions
    failed = [c for c in item.commands if "ExchangeUnavailable" in c.result]
    assert len(failed) == 1 and "ledger unchanged" in failed[0].result


def test_phantoms_are_only_suspect_after_the_first_flat_snapshot(chapters: list[Chapter]) -> None:
    item = chapter(chapters, "First complete snapshot")
    (report,) = item.reports
    assert {o.key: o.outcome for o in report.outcomes} == {
        ETH: Outcome.SUSPECT,
        SOL: Outcome.SUSPECT,
    }
    for key in (ETH, SOL):
        (event,) = item.events_for(key)
        assert isinstance(event, ExchangeSnapshot)
        assert (event.suspect, event.confirmations, event.size) == (True, 1, Decimal(0))


def test_the_second_flat_snapshot_closes_both_phantoms(chapters: list[Chapter]) -> None:
    item = chapter(chapters, "Second snapshot confirms: phantoms")
    (report,) = item.reports
    assert {o.key: (o.outcome, o.correction) for o in report.outcomes} == {
        ETH: (Outcome.CORRECTED, "phantom"),
        SOL: (Outcome.CORRECTED, "phantom"),
    }
    for key, size, exit_order in ((ETH, "0.5", "eth-tp"), (SOL, "12", "sol-sl")):
        reconciled, closed = item.events_for(key)
        assert isinstance(reconciled, Reconciled) and isinstance(closed, Closed)
        assert reconciled.kind == "phantom" and reconciled.confirmations == 2
        assert (reconciled.before_side, reconciled.before_size) == ("buy", Decimal(size))
        assert (reconciled.after_side, reconciled.after_size) == (None, Decimal(0))
        assert reconciled.cleared_orders == [exit_order]
        assert closed.reason == "phantom" and closed.lifecycle == 1
    assert item.open_after == ()


def test_an_open_that_never_fills_ends_as_unfilled_open_after_grace(
    chapters: list[Chapter],
) -> None:
    item = chapter(chapters, "A failed open")
    within_grace, first, second = (report.outcome(BTC) for report in item.reports)
    assert within_grace is not None and within_grace.outcome is Outcome.AGREES
    assert within_grace.events == ()
    assert first is not None and (first.outcome, first.correction) == (
        Outcome.SUSPECT,
        "unfilled_open",
    )
    assert second is not None and (second.outcome, second.correction) == (
        Outcome.CORRECTED,
        "unfilled_open",
    )
    reconciled, closed = item.events_for(BTC)[-2:]
    assert isinstance(reconciled, Reconciled) and isinstance(closed, Closed)
    assert reconciled.cleared_orders == ["btc-open"] and closed.reason == "unfilled_open"
    assert item.events[-1].after.status == "flat"
    # the keys already flat agree and write nothing
    for report in item.reports:
        for key in (ETH, SOL):
            agreed = report.outcome(key)
            assert agreed is not None and agreed.outcome is Outcome.AGREES and not agreed.events


def test_the_delivered_partial_fill_is_exact_and_reconciliation_agrees(
    chapters: list[Chapter],
) -> None:
    assert Decimal("2136.9") - Decimal("100.9") == Decimal("2036.0")
    item = chapter(chapters, "Partial exit fills")
    (written,) = item.events
    assert isinstance(written.event, PartiallyFilled)
    assert written.event.qty == Decimal("100.9") and written.event.reduce_only
    assert (written.before.size, written.after.size) == (Decimal("2136.9"), Decimal("2036.0"))
    assert str(written.after.size) == "2036.0"
    assert written.after.pending("sca-exit") is not None  # the exit is still working
    for later in ("19:24:49", "Second snapshot confirms: stale"):
        (report,) = chapter(chapters, later).reports
        agreed = report.outcome(SCA)
        assert agreed is not None and agreed.outcome is Outcome.AGREES and agreed.events == ()
        assert chapter(chapters, later).events_for(SCA) == []


def test_missed_partial_fills_are_suspect_then_stale_quantity(chapters: list[Chapter]) -> None:
    first = chapter(chapters, "19:24:49")
    for key, shown in ((AGI, "3160"), (HNT, "59.88")):
        (event,) = first.events_for(key)
        assert isinstance(event, ExchangeSnapshot)
        assert (event.suspect, event.size) == (True, Decimal(shown))
    confirm = chapter(chapters, "Second snapshot confirms: stale")
    for key, before, after in ((AGI, "4160", "3160"), (HNT, "60", "59.88")):
        (event,) = confirm.events_for(key)
        assert isinstance(event, Reconciled)
        assert event.kind == "stale_quantity" and event.confirmations == 2
        assert (event.before_side, event.after_side) == ("sell", "sell")
        assert (event.before_size, event.after_size) == (Decimal(before), Decimal(after))
        assert str(event.after_size) == after
    sizes = {s.key: s.size for s in confirm.open_after}
    assert sizes == {AGI: Decimal("3160"), SCA: Decimal("2036.0"), HNT: Decimal("59.88")}


def test_the_exits_complete_and_every_key_ends_flat(chapters: list[Chapter]) -> None:
    item = chapter(chapters, "The exits complete")
    closed = {w.key: w.event for w in item.events if isinstance(w.event, Closed)}
    assert set(closed) == {AGI, SCA, HNT}
    assert all(isinstance(e, Closed) and e.reason == "filled" for e in closed.values())
    (report,) = item.reports
    assert report.events_written == 0
    assert [holding(w.after) for w in item.events] == ["flat"] * 6


def test_the_demo_is_deterministic_and_the_same_on_sqlite(tmp_path: Path) -> None:
    def story(items: list[Chapter]) -> list[object]:
        return [
            (
                c.title,
                [(w.name, w.symbol, w.label, w.change, w.why) for w in c.events],
                [(x.at, x.call, x.result) for x in c.commands],
            )
            for c in items
        ]

    in_memory = story(run_demo())
    assert story(run_demo()) == in_memory
    assert story(run_demo(f"sqlite:///{tmp_path / 'demo.db'}")) == in_memory


def test_the_demo_refuses_a_ledger_that_is_not_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    run_demo(url)
    with Ledger.open(url, clock=no_wall_clock) as ledger, pytest.raises(InvalidInput):
        play(ledger)
