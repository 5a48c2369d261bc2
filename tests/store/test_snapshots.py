"""State snapshots: loading from a snapshot plus its tail equals a full replay, always."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from posledger import Ledger, PositionState
from posledger.core.model import Side
from posledger.core.position import project
from posledger.store.replay import load_states
from posledger.store.snapshot import PositionSnapshot, decode, encode, project_from_store
from posledger.store.storage import settings_for
from tests.conftest import T0, key
from tests.helpers import at, fill, row, snapshot

K = key()


def busy_history(ledger: Ledger) -> None:
    """Requests, partial fills, a flip, funding, a suspect snapshot: every nested state field."""
    ledger.request_open(K, order_id="o1", side="buy", qty=Decimal(3), at=T0, price="100")
    ledger.record_fill(K, fill("e1", "buy", "1", order_id="o1", fee="0.1", seq=1))
    ledger.request_exit(K, order_id="x1", qty=Decimal(1), at=at(1))
    ledger.record_fill(K, fill("e2", "sell", "2", "120", seq=2, exec_time=at(2)))
    ledger.record_fill(K, fill("f1", "buy", "1", "121", fee="0.01", kind="funding"))
    ledger.reconcile(snapshot(at(5), [row("BTCUSDT", "sell", "1")]), now=at(5))
    ledger.record_fill(K, fill("e3", "sell", "0.5", "119", exec_time=at(6), seq=3))


def test_codec_round_trips_every_field(ledger: Ledger) -> None:
    busy_history(ledger)
    state = ledger.position(K)
    assert state is not None and state.suspect is None and state.last_closed is not None
    assert decode(encode(state)) == state


def test_loading_through_snapshots_equals_full_replay(durable_url: str) -> None:
    with Ledger.open(durable_url, snapshot_every=3) as writer:
        busy_history(writer)
        live = writer.position(K)
    with Ledger.open(durable_url, snapshot_every=3) as reader:
        assert reader.position(K) == live
        assert reader.application.snapshots is not None
        stored = list(reader.application.snapshots.get(K.stream_id))
        assert stored and all(isinstance(s, PositionSnapshot) for s in stored)
        replayed = project(None, reader.history(K))
        assert replayed == live
        for version in range(1, live.version + 1):  # type: ignore[union-attr]
            assert reader.position(K, version=version) == project(None, reader.history(K)[:version])


def test_an_unknown_field_in_an_old_snapshot_is_ignored(ledger: Ledger) -> None:
    busy_history(ledger)
    state = ledger.position(K)
    assert state is not None
    data = encode(state) | {"field_from_the_future": 1}
    assert decode(data) == state


@given(st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 5)), max_size=30))
def test_snapshots_of_random_fill_sequences_round_trip(moves: list[tuple[str, int]]) -> None:
    with Ledger.open("memory://", snapshot_every=2) as ledger:
        for n, (side, qty) in enumerate(moves):
            ledger.record_fill(K, fill(f"e{n}", side, str(qty), str(100 + n)))
        state: PositionState | None = ledger.position(K)
        if state is not None:
            assert decode(encode(state)) == state
            assert ledger._cache.load(K.stream_id) == state


def _transcoded_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        own = [value] if "_type_" in value else []
        return own + [v for item in value.values() for v in _transcoded_values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _transcoded_values(item)]
    return []


def test_a_snapshot_stores_plain_json_values(durable_url: str) -> None:
    """One plain ``json.loads`` reads a snapshot's state: no transcoded object per decimal."""
    with Ledger.open(durable_url) as ledger:
        busy_history(ledger)
        state = ledger.position(K)
    assert state is not None
    with Ledger.open(durable_url) as reader:
        recorder: Any = reader.application.snapshots.recorder  # type: ignore[union-attr]
        (stored,) = recorder.select_events(K.stream_id, desc=True, limit=1)
    data = json.loads(stored.state)["state"]
    assert _transcoded_values(data) == []
    assert data["realized_pnl"] == str(state.realized_pnl)
    assert data["updated_at"] == state.updated_at.isoformat()
    assert repr(decode(data)) == repr(state)


