"""The fast encoder writes exactly the bytes eventsourcing's mapper writes, for every event type
and every field value, and leaves whatever it is not sure of to the mapper."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent, TranscodingNotRegisteredError
from hypothesis import given
from hypothesis import strategies as st

from posledger import Ledger
from posledger.core.events import EVENT_TYPES, ExecutionSeen, Filled, Reconciled
from posledger.store.application import LedgerApplication
from posledger.store.encoding import StoredEventEncoder, _standard_json
from posledger.testing.strategies import exchange_histories
from tests.audit.stores import build
from tests.conftest import T0
from tests.store.test_fast_decoder import any_event


def mapper_app(**env: str) -> LedgerApplication:
    return LedgerApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo", **env})


def filled(**changes: Any) -> Filled:
    fields: dict[str, Any] = {
        "originator_id": uuid.uuid4(),
        "originator_version": 2,
        "timestamp": T0,
        "exec_id": "e1",
        "order_id": "o1",
        "side": "buy",
        "qty": Decimal("1.5"),
        "price": Decimal("100"),
        "fee": Decimal("0.01"),
        "exec_time": T0,
        "seq": None,
        "kind": "trade",
        "leaves_qty": None,
        "reduce_only": False,
        "overfill": Decimal(0),
        "absorbed": False,
    }
    return Filled(**{**fields, **changes})


@given(events=st.lists(any_event, min_size=1, max_size=8))
def test_every_event_type_encodes_as_the_mapper_does(events: list[Any]) -> None:
    """Events as their constructors build them (a writer compiled for their class), and as
    the mapper decodes them (their fields in stored order: the general loop)."""
    app = mapper_app()
    fast = StoredEventEncoder(app.mapper)
    assert len(fast.topics) == len(EVENT_TYPES) + 1  # every event type, and ExecutionSeen
    for event in events:
        decoded = app.mapper.to_domain_event(app.mapper.to_stored_event(event))
        for version in (event, decoded):
            got = fast(version)
            expected = app.mapper.to_stored_event(version)
            assert type(got) is StoredEvent
            assert got == expected
            assert type(got.originator_id) is type(expected.originator_id)


def test_every_event_type_has_a_compiled_writer() -> None:
    fast = StoredEventEncoder(mapper_app().mapper)
    assert all(writer is not _standard_json for writer in fast._writers.values())


@given(history=exchange_histories(min_steps=1, max_steps=25))
def test_a_ledger_stores_the_mappers_bytes(history: Any) -> None:
    """Every row a ledger wrote re-encodes, through the mapper, to the bytes stored."""
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        for number, step in enumerate(history.steps):
            step.apply(ledger)
            if number % 4 == 3:
                ledger.reconcile(history.snapshot(number), now=step.at)
        app = ledger.application
        rows = app.recorder.select_notifications(0, 10**6)
    assert rows
    for row in rows:
        stored = StoredEvent(row.originator_id, row.originator_version, row.topic, row.state)
        assert app.mapper.to_stored_event(app.mapper.to_domain_event(stored)) == stored


def test_a_sqlite_ledger_stores_the_mappers_bytes(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}", clock=lambda: T0) as ledger:
        build(ledger)
        app = ledger.application
        rows = app.recorder.select_notifications(0, 10**6)
    topics = {row.topic for row in rows}
    assert {ExecutionSeen.TOPIC, Filled.TOPIC} <= topics
    for row in rows:
        stored = StoredEvent(
            uuid.UUID(str(row.originator_id)), row.originator_version, row.topic, row.state
        )
        assert app.mapper.to_stored_event(app.mapper.to_domain_event(stored)).state == row.state


# --- what the fast path leaves to the mapper -----------------------------------------------------


class Color(StrEnum):
    RED = "red"


class OddDecimal(Decimal):
    pass


@pytest.mark.parametrize(
    "event",
    [
        filled(side=Color.RED),  # a str subclass: the JSON encoder writes its text
        filled(seq=True),  # a bool where an int belongs
        filled(qty=1.5),  # a float, which JSON writes itself
        dataclasses.replace(
            Reconciled(
                originator_id=uuid.uuid4(),
                originator_version=3,
                timestamp=T0,
                kind="adopt",
                before_side=None,
                before_size=Decimal(0),
                after_side="buy",
                after_size=Decimal(1),
                after_avg_price=None,
                snapshot_taken_at=T0,
                snapshot_seq=None,
                snapshot_avg_price=None,
                confirmations=1,
                cleared_orders=[],
            ),
            cleared_orders=("a", "b"),  # type: ignore[arg-type]  # a tuple: stored as a list
        ),
        filled(kind=["trade", Decimal("2")]),  # a transcoded value in a list
        filled(kind={"a": Decimal("2")}),  # an object
    ],
)
def test_unusual_values_encode_as_the_mapper_does(event: Any) -> None:
    app = mapper_app()
    assert StoredEventEncoder(app.mapper)(event) == app.mapper.to_stored_event(event)


def test_values_the_mapper_refuses_are_refused_alike() -> None:
    app = mapper_app()
    fast = StoredEventEncoder(app.mapper)
    event = filled(qty=OddDecimal("1"))  # transcodings are registered for exact types
    with pytest.raises(TranscodingNotRegisteredError):
        app.mapper.to_stored_event(event)
    with pytest.raises(TranscodingNotRegisteredError):
        fast(event)


def test_a_class_other_than_posledgers_goes_to_the_mapper() -> None:
    @dataclasses.dataclass(frozen=True)
    class Other:
        originator_id: uuid.UUID
        originator_version: int
        qty: Decimal

    app = mapper_app()
    event = Other(uuid.uuid4(), 1, Decimal("1"))
    assert StoredEventEncoder(app.mapper)(event) == app.mapper.to_stored_event(event)


def test_other_mapper_settings_go_to_the_mapper() -> None:
    app = mapper_app(COMPRESSOR_TOPIC="zlib")
    fast = StoredEventEncoder(app.mapper)
    assert fast.topics == {}
    event = filled()
    assert fast(event) == app.mapper.to_stored_event(event)
    assert app.mapper.to_domain_event(fast(event)) == event
