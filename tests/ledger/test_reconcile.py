"""Every rule and correction of docs/design.md#reconciliation, with the seed incidents' numbers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from posledger import Correction, Ledger, Outcome, ReconcilePolicy, Side, Status
from tests.conftest import T0, key
from tests.helpers import at, event_names, fill, last_event, row, snapshot

BTC, ETH, SOL = key("BTCUSDT"), key("ETHUSDT"), key("SOLUSDT")


def open_long(ledger: Ledger, k: object = BTC, size: str = "1", exec_id: str = "e1") -> None:
    ledger.record_fill(k, fill(exec_id, "buy", size, exec_time=T0))  # type: ignore[arg-type]


def test_an_agreeing_snapshot_writes_nothing(ledger: Ledger) -> None:
    open_long(ledger, BTC)
    open_long(ledger, ETH, "2", "e2")
    before = {k: ledger.history(k) for k in (BTC, ETH)}
    for minute in range(1, 6):
        report = ledger.reconcile(
            snapshot(at(minute), [row("BTCUSDT", "buy", "1"), row("ETHUSDT", "buy", "2")]),
            now=at(minute),
        )
        assert {o.outcome for o in report.outcomes} == {Outcome.AGREES}
        assert report.events_written == 0
    assert {k: ledger.history(k) for k in (BTC, ETH)} == before


def test_a_phantom_is_closed_only_after_two_confirming_snapshots(ledger: Ledger) -> None:
    open_long(ledger)
    first = ledger.reconcile(snapshot(at(5)), now=at(5))
    assert first.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    assert last_event(ledger, BTC, "ExchangeSnapshot").suspect is True
    assert [p.key for p in ledger.open_positions()] == [BTC]
    second = ledger.reconcile(snapshot(at(6)), now=at(6))
    outcome = second.outcome(BTC)
    assert outcome is not None and outcome.outcome is Outcome.CORRECTED
    assert outcome.correction is Correction.PHANTOM
    assert outcome.events == ("Reconciled", "Closed")
    reconciled = last_event(ledger, BTC, "Reconciled")
    assert (reconciled.kind, reconciled.before_size, reconciled.after_size) == ("phantom", 1, 0)
    assert reconciled.confirmations == 2
    assert last_event(ledger, BTC, "Closed").reason == "phantom"
    assert ledger.open_positions() == []
    assert ledger.position(BTC).status is Status.FLAT  # type: ignore[union-attr]


def test_reconcile_is_idempotent(ledger: Ledger) -> None:
    open_long(ledger)
    ledger.reconcile(snapshot(at(5)), now=at(5))
    again = ledger.reconcile(snapshot(at(5)), now=at(5))
    assert again.outcome(BTC).outcome is Outcome.ALREADY_SEEN  # type: ignore[union-attr]
    assert again.events_written == 0
    ledger.reconcile(snapshot(at(6)), now=at(6))
    history = ledger.history(BTC)
    assert ledger.reconcile(snapshot(at(6)), now=at(6)).events_written == 0
    assert ledger.history(BTC) == history


def test_an_older_snapshot_counts_nothing(ledger: Ledger) -> None:
    open_long(ledger)
    ledger.reconcile(snapshot(at(6)), now=at(6))
    late = ledger.reconcile(snapshot(at(5)), now=at(7))
    assert late.outcome(BTC).outcome is Outcome.ALREADY_SEEN  # type: ignore[union-attr]
    assert ledger.position(BTC).size == 1  # type: ignore[union-attr]


def test_a_snapshot_older_than_the_last_fill_is_stale(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("e1", "buy", "1", exec_time=at(10)))
    report = ledger.reconcile(snapshot(at(9)), now=at(11))
    assert report.outcome(BTC).outcome is Outcome.STALE  # type: ignore[union-attr]
    assert report.events_written == 0


def test_bybit_seq_orders_a_snapshot_against_fills(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("e1", "buy", "2", exec_time=at(0), seq=100))
    older = row("BTCUSDT", "buy", "1", seq=99)
    report = ledger.reconcile(snapshot(at(30), [older]), now=at(30))
    assert report.outcome(BTC).outcome is Outcome.STALE  # type: ignore[union-attr]
    newer = row("BTCUSDT", "buy", "1", seq=101)
    report = ledger.reconcile(snapshot(at(31), [newer]), now=at(31))
    assert report.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]


def test_an_order_in_flight_within_grace_is_left_alone(ledger: Ledger) -> None:
    open_long(ledger)
    ledger.request_exit(BTC, order_id="x1", qty=Decimal(1), at=at(10))
    report = ledger.reconcile(snapshot(at(10.5)), now=at(10.5))
    assert report.outcome(BTC).outcome is Outcome.PENDING  # type: ignore[union-attr]
    assert report.events_written == 0
    ledger.reconcile(snapshot(at(12)), now=at(12))
    report = ledger.reconcile(snapshot(at(13)), now=at(13))
    assert report.outcome(BTC).correction is Correction.PHANTOM  # type: ignore[union-attr]
    assert last_event(ledger, BTC, "Reconciled").cleared_orders == ["x1"]


def test_an_agreeing_snapshot_resets_the_count(ledger: Ledger) -> None:
    open_long(ledger)
    ledger.reconcile(snapshot(at(5)), now=at(5))
    reset = ledger.reconcile(snapshot(at(6), [row("BTCUSDT", "buy", "1")]), now=at(6))
    assert reset.outcome(BTC).outcome is Outcome.AGREES  # type: ignore[union-attr]
    assert last_event(ledger, BTC, "ExchangeSnapshot").suspect is False
    again = ledger.reconcile(snapshot(at(7)), now=at(7))
    assert again.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    assert ledger.position(BTC).size == 1  # type: ignore[union-attr]


def test_a_different_exchange_state_restarts_the_count(ledger: Ledger) -> None:
    open_long(ledger, size="5")
    ledger.reconcile(snapshot(at(5), [row("BTCUSDT", "buy", "4")]), now=at(5))
    moved = ledger.reconcile(snapshot(at(6), [row("BTCUSDT", "buy", "3")]), now=at(6))
    assert moved.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    assert last_event(ledger, BTC, "ExchangeSnapshot").confirmations == 1
    done = ledger.reconcile(snapshot(at(7), [row("BTCUSDT", "buy", "3")]), now=at(7))
    assert done.outcome(BTC).correction is Correction.STALE_QUANTITY  # type: ignore[union-attr]
    assert ledger.position(BTC).size == 3  # type: ignore[union-attr]


def test_confirmations_survive_a_restart_and_are_shared(durable_url: str) -> None:
    with Ledger.open(durable_url) as bot:
        open_long(bot)
        bot.reconcile(snapshot(at(5)), now=at(5))
    with Ledger.open(durable_url) as reconciler:
        report = reconciler.reconcile(snapshot(at(6)), now=at(6))
        assert report.outcome(BTC).correction is Correction.PHANTOM  # type: ignore[union-attr]
        assert report.outcome(BTC).outcome is Outcome.CORRECTED  # type: ignore[union-attr]


def test_confirmations_are_configurable(ledger: Ledger) -> None:
    open_long(ledger)
    strict = ReconcilePolicy(confirmations=3)
    for minute in (5, 6):
        report = ledger.reconcile(snapshot(at(minute)), now=at(minute), policy=strict)
        assert report.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    report = ledger.reconcile(snapshot(at(7)), now=at(7), policy=strict)
    assert report.outcome(BTC).outcome is Outcome.CORRECTED  # type: ignore[union-attr]
    immediate = ReconcilePolicy(confirmations=1)
    open_long(ledger, ETH, exec_id="e2")
    report = ledger.reconcile(snapshot(at(8)), now=at(8), policy=immediate)
    assert report.outcome(ETH).outcome is Outcome.CORRECTED  # type: ignore[union-attr]


def test_an_open_request_that_never_filled_is_cleared(ledger: Ledger) -> None:
    ledger.request_open(BTC, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    young = ledger.reconcile(snapshot(at(0.5)), now=at(0.5))
    assert young.outcome(BTC).outcome is Outcome.AGREES  # type: ignore[union-attr]
    assert young.events_written == 0
    ledger.reconcile(snapshot(at(2)), now=at(2))
    report = ledger.reconcile(snapshot(at(3)), now=at(3))
    outcome = report.outcome(BTC)
    assert outcome is not None and outcome.correction is Correction.UNFILLED_OPEN
    assert outcome.events == ("Reconciled", "Closed")
    assert last_event(ledger, BTC, "Closed").reason == "unfilled_open"
    state = ledger.position(BTC)
    assert state is not None and state.status is Status.FLAT and state.pending_orders == ()


def test_a_resting_limit_order_the_exchange_still_reports_is_never_cleared(
    ledger: Ledger,
) -> None:
    ledger.request_open(BTC, order_id="o1", side="buy", qty=Decimal(1), at=T0, price="30000")
    for hour in range(1, 6):
        report = ledger.reconcile(snapshot(at(60 * hour), open_order_ids=["o1"]), now=at(60 * hour))
        assert report.events_written == 0
    assert ledger.position(BTC).status is Status.PENDING  # type: ignore[union-attr]


def test_without_open_orders_a_request_is_cleared_only_after_the_ttl(ledger: Ledger) -> None:
    ledger.request_open(BTC, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    for minute in (5, 10):
        report = ledger.reconcile(snapshot(at(minute), open_order_ids=None), now=at(minute))
        assert report.events_written == 0
    ledger.reconcile(snapshot(at(16), open_order_ids=None), now=at(16))
    report = ledger.reconcile(snapshot(at(17), open_order_ids=None), now=at(17))
    assert report.outcome(BTC).correction is Correction.UNFILLED_OPEN  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("symbol", "opened", "exit_fill", "expected"),
    [
        ("AGIUSDT", "4160", "1000", "3160"),
        ("SCAUSDT", "2136.9", "100.9", "2036.0"),
        ("HNTUSDT", "60", "0.12", "59.88"),
    ],
)
def test_seed_002_missed_partial_exit_fills_become_stale_quantity(
    ledger: Ledger, symbol: str, opened: str, exit_fill: str, expected: str
) -> None:
    k = key(symbol)
    ledger.record_fill(k, fill("open", "sell", opened, "0.05", exec_time=T0))
    ledger.request_exit(k, order_id="aged-exit", qty=Decimal(opened), at=at(60), price="0.047")
    assert Decimal(opened) - Decimal(exit_fill) == Decimal(expected)
    exchange = [row(symbol, "sell", expected)]
    ledger.reconcile(snapshot(at(120), exchange, open_order_ids=["aged-exit"]), now=at(120))
    report = ledger.reconcile(
        snapshot(at(121), exchange, open_order_ids=["aged-exit"]), now=at(121)
    )
    assert report.outcome(k).correction is Correction.STALE_QUANTITY  # type: ignore[union-attr]
    reconciled = last_event(ledger, k, "Reconciled")
    assert reconciled.before_size == Decimal(opened)
    assert reconciled.after_size == Decimal(expected)
    state = ledger.position(k)
    assert state is not None and state.size == Decimal(expected)
    assert str(state.size) == expected
    assert state.pending("aged-exit") is not None


def test_a_delivered_partial_exit_fill_needs_no_correction(ledger: Ledger) -> None:
    k = key("AGIUSDT")
    ledger.record_fill(k, fill("open", "sell", "4160", "0.05", exec_time=T0))
    ledger.request_exit(k, order_id="aged-exit", qty=Decimal(4160), at=at(60))
    partial = ledger.record_fill(
        k, fill("p1", "buy", "1000", "0.04784", order_id="aged-exit", exec_time=at(100))
    )
    assert partial.event == "PartiallyFilled"
    report = ledger.reconcile(
        snapshot(at(120), [row("AGIUSDT", "sell", "3160")], open_order_ids=["aged-exit"]),
        now=at(120),
    )
    assert report.outcome(k).outcome is Outcome.AGREES  # type: ignore[union-attr]
    assert report.events_written == 0


def test_tolerance_absorbs_dust(ledger: Ledger) -> None:
    open_long(ledger, size="1.00")
    loose = ReconcilePolicy(tolerance=Decimal("0.001"))
    report = ledger.reconcile(
        snapshot(at(5), [row("BTCUSDT", "buy", "0.9995")]), now=at(5), policy=loose
    )
    assert report.outcome(BTC).outcome is Outcome.AGREES  # type: ignore[union-attr]
    report = ledger.reconcile(snapshot(at(6), [row("BTCUSDT", "buy", "0.9995")]), now=at(6))
    assert report.outcome(BTC).outcome is Outcome.SUSPECT  # type: ignore[union-attr]


def test_a_side_mismatch_closes_and_adopts_the_exchange_side(ledger: Ledger) -> None:
    open_long(ledger, size="2")
    ledger.request_exit(BTC, order_id="tp", qty=Decimal(2), at=at(1))
    exchange = [row("BTCUSDT", "sell", "3", avg_price=Decimal("99.5"))]
    ledger.reconcile(snapshot(at(5), exchange), now=at(5))
    report = ledger.reconcile(snapshot(at(6), exchange), now=at(6))
    assert report.outcome(BTC).correction is Correction.SIDE_MISMATCH  # type: ignore[union-attr]
    assert report.outcome(BTC).events == ("Reconciled", "Closed")  # type: ignore[union-attr]
    state = ledger.position(BTC)
    assert state is not None
    assert (state.side, state.size, state.avg_entry_price) == (Side.SELL, 3, Decimal("99.5"))
    assert state.lifecycle == 2 and state.pending_orders == ()
    assert last_event(ledger, BTC, "Closed").reason == "side_mismatch"


def test_a_position_opened_outside_the_bot_is_adopted(ledger: Ledger) -> None:
    exchange = [row("SOLUSDT", "sell", "7", avg_price=Decimal("180.25"), seq=42)]
    first = ledger.reconcile(snapshot(at(5), exchange), now=at(5))
    assert first.outcome(SOL).outcome is Outcome.SUSPECT  # type: ignore[union-attr]
    second = ledger.reconcile(snapshot(at(6), exchange), now=at(6))
    assert second.outcome(SOL).correction is Correction.ADOPTED  # type: ignore[union-attr]
    state = ledger.position(SOL)
    assert state is not None
    assert (state.status, state.side, state.size) == (Status.OPEN, Side.SELL, 7)
    assert state.avg_entry_price == Decimal("180.25") and state.lifecycle == 1
    assert event_names(ledger, SOL) == ["KeyRegistered", "ExchangeSnapshot", "Reconciled"]


def test_flat_rows_of_unknown_keys_write_nothing(ledger: Ledger) -> None:
    report = ledger.reconcile(snapshot(at(5), [row("XRPUSDT", None, "0")]), now=at(5))
    assert report.outcomes == ()
    assert ledger.keys() == []


def test_keys_outside_the_coverage_are_never_judged(ledger: Ledger) -> None:
    open_long(ledger, BTC)
    open_long(ledger, ETH, exec_id="e2")
    other_account = key("BTCUSDT", account="sub")
    open_long(ledger, other_account, exec_id="e3")
    before = {k: ledger.history(k) for k in (BTC, ETH, other_account)}
    for minute in (5, 6, 7):
        report = ledger.reconcile(snapshot(at(minute), symbols=["ETHUSDT"]), now=at(minute))
        assert [o.key for o in report.outcomes] == [ETH]
    assert ledger.history(BTC) == before[BTC]
    assert ledger.history(other_account) == before[other_account]
    assert ledger.position(ETH).status is Status.FLAT  # type: ignore[union-attr]
    other_category = snapshot(at(8), category="inverse")
    assert ledger.reconcile(other_category, now=at(8)).outcomes == ()


def test_hedge_legs_are_judged_separately(ledger: Ledger) -> None:
    long_leg, short_leg = key(idx=1), key(idx=2)
    ledger.record_fill(long_leg, fill("e1", "buy", "2", idx=1))
    ledger.record_fill(short_leg, fill("e2", "sell", "1", idx=2))
    exchange = [row("BTCUSDT", "buy", "2", idx=1)]
    ledger.reconcile(snapshot(at(5), exchange), now=at(5))
    report = ledger.reconcile(snapshot(at(6), exchange), now=at(6))
    assert report.outcome(long_leg).outcome is Outcome.AGREES  # type: ignore[union-attr]
    assert report.outcome(short_leg).correction is Correction.PHANTOM  # type: ignore[union-attr]
    assert [p.key for p in ledger.open_positions()] == [long_leg]


def test_heartbeat_records_agreeing_snapshots_when_configured(ledger: Ledger) -> None:
    open_long(ledger)
    beat = ReconcilePolicy(heartbeat=timedelta(minutes=10))
    agreeing = [row("BTCUSDT", "buy", "1")]
    assert ledger.reconcile(snapshot(at(5), agreeing), now=at(5), policy=beat).events_written == 1
    assert ledger.reconcile(snapshot(at(9), agreeing), now=at(9), policy=beat).events_written == 0
    assert ledger.reconcile(snapshot(at(15), agreeing), now=at(15), policy=beat).events_written == 1


def test_a_decision_is_recomputed_when_a_fill_lands_meanwhile(
    durable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger.open(durable_url) as reconciler, Ledger.open(durable_url) as bot:
        open_long(reconciler, size="2")
        reconciler.reconcile(snapshot(at(5), [row("BTCUSDT", "buy", "1")]), now=at(5))
        bot.record_fill(BTC, fill("e2", "sell", "1", exec_time=at(5.5)))
        monkeypatch.setattr(reconciler._cache, "catch_up", lambda: None)
        report = reconciler.reconcile(snapshot(at(6), [row("BTCUSDT", "buy", "1")]), now=at(6))
        assert report.outcome(BTC).outcome is Outcome.AGREES  # type: ignore[union-attr]
        assert "Reconciled" not in event_names(reconciler, BTC)
        assert reconciler.position(BTC).size == 1  # type: ignore[union-attr]


def test_a_late_fill_the_phantom_snapshot_already_reflected_is_absorbed(ledger: Ledger) -> None:
    ledger.record_fill(BTC, fill("open", "buy", "1", exec_time=T0, seq=10))
    ledger.reconcile(snapshot(at(5)), now=at(5))
    ledger.reconcile(snapshot(at(6)), now=at(6))
    late_tp = ledger.record_fill(BTC, fill("tp", "sell", "1", "110", exec_time=at(3), fee="0.1"))
    assert late_tp.event == "Filled" and not late_tp.duplicate
    assert last_event(ledger, BTC, "Filled").absorbed is True
    state = ledger.position(BTC)
    assert state is not None and state.status is Status.FLAT and state.side is None
    assert state.fees == Decimal("0.1")
    fresh = ledger.record_fill(BTC, fill("next", "sell", "2", exec_time=at(7)))
    assert fresh.event == "Filled"
    assert ledger.position(BTC).signed_size == Decimal(-2)  # type: ignore[union-attr]


def test_seq_decides_absorption_when_both_sides_have_it(ledger: Ledger) -> None:
    k = key("AGIUSDT")
    ledger.record_fill(k, fill("open", "sell", "4160", "0.05", exec_time=T0, seq=100))
    ledger.request_exit(k, order_id="aged-exit", qty=Decimal(4160), at=at(1))
    exchange = [row("AGIUSDT", "sell", "3160", seq=150)]
    for minute in (10, 11):
        ledger.reconcile(
            snapshot(at(minute), exchange, open_order_ids=["aged-exit"]), now=at(minute)
        )
    assert ledger.position(k).size == 3160  # type: ignore[union-attr]
    ledger.record_fill(k, fill("p1", "buy", "1000", order_id="aged-exit", exec_time=at(9), seq=140))
    assert ledger.position(k).size == 3160  # type: ignore[union-attr]
    ledger.record_fill(k, fill("p2", "buy", "160", order_id="aged-exit", exec_time=at(9), seq=160))
    state = ledger.position(k)
    assert state is not None and state.size == 3000
    assert state.pending("aged-exit").filled == 1160  # type: ignore[union-attr]


def test_snapshots_older_than_a_correction_cannot_undo_it(ledger: Ledger) -> None:
    open_long(ledger, size="0.5")
    ledger.reconcile(snapshot(at(60)), now=at(60))
    ledger.reconcile(snapshot(at(61)), now=at(61))
    assert ledger.open_positions() == []
    history = ledger.history(BTC)
    for minute in (30, 31):
        late = ledger.reconcile(snapshot(at(minute), [row("BTCUSDT", "buy", "0.5")]), now=at(62))
        assert late.outcome(BTC).outcome is Outcome.ALREADY_SEEN  # type: ignore[union-attr]
    assert ledger.history(BTC) == history
    assert ledger.open_positions() == []


def test_a_snapshot_cannot_judge_an_order_requested_after_it(ledger: Ledger) -> None:
    no_grace = ReconcilePolicy(grace=timedelta(0), confirmations=1)
    ledger.request_open(BTC, order_id="o1", side="buy", qty=Decimal(1), at=at(2))
    report = ledger.reconcile(snapshot(at(0)), now=at(3), policy=no_grace)
    assert report.events_written == 0
    assert ledger.position(BTC).pending("o1") is not None  # type: ignore[union-attr]
    report = ledger.reconcile(snapshot(at(4)), now=at(4), policy=no_grace)
    assert report.outcome(BTC).correction is Correction.UNFILLED_OPEN  # type: ignore[union-attr]


def test_an_order_the_snapshot_lists_was_seen_even_at_the_same_instant(ledger: Ledger) -> None:
    no_grace = ReconcilePolicy(grace=timedelta(0))
    ledger.request_open(BTC, order_id="o3", side="buy", qty=Decimal(1), at=at(3))
    exchange = [row("BTCUSDT", "buy", "0.1")]
    for minute in (3, 4):
        report = ledger.reconcile(
            snapshot(at(minute), exchange, open_order_ids=["o3"]), now=at(minute), policy=no_grace
        )
    assert report.outcome(BTC).correction is Correction.ADOPTED  # type: ignore[union-attr]
    assert ledger.position(BTC).size == Decimal("0.1")  # type: ignore[union-attr]