def _encode_before_plain_values(state: PositionState) -> dict[str, Any]:
    """How snapshots were encoded before they held plain values: decimals and times left to
    eventsourcing's transcoder."""
    return attrs.asdict(
        state,
        recurse=True,
        filter=lambda attribute, _: attribute.name != "stream_id",
        value_serializer=lambda _, __, value: value.value if isinstance(value, Side) else value,
    )


def test_snapshots_written_before_plain_values_still_load(durable_url: str) -> None:
    with Ledger.open(durable_url, snapshot_every=1_000) as writer:
        busy_history(writer)
        live = writer.position(K)
        assert live is not None and live.pending_orders and live.last_closed is not None
        old = PositionSnapshot(
            originator_id=K.stream_id,
            originator_version=live.version,
            timestamp=live.updated_at,
            topic=PositionSnapshot.TOPIC,
            state=_encode_before_plain_values(live),
        )
        writer.application.snapshots.put([old])  # type: ignore[union-attr]
    with Ledger.open(durable_url) as reader:
        recorder: Any = reader.application.snapshots.recorder  # type: ignore[union-attr]
        (stored,) = recorder.select_events(K.stream_id, desc=True, limit=1)
        assert _transcoded_values(json.loads(stored.state)["state"])  # the old format it is
        by_repository = reader.application.repository.get(
            K.stream_id, projector_func=project_from_store
        )
        assert repr(by_repository) == repr(live)
        assert repr(load_states(reader.application)[K.stream_id]) == repr(live)
        assert repr(reader.position(K)) == repr(live)


def test_a_snapshot_state_without_its_key_is_refused(ledger: Ledger) -> None:
    busy_history(ledger)
    state = ledger.position(K)
    assert state is not None
    data = encode(state)
    del data["key"]
    with pytest.raises(ValueError, match="without key"):
        decode(data)


def test_a_value_of_another_type_in_an_older_snapshot_is_refused(ledger: Ledger) -> None:
    busy_history(ledger)
    state = ledger.position(K)
    assert state is not None
    data = encode(state) | {"fees": {"_type_": "uuid_hex", "_data_": "00" * 16}}
    with pytest.raises(ValueError, match="decimal_str"):
        decode(data)


def test_compressed_stores_load_through_the_mapper(tmp_path: Path) -> None:
    """Rows that are not plain JSON (here compressed) are never parsed by posledger itself."""
    settings = settings_for(f"sqlite:///{tmp_path / 'zlib.db'}")
    settings.env["COMPRESSOR_TOPIC"] = "eventsourcing.compressor:ZlibCompressor"
    with Ledger(settings) as writer:
        busy_history(writer)
        live = writer.positions()
    with Ledger(settings) as reader:
        recorder: Any = reader.application.snapshots.recorder  # type: ignore[union-attr]
        (stored,) = recorder.select_events(K.stream_id, desc=True, limit=1)
        assert not stored.state.startswith(b"{")
        assert reader.positions() == live
        assert reader.keys() == [K]


def test_approval_and_money_fields_are_written_only_when_they_hold_something() -> None:
    """A key that never had a proposal or a money difference snapshots exactly as before those
    fields existed; one that had them keeps them through the codec."""
    from posledger.core.decide import register
    from posledger.core.position import Proposal, evolve

    plain = evolve(None, register(key("BTCUSDT"), T0))
    assert not {"proposal", "adopted_pnl", "unexplained_pnl", "money_checked_until"} & set(
        encode(plain)
    )
    assert decode(encode(plain)) == plain
    proposal = Proposal(
        proposal_id="p1", kind="phantom", proposed_at=T0, reason="held", before_side="buy",
        before_size=Decimal(2), after_side=None, after_size=Decimal(0), after_avg_price=None,
        cleared_orders=("o1",), evidence_taken_at=T0, evidence_seq=7, evidence_avg_price=None,
        confirmations=2,
    )  # fmt: skip
    busy = attrs.evolve(
        plain,
        proposal=proposal,
        adopted_pnl=Decimal("2.14"),
        unexplained_pnl=Decimal("-0.5"),
        money_checked_until=T0,
    )
    stored = json.loads(json.dumps(encode(busy)))
    assert stored["adopted_pnl"] == "2.14" and stored["proposal"]["proposal_id"] == "p1"
    assert decode(stored) == busy
