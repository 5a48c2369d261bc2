"""The execution rules (docs/design.md#executions) and lifecycles (docs/design.md#lifecycles)."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest

from posledger import ExecutionConflict, Ledger, Side, Status
from tests.conftest import T0, key
from tests.helpers import at, event_names, fill, last_event

K = key()


def test_fills_build_a_position_with_average_cost(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1", "100", fee="0.1"))
    state = ledger.record_fills(K, [fill("e2", "buy", "1", "200", fee="0.2")]).position
    assert (state.side, state.size, state.avg_entry_price) == (Side.BUY, Decimal(2), Decimal(150))
    ledger.record_fill(K, fill("e3", "sell", "0.5", "180", fee="0.05"))
    state = ledger.position(K)
    assert state is not None
    assert state.size == Decimal("1.5")
    assert state.avg_entry_price == Decimal(150)
    assert state.realized_pnl == Decimal(15)
    assert state.fees == Decimal("0.35")
    assert state.status is Status.OPEN and state.lifecycle == 1


def test_short_pnl_has_the_right_sign(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "sell", "2", "100"))
    ledger.record_fill(K, fill("e2", "buy", "2", "90"))
    state = ledger.position(K)
    assert state is not None and state.realized_pnl == Decimal(20)
    assert state.status is Status.FLAT
    assert event_names(ledger, K)[-1] == "Closed"


def test_crossing_zero_closes_the_lifecycle_and_opens_the_next(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1", "100", fee="0.3"))
    ledger.record_fill(K, fill("e2", "sell", "3", "110", fee="0.3"))
    state = ledger.position(K)
    assert state is not None
    assert (state.side, state.size, state.avg_entry_price) == (Side.SELL, Decimal(2), Decimal(110))
    assert state.lifecycle == 2
    assert state.realized_pnl == Decimal(10)
    assert state.fees == Decimal("0.6")
    assert state.lifecycle_realized_pnl == 0
    assert state.lifecycle_fees == Decimal("0.2")
    assert event_names(ledger, K)[-2:] == ["Filled", "Closed"]
    closed = last_event(ledger, K, "Closed")
    assert (closed.reason, closed.lifecycle) == ("filled", 1)
    assert closed.realized_pnl == Decimal(10)
    assert closed.fees == Decimal("0.4")


def test_partial_and_full_fills_of_a_requested_order(ledger: Ledger) -> None:
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(3), at=T0)
    assert ledger.position(K).status is Status.PENDING  # type: ignore[union-attr]
    first = ledger.record_fill(K, fill("e1", "buy", "1", order_id="o1"))
    assert first.event == "PartiallyFilled"
    state = ledger.position(K)
    assert state is not None and state.pending("o1").filled == 1  # type: ignore[union-attr]
    assert ledger.record_fill(K, fill("e2", "buy", "2", order_id="o1")).event == "Filled"
    state = ledger.position(K)
    assert state is not None and state.pending_orders == () and state.size == 3


def test_leaves_qty_from_the_venue_decides_filled(ledger: Ledger) -> None:
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(3), at=T0)
    result = ledger.record_fill(K, fill("e1", "buy", "1", order_id="o1", leaves_qty="0"))
    assert result.event == "Filled"
    assert ledger.position(K).pending_orders == ()  # type: ignore[union-attr]


def test_a_duplicate_exec_id_is_a_no_op(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    again = ledger.record_fill(K, fill("e1", "buy", "1.000"))
    assert again.duplicate and again.event is None
    assert ledger.position(K).size == 1  # type: ignore[union-attr]
    assert event_names(ledger, K).count("Filled") == 1


def test_duplicates_inside_one_batch_apply_once(ledger: Ledger) -> None:
    result = ledger.record_fills(K, [fill("e1", "buy", "1"), fill("e1", "buy", "1")])
    assert ledger.position(K).size == 1  # type: ignore[union-attr]
    assert [f.duplicate for f in result.fills] == [False]


@pytest.mark.parametrize(
    "changed",
    [
        {"qty": "2"},
        {"price": "101"},
        {"fee": "0.5"},
        {"side": "sell"},
        {"order_id": "other"},
        {"kind": "adl"},
    ],
)
def test_same_exec_id_with_another_payload_is_a_conflict(
    ledger: Ledger, changed: dict[str, str]
) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    fields = {"side": "buy", "qty": "1"} | changed
    with pytest.raises(ExecutionConflict) as caught:
        ledger.record_fill(
            K,
            fill(
                "e1",
                fields.pop("side"),
                fields.pop("qty"),
                fields.pop("price", "100"),
                **fields,
            ),
        )
    assert caught.value.exec_id == "e1"
    assert ledger.position(K).size == 1  # type: ignore[union-attr]


def test_a_conflict_inside_one_batch_writes_nothing(ledger: Ledger) -> None:
    with pytest.raises(ExecutionConflict):
        ledger.record_fills(K, [fill("e1", "buy", "1"), fill("e1", "buy", "2")])
    assert ledger.history(K) == []


def test_same_exec_id_on_another_key_is_a_conflict(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    with pytest.raises(ExecutionConflict):
        ledger.record_fill(key("ETHUSDT"), fill("e1", "buy", "1"))


def test_dedup_is_durable_across_restarts_and_lifecycles(durable_url: str) -> None:
    with Ledger.open(durable_url) as first:
        first.record_fill(K, fill("e1", "buy", "1"))
        first.record_fill(K, fill("e2", "sell", "1"))
        first.record_fill(K, fill("e3", "buy", "2"))
    with Ledger.open(durable_url) as restarted:
        replay = restarted.record_fills(
            K, [fill("e1", "buy", "1"), fill("e2", "sell", "1"), fill("e3", "buy", "2")]
        )
        assert all(f.duplicate for f in replay.fills)
        state = restarted.position(K)
        assert state is not None and (state.size, state.lifecycle) == (2, 2)
        with pytest.raises(ExecutionConflict):
            restarted.record_fill(K, fill("e1", "buy", "5"))
        mixed = restarted.record_fills(K, [fill("e3", "buy", "2"), fill("e4", "buy", "1")])
        assert [f.duplicate for f in mixed.fills] == [True, False]
        assert mixed.position.size == 3


def test_dedup_is_shared_by_two_ledger_objects_on_one_store(durable_url: str) -> None:
    with Ledger.open(durable_url) as bot, Ledger.open(durable_url) as backfill:
        bot.record_fill(K, fill("e1", "buy", "1"))
        result = backfill.record_fills(K, [fill("e1", "buy", "1"), fill("e2", "buy", "1")])
        assert [f.duplicate for f in result.fills] == [True, False]
        assert bot.record_fill(K, fill("e2", "buy", "1")).duplicate
        assert bot.position(K).size == 2  # type: ignore[union-attr]


def test_position_state_stays_bounded(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e0", "buy", "1"))
    small = ledger.position(K)
    for n in range(1, 301):
        ledger.record_fill(K, fill(f"e{n}", "buy" if n % 2 else "sell", "1"))
    large = ledger.position(K)
    assert small is not None and large is not None
    for field in attrs.fields(type(large)):
        value = getattr(large, field.name)
        if isinstance(value, tuple):
            assert len(value) == len(getattr(small, field.name)), field.name


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("liquidation", "liquidated"),
        ("adl", "adl"),
        ("delivery", "delivered"),
        ("settle", "settled"),
    ],
)
def test_non_trade_executions_change_size_and_name_the_close(
    ledger: Ledger, kind: str, reason: str
) -> None:
    ledger.record_fill(K, fill("e1", "buy", "2"))
    ledger.record_fill(K, fill("e2", "sell", "2", kind=kind))
    assert ledger.position(K).status is Status.FLAT  # type: ignore[union-attr]
    assert last_event(ledger, K, "Closed").reason == reason


def test_funding_never_changes_size(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "2", "100"))
    result = ledger.record_fill(K, fill("f1", "sell", "2", "105", fee="0.25", kind="funding"))
    assert result.event == "FundingSettled"
    state = ledger.position(K)
    assert state is not None
    assert state.size == 2 and state.side is Side.BUY
    assert state.funding == Decimal("0.25")
    assert state.realized_pnl == Decimal("-0.25")
    assert state.fees == 0


def test_an_overfill_of_an_order_is_applied_and_surfaced(ledger: Ledger) -> None:
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    result = ledger.record_fill(K, fill("e1", "buy", "1.5", order_id="o1"))
    assert result.overfill == Decimal("0.5")
    state = ledger.position(K)
    assert state is not None and state.size == Decimal("1.5") and state.overfills == 1
    assert last_event(ledger, K, "Filled").overfill == Decimal("0.5")


def test_a_reduce_only_fill_never_flips_and_its_excess_is_recorded(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    ledger.request_exit(K, order_id="x1", qty=Decimal(3), at=T0)
    result = ledger.record_fill(K, fill("e2", "sell", "3", order_id="x1"))
    assert result.overfill == Decimal(2)
    state = ledger.position(K)
    assert state is not None and state.size == 0 and state.status is Status.FLAT
    assert state.overfills == 1


def test_hedge_legs_are_separate_and_the_other_side_only_reduces(ledger: Ledger) -> None:
    long_leg, short_leg = key(idx=1), key(idx=2)
    ledger.record_fill(long_leg, fill("e1", "buy", "2", idx=1))
    ledger.record_fill(short_leg, fill("e2", "sell", "3", idx=2))
    ledger.record_fill(long_leg, fill("e3", "sell", "5", idx=1))
    long_state, short_state = ledger.position(long_leg), ledger.position(short_leg)
    assert long_state is not None and short_state is not None
    assert long_state.size == 0 and long_state.overfills == 1
    assert (short_state.side, short_state.size) == (Side.SELL, 3)


def test_an_exit_clears_when_the_position_closes(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    ledger.request_exit(K, order_id="tp", qty=Decimal(1), at=T0)
    ledger.request_exit(K, order_id="sl", qty=Decimal(1), at=T0)
    ledger.record_fill(K, fill("e2", "sell", "1", order_id="tp"))
    state = ledger.position(K)
    assert state is not None and state.pending_orders == () and state.status is Status.FLAT
    assert last_event(ledger, K, "Closed").cleared_orders == ["sl"]


def test_order_end_of_a_never_filled_request_closes_its_lifecycle(ledger: Ledger) -> None:
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    ledger.record_order_end(K, order_id="o1", status="Cancelled", at=at(1))
    state = ledger.position(K)
    assert state is not None and state.status is Status.FLAT and state.lifecycle == 1
    assert event_names(ledger, K)[-2:] == ["OrderEnded", "Closed"]
    version = state.version
    ledger.record_order_end(K, order_id="o1", status="Cancelled", at=at(2))
    ledger.record_order_end(K, order_id="unknown", status="Cancelled", at=at(2))
    assert ledger.position(K).version == version  # type: ignore[union-attr]


def test_repeating_an_identical_request_is_a_no_op(ledger: Ledger) -> None:
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(1), at=T0)
    assert event_names(ledger, K) == ["KeyRegistered", "OpenRequested"]


def test_time_travel_by_version_and_time(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1", exec_time=at(1)))
    ledger.record_fill(K, fill("e2", "buy", "2", exec_time=at(2)))
    ledger.record_fill(K, fill("e3", "sell", "3", exec_time=at(3)))
    assert ledger.position(K, version=2).size == 1  # type: ignore[union-attr]
    assert ledger.position(K, version=3).size == 3  # type: ignore[union-attr]
    assert ledger.position(K, at=at(2.5)).size == 3  # type: ignore[union-attr]
    assert ledger.position(K, at=at(0)) is None
    assert ledger.position(K).status is Status.FLAT  # type: ignore[union-attr]


def test_a_flip_drops_the_exits_of_the_old_side(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1"))
    ledger.request_exit(K, order_id="tp", qty=Decimal(1), at=T0)
    ledger.record_fill(K, fill("e2", "sell", "3"))
    state = ledger.position(K)
    assert state is not None and state.side is Side.SELL and state.pending_orders == ()
    assert last_event(ledger, K, "Closed").cleared_orders == ["tp"]


def test_a_late_older_fill_never_lowers_the_last_seq(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e2", "buy", "1", seq=200))
    ledger.record_fill(K, fill("e1", "buy", "1", seq=100))
    assert ledger.position(K).last_fill_seq == 200  # type: ignore[union-attr]


def test_retries_that_run_out_raise_a_clear_concurrency_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eventsourcing.persistence import IntegrityError

    from posledger import ConcurrencyError

    with Ledger.open("memory://", timeout=0.2, max_retries=3) as ledger:
        ledger.record_fill(K, fill("e1", "buy", "1"))

        def always_conflicting(*_: object, **__: object) -> None:
            raise IntegrityError("another writer got there first")

        monkeypatch.setattr(ledger.application.recorder, "insert_events", always_conflicting)
        with pytest.raises(ConcurrencyError, match="gave up after"):
            ledger.record_fill(K, fill("e2", "buy", "1"))
        assert ledger.conflict_retries >= 3
        monkeypatch.undo()
        assert ledger.position(K).size == 1  # type: ignore[union-attr]


def test_realized_pnl_is_exact_when_a_lifecycle_closes(ledger: Ledger) -> None:
    ledger.record_fill(K, fill("e1", "buy", "1", "100"))
    ledger.record_fill(K, fill("e2", "buy", "2", "101"))
    ledger.record_fill(K, fill("e3", "sell", "1", "104"))
    ledger.record_fill(K, fill("e4", "sell", "2", "104"))
    state = ledger.position(K)
    assert state is not None and state.realized_pnl == Decimal(10)
    assert last_event(ledger, K, "Closed").realized_pnl == Decimal(10)
