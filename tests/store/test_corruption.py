"""A stored stream damaged behind the ledger's back (a row deleted, a state garbled with raw SQL)
is a StoreCorrupted naming the stream, whichever read meets it: the Ledger's per-key loads, its
bulk loads and catch-up, its key index, and the audit's replays. ``verify`` keeps reporting it as
a finding (tests/audit/test_verification.py, tests/cli/test_cli_audit.py)."""

from __future__ import annotations

import pytest

from posledger import Ledger, PosledgerError, StoreCorrupted
from posledger.audit import history_stream, replay_all, state_at
from posledger.core.model import PositionKey
from tests.audit.stores import append, damage_by_sql, filled
from tests.conftest import T0, key
from tests.helpers import at, fill

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
"""A load stopped by a damaged row must leave nothing open: a bulk read's generator once kept
its SQLite transaction open across the rows it handed out, and closing it after the store had
closed raised where nobody could catch it."""

BTC, ETH = key("BTCUSDT"), key("ETHUSDT")
GARBLED = b'{"timestamp": {'


def two_keys(url: str) -> None:
    """BTC long 1 (v1-v2); ETH opened and closed (v1-v4); each snapshotted when the ledger
    closes."""
    with Ledger.open(url, clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("b1", "buy", "1", exec_time=at(1)))
        ledger.record_fill(ETH, fill("e1", "buy", "2", exec_time=at(2)))
        ledger.record_fill(ETH, fill("e2", "sell", "2", exec_time=at(3)))


def assert_names(raised: pytest.ExceptionInfo[StoreCorrupted], k: PositionKey, *words: str) -> None:
    error = raised.value
    assert isinstance(error, PosledgerError) and error.stream_id == k.stream_id
    for word in words:
        assert word in str(error)


def test_a_deleted_event_fails_every_ledger_load_naming_the_key(durable_url: str) -> None:
    two_keys(durable_url)
    damage_by_sql(durable_url, ETH, 4, None, snapshot=True)  # loads must read the events
    damage_by_sql(durable_url, ETH, 3, None)
    for read in (
        lambda ledger: ledger.positions(),  # the bulk load
        lambda ledger: ledger.position(ETH),  # the repository's
    ):
        with Ledger.open(durable_url) as ledger, pytest.raises(StoreCorrupted) as raised:
            read(ledger)
        assert_names(raised, ETH, f"stored stream of {ETH}", "version 4 does not follow 2")
        assert f"{ETH}: event" not in str(raised.value)  # evolve's prefix is not repeated
    with Ledger.open(durable_url) as ledger:
        assert ledger.position(BTC) is not None  # the other keys still read


def test_a_garbled_snapshot_fails_the_loads_through_it(durable_url: str) -> None:
    two_keys(durable_url)
    damage_by_sql(durable_url, ETH, 4, GARBLED, snapshot=True)
    with Ledger.open(durable_url) as ledger, pytest.raises(StoreCorrupted) as raised:
        ledger.positions()
    assert_names(raised, ETH, f"stream {ETH.stream_id}", "at v4", "snapshot cannot be read")
    assert raised.value.version == 4
    with Ledger.open(durable_url) as ledger, pytest.raises(StoreCorrupted) as raised:
        ledger.position(ETH)
    assert_names(raised, ETH, "deserialise")


def test_a_garbled_event_written_by_another_writer_fails_the_catch_up(durable_url: str) -> None:
    two_keys(durable_url)
    with Ledger.open(durable_url) as reader:
        assert reader.position(BTC) is not None
        with Ledger.open(durable_url) as writer:
            writer.record_fill(BTC, fill("b2", "buy", "1", exec_time=at(4)))
        damage_by_sql(durable_url, BTC, 3, GARBLED)
        with pytest.raises(StoreCorrupted) as raised:
            reader.position(BTC)
    assert_names(raised, BTC, f"stored stream of {BTC}", "at v3", "deserialise")


def test_a_garbled_key_registration_fails_reading_the_keys(durable_url: str) -> None:
    two_keys(durable_url)
    damage_by_sql(durable_url, ETH, 1, GARBLED)
    with Ledger.open(durable_url) as ledger, pytest.raises(StoreCorrupted) as raised:
        ledger.keys()
    assert_names(raised, ETH, f"stream {ETH.stream_id}", "at v1")


def test_the_audit_replays_name_the_damaged_stream(durable_url: str) -> None:
    two_keys(durable_url)
    damage_by_sql(durable_url, ETH, 3, None)
    for replay in (replay_all, lambda url: list(history_stream(url))):
        with pytest.raises(StoreCorrupted) as raised:
            replay(durable_url)
        assert_names(raised, ETH, f"stored stream of {ETH}", "at v4", "does not follow 2")
    damage_by_sql(durable_url, ETH, 2, GARBLED)
    with pytest.raises(StoreCorrupted) as raised:
        state_at(durable_url, ETH, version=2)
    assert_names(raised, ETH, f"stored stream of {ETH}", "deserialise")


def test_a_memory_store_with_a_version_gap_names_the_key() -> None:
    with Ledger.open("memory://", clock=lambda: T0) as ledger:
        ledger.record_fill(BTC, fill("b1", "buy", "1", exec_time=at(1)))
        append(ledger.application, filled(BTC, 4, "gap", "buy", "1"))
        with pytest.raises(StoreCorrupted) as raised:
            ledger.positions()
    assert_names(raised, BTC, f"stored stream of {BTC}", "does not follow 2")


def test_ledger_history_names_a_garbled_event_as_corruption(durable_url: str) -> None:
    two_keys(durable_url)
    damage_by_sql(durable_url, ETH, 3, GARBLED)
    with Ledger.open(durable_url) as ledger, pytest.raises(StoreCorrupted) as raised:
        ledger.history(ETH)
    assert_names(raised, ETH, str(ETH))
    with Ledger.open(durable_url) as ledger:
        assert len(ledger.history(BTC)) == 2
