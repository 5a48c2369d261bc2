"""Recording executions (docs/design.md, executions): the pure decision of which fills are new,
which are harmless duplicates and which conflict, with literal inputs and no store.

Invariants:
1. Every new exec_id gets exactly one ExecutionSeen marker, after the position's events, naming
   the key's stream and the payload later sightings must repeat.
2. An exec_id recorded with the same payload is a duplicate: no event, ``duplicate=True``.
3. An exec_id recorded (or offered earlier in the batch) with another payload raises
   ExecutionConflict, whatever else the batch holds.
4. One result per distinct exec_id, in the order first offered; the state after is the fold of
   the position's events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from posledger import ExecutionConflict, Fill, PositionKey, Side
from posledger.core.decide import (
    Marker,
    decide_recording,
    decide_request,
    marker_payload,
    register,
)
from posledger.core.events import ExecutionSeen, Filled, PartiallyFilled, marker_id
from posledger.core.position import PositionState, evolve, project

T0 = datetime(2025, 10, 13, 19, 0, tzinfo=UTC)
KEY = PositionKey(venue="bybit", account="aged-exits", category="linear", symbol="AGIUSDT")


def new_state() -> PositionState:
    return evolve(None, register(KEY, T0))


def sell(exec_id: str, qty: str, price: str = "0.0512", **more: object) -> Fill:
    return Fill(
        exec_id=exec_id,
        order_id="exit-1",
        side=Side.SELL,
        qty=Decimal(qty),
        price=Decimal(price),
        exec_time=T0,
        **more,  # type: ignore[arg-type]
    )


def nothing_recorded(marker: uuid.UUID) -> str | None:
    return None


def test_new_fills_get_one_marker_each_after_the_position_events() -> None:
    fills = [sell("e1", "1000", leaves_qty=Decimal("3160")), sell("e2", "3160", fee="0.02")]
    recording = decide_recording(new_state(), fills, nothing_recorded)
    kinds = [type(e) for e in recording.events]
    assert kinds == [PartiallyFilled, Filled, ExecutionSeen, ExecutionSeen]
    markers = recording.events[2:]
    assert [m.exec_id for m in markers] == ["e1", "e2"]
    assert {m.stream_id for m in markers} == {KEY.stream_id}
    assert [m.originator_id for m in markers] == [
        marker_id("bybit", "aged-exits", "e1"),
        marker_id("bybit", "aged-exits", "e2"),
    ]
    assert [m.originator_version for m in markers] == [1, 1]
    assert [m.timestamp for m in markers] == [f.exec_time for f in fills]
    assert [m.payload for m in markers] == [marker_payload(KEY, f) for f in fills]
    assert recording.markers == tuple(Marker(m.originator_id, m.payload) for m in markers)
    assert [(r.exec_id, r.duplicate, r.event) for r in recording.results] == [
        ("e1", False, "PartiallyFilled"),
        ("e2", False, "Filled"),
    ]


def test_the_state_after_is_the_fold_of_the_position_events() -> None:
    start = new_state()
    recording = decide_recording(start, [sell("e1", "1000"), sell("e2", "60")], nothing_recorded)
    folded = project(start, [e for e in recording.events if not isinstance(e, ExecutionSeen)])
    assert recording.after == folded
    assert recording.after.size == Decimal("1060")
    assert recording.after.side is Side.SELL


def test_a_fill_recorded_with_the_same_payload_is_a_duplicate() -> None:
    seen = sell("e1", "1000")
    recorded = {marker_id("bybit", "aged-exits", "e1"): marker_payload(KEY, seen)}
    recording = decide_recording(new_state(), [seen, sell("e2", "5")], recorded.get)
    assert [r.duplicate for r in recording.results] == [True, False]
    assert recording.results[0].event is None
    assert recording.results[0].overfill == 0
    assert [getattr(e, "exec_id", None) for e in recording.events] == ["e2", "e2"]
    assert [m.payload for m in recording.markers] == [marker_payload(KEY, sell("e2", "5"))]


def test_only_duplicates_write_nothing() -> None:
    seen = sell("e1", "1000")
    recorded = {marker_id("bybit", "aged-exits", "e1"): marker_payload(KEY, seen)}
    start = new_state()
    recording = decide_recording(start, [seen, seen], recorded.get)
    assert recording.events == () and recording.markers == ()
    assert recording.after is start
    assert [r.duplicate for r in recording.results] == [True]


def test_a_fill_recorded_with_another_payload_conflicts() -> None:
    recorded = {marker_id("bybit", "aged-exits", "e1"): marker_payload(KEY, sell("e1", "1000"))}
    with pytest.raises(ExecutionConflict) as raised:
        decide_recording(new_state(), [sell("e0", "1"), sell("e1", "999")], recorded.get)
    assert raised.value.exec_id == "e1"
    assert raised.value.recorded == marker_payload(KEY, sell("e1", "1000"))
    assert raised.value.offered == marker_payload(KEY, sell("e1", "999"))


def test_one_exec_id_offered_twice_in_a_batch_applies_once_or_conflicts() -> None:
    batch = [sell("e1", "10"), sell("e1", "10"), sell("e2", "5")]
    once = decide_recording(new_state(), batch, nothing_recorded)
    assert [type(e) for e in once.events] == [Filled, Filled, ExecutionSeen, ExecutionSeen]
    assert [r.exec_id for r in once.results] == ["e1", "e2"]
    assert once.after.size == Decimal(15)
    with pytest.raises(ExecutionConflict) as raised:
        decide_recording(new_state(), [sell("e1", "10"), sell("e1", "11")], nothing_recorded)
    assert raised.value.exec_id == "e1"
    assert raised.value.recorded == marker_payload(KEY, sell("e1", "10"))
    assert raised.value.offered == marker_payload(KEY, sell("e1", "11"))


def test_the_payload_names_the_key_and_normalises_values() -> None:
    assert marker_payload(KEY, sell("e1", "1000.00", fee="0.10")) == marker_payload(
        KEY, sell("e1", "1000", fee="0.1")
    )
    other = PositionKey(venue="bybit", account="aged-exits", category="linear", symbol="HNTUSDT")
    assert marker_payload(KEY, sell("e1", "1")) != marker_payload(other, sell("e1", "1"))


def test_results_report_overfills() -> None:
    short = decide_recording(new_state(), [sell("open", "4160")], nothing_recorded).after
    exit_request = decide_request(
        short,
        order_id="exit-2",
        side=None,
        qty=Decimal("1000"),
        price=None,
        at=T0,
        reduce_only=True,
    )
    waiting = project(short, exit_request)
    assert waiting is not None
    buy = Fill(
        exec_id="x1",
        order_id="exit-2",
        side=Side.BUY,
        qty=Decimal("1200"),
        price=Decimal("0.05"),
        exec_time=T0,
    )
    recording = decide_recording(waiting, [buy], nothing_recorded)
    assert recording.results[0].overfill == Decimal("200")
    assert recording.after.size == Decimal("2960")
