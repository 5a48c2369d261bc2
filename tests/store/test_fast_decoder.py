"""The fast decoder of stored rows yields exactly what eventsourcing's mapper yields, and the
bulk replay built on it equals the Ledger's own loading on every backend."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given
from hypothesis import strategies as st

from posledger import Ledger
from posledger.audit import replay_all, replay_events
from posledger.core.events import EVENT_TYPES, ExecutionSeen, Filled, KeyRegistered, PositionEvent
from posledger.core.position import PositionState
from posledger.store.application import LedgerApplication
from posledger.store.decoding import StoredEventDecoder
from posledger.store.replay import log_rows
from posledger.store.snapshot import PositionSnapshot
from posledger.store.storage import settings_for
from posledger.testing.strategies import exchange_histories
from tests.audit.stores import BTC, build
from tests.conftest import T0

TOPICS = (*(cls.TOPIC for cls in EVENT_TYPES), ExecutionSeen.TOPIC)


def same(got: object, expected: object) -> None:
    """Equal, and every field of the same type with the same text (Decimal('1.0') equals
    Decimal('1.00'), and an aware datetime equals its UTC twin: neither is the same value)."""
    assert type(got) is type(expected)
    assert got == expected
    fields = vars(expected)
    assert list(vars(got)) == list(fields)
    for name, value in fields.items():
        other = vars(got)[name]
        assert (type(other), repr(other)) == (type(value), repr(value)), name


def decode_store(app: LedgerApplication) -> list[tuple[object, object]]:
    """Every stored row of ``app`` decoded by the fast decoder and by the mapper."""
    fast = StoredEventDecoder(app.mapper)
    top = app.recorder.max_notification_id() or 0
    pairs = []
    for row in log_rows(app, 0, top, TOPICS, top + 1):
        originator_id = row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(row[1])
        stored = StoredEvent(originator_id, row[2], row[3], bytes(row[4]))
        pairs.append((fast(row[1], row[2], row[3], row[4]), app.mapper.to_domain_event(stored)))
    return pairs


# --- every event type, every field value --------------------------------------------------------

offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=3))]
)
datetimes = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    offsets,
)
decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=8),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [Decimal("0"), Decimal("-0"), Decimal("0E-8"), Decimal("1E+3"), Decimal("1.10")]
    ),
)
texts = st.text(max_size=12)


def _values(annotation: str) -> st.SearchStrategy[Any]:
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    strategy: st.SearchStrategy[Any] = {
        "UUID": st.uuids(),
        "int": st.integers(min_value=-(2**62), max_value=2**62),
        "datetime": datetimes,
        "Decimal": decimals,
        "str": texts,
        "bool": st.booleans(),
        "list[str]": st.lists(texts, max_size=3),
    }[base]
    return st.none() | strategy if optional else strategy


def events_of(cls: type[Any]) -> st.SearchStrategy[Any]:
    fields = {f.name: _values(str(f.type)) for f in dataclasses.fields(cls)}
    fields["originator_version"] = st.integers(min_value=1, max_value=2**40)
    return st.builds(cls, **fields)


any_event = st.one_of(*(events_of(cls) for cls in (*EVENT_TYPES, ExecutionSeen)))


@given(events=st.lists(any_event, min_size=1, max_size=8))
def test_every_event_type_decodes_as_the_mapper_does(events: list[Any]) -> None:
    app = LedgerApplication.for_settings(settings_for("memory://"))
    fast = StoredEventDecoder(app.mapper)
    for event in events:
        stored = app.mapper.to_stored_event(event)
        expected = app.mapper.to_domain_event(stored)
        for originator_id in (stored.originator_id, str(stored.originator_id)):
            same(
                fast(originator_id, stored.originator_version, stored.topic, stored.state), expected
            )


@given(history=exchange_histories(min_steps=1, max_steps=25))
def test_stored_histories_decode_as_the_mapper_does(history: Any) -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        for number, step in enumerate(history.steps):
            step.apply(ledger)
            if number % 4 == 3:  # snapshots and corrections: ExchangeSnapshot, Reconciled, Closed
                ledger.reconcile(history.snapshot(number), now=step.at)
        pairs = decode_store(ledger.application)
    assert pairs
    for got, expected in pairs:
        same(got, expected)


def test_a_sqlite_store_decodes_as_the_mapper_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.open(url, clock=lambda: T0) as ledger:
        build(ledger)
        pairs = decode_store(ledger.application)
    kinds = {type(expected) for _, expected in pairs}
    assert {ExecutionSeen, Filled} <= kinds
    for got, expected in pairs:
        same(got, expected)


# --- what the fast path leaves to the mapper -----------------------------------------------------


def _filled_fields(app: LedgerApplication) -> dict[str, Any]:
    event = Filled(
        originator_id=uuid.uuid4(),
        originator_version=2,
        timestamp=T0,
        exec_id="e1",
        order_id="o1",
        side="buy",
        qty=Decimal("1.5"),
        price=Decimal("100"),
        fee=Decimal("0.01"),
        exec_time=T0,
        seq=None,
        kind="trade",
        leaves_qty=None,
        reduce_only=False,
        overfill=Decimal(0),
        absorbed=False,
    )
    fields: dict[str, Any] = json.loads(app.mapper.to_stored_event(event).state)
    return fields


@pytest.mark.parametrize(
    "change",
    [
        {"qty": {"_type_": "decimal_str", "_data_": 1}},  # data not a string
        {"qty": {"_type_": "decimal_str", "_data_": "1", "x": 1}},  # not a transcoding
        {"price": {"_type_": "uuid_hex", "_data_": uuid.UUID(int=7).hex}},  # another type
        {"kind": ["trade", {"_type_": "decimal_str", "_data_": "2"}]},  # an object in a list
        {"class_version": 2},  # upcasting is the mapper's
    ],
)
def test_unusual_rows_decode_through_the_mapper(change: dict[str, Any]) -> None:
    app = LedgerApplication.for_settings(settings_for("memory://"))
    fast = StoredEventDecoder(app.mapper)
    state = json.dumps({**_filled_fields(app), **change}).encode()
    stored = StoredEvent(uuid.uuid4(), 2, Filled.TOPIC, state)
    expected = app.mapper.to_domain_event(stored)
    same(
        fast(stored.originator_id, stored.originator_version, stored.topic, stored.state), expected
    )


@pytest.mark.parametrize(
    "state",
    [
        b'{"timestamp":{"_type_":"no_such_type","_data_":"x"}}',
        b'{"timestamp":{"_type_":"decimal_str","_data_":"not a number"}}',
        b"not json",
    ],
)
def test_undecodable_rows_raise_the_mappers_error(state: bytes) -> None:
    app = LedgerApplication.for_settings(settings_for("memory://"))
    fast = StoredEventDecoder(app.mapper)
    stored = StoredEvent(uuid.uuid4(), 2, Filled.TOPIC, state)
    with pytest.raises(Exception) as mapper_error:
        app.mapper.to_domain_event(stored)
    with pytest.raises(type(mapper_error.value), match="Failed to deserialise"):
        fast(stored.originator_id, 2, Filled.TOPIC, state)


def test_other_topics_and_settings_go_to_the_mapper() -> None:
    plain = LedgerApplication.for_settings(settings_for("memory://"))
    snapshot = plain.mapper.to_stored_event(
        PositionSnapshot.take(PositionState(key=BTC, version=3, updated_at=T0))
    )
    same(
        StoredEventDecoder(plain.mapper)(snapshot.originator_id, 3, snapshot.topic, snapshot.state),
        plain.mapper.to_domain_event(snapshot),
    )
    compressing = LedgerApplication(
        env={
            **settings_for("memory://").env,
            "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
        }
    )
    fast = StoredEventDecoder(compressing.mapper)
    assert fast.classes == {}
    stored = compressing.mapper.to_stored_event(
        KeyRegistered(uuid.uuid4(), 1, T0, "bybit", "main", "linear", "BTCUSDT", 0)
    )
    same(
        fast(stored.originator_id, 1, stored.topic, stored.state),
        compressing.mapper.to_domain_event(stored),
    )


def test_position_state_copies_exactly() -> None:
    """The replay copies states without __init__: only exact while nothing runs in it."""
    for field in attrs.fields(PositionState):
        assert field.converter is None and field.validator is None and field.init, field.name
    assert not hasattr(PositionState, "__attrs_post_init__")


# --- the replay on every backend ---------------------------------------------------------------


def test_replay_all_equals_loading_each_key(durable_url: str) -> None:
    with Ledger.open(durable_url, clock=lambda: T0, snapshot_every=3) as ledger:
        build(ledger)
        keys = [state.key for state in ledger.positions()]
    replayed = replay_all(durable_url, page_size=4)
    assert len(replayed) == len(keys) > 3
    with Ledger.open(durable_url) as fresh:
        assert replayed == {k: fresh.position(k) for k in sorted(keys, key=str)}
        assert list(replayed.values()) == sorted(fresh.positions(), key=lambda s: str(s.key))
    streamed = {event.originator_id: state for event, state in replay_events(durable_url)}
    assert sorted(streamed.values(), key=lambda s: str(s.key)) == list(replayed.values())
    assert all(isinstance(event, PositionEvent) for event, _ in replay_events(durable_url))
