"""State snapshots: loading from a snapshot plus its tail equals a full replay, always."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from posledger import Ledger, PositionState
from posledger.position import project
from posledger.snapshot import PositionSnapshot, decode, encode
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
        assert reader._app.snapshots is not None
        stored = list(reader._app.snapshots.get(K.stream_id))
        assert stored and all(isinstance(s, PositionSnapshot) for s in stored)
        replayed = project(None, reader.history(K))
        assert replayed == live
        for version in range(1, live.version + 1):  # type: ignore[union-attr]
            assert reader.position(K, version=version) == project(
                None, reader.history(K)[:version]
            )


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
            assert ledger._load(K.stream_id) == state
