"""Metrics scraped over HTTP: from a real ``posledger sync`` subprocess (real pybit against the
fake Bybit) through a scripted phantom and outages, and from a library user's own registry."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from posledger import ExchangeAuthFailed, Fill, Ledger, PositionKey
from posledger.drivers.sync import Synchronizer
from posledger.ops.metrics import Metrics
from posledger.testing.fake_bybit import (
    POSITIONS,
    FakeBybit,
    HttpError,
    NotJson,
    RetCode,
    TruncatedJson,
)
from posledger.venues.bybit import BybitVenue
from tests.cli.test_cli_sync import API_KEY, API_SECRET, assert_secrets_not_shown, environment

ETH = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT")
SCOPE = {"venue": "bybit", "account": "main", "category": "linear"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def fake() -> Iterator[FakeBybit]:
    with FakeBybit(api_key=API_KEY, api_secret=API_SECRET) as server:
        server.add_instrument("ETHUSDT")
        yield server


def seed_phantom(url: str) -> None:
    """The ledger holds ETHUSDT long 0.5 at 3000; the exchange holds nothing (it was closed by
    fills the bot never heard of, and history no longer has them)."""
    opened = datetime.now(UTC) - timedelta(hours=3)
    with Ledger.open(url) as ledger:
        ledger.request_open(ETH, order_id="o-1", side="buy", qty="0.5", at=opened)
        ledger.record_fill(
            ETH,
            Fill(
                exec_id="e-1",
                order_id="o-1",
                side="buy",
                qty="0.5",
                price="3000",
                exec_time=opened,
            ),
        )


def scrape(endpoint: str) -> Samples:
    with urllib.request.urlopen(endpoint, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset({**SCOPE, **labels}.items())))


def unlabelled(samples: Samples, name: str) -> float | None:
    return samples.get((name, frozenset()))


def scrape_until(endpoint: str, ready: Callable[[Samples], bool], timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(endpoint)
        if ready(samples):
            return samples
        shown = {k: v for k, v in samples.items() if k[0].startswith("posledger_sync")}
        assert time.monotonic() < deadline, f"the metrics never showed it: {shown}"
        time.sleep(0.05)


class SyncProcess:
    """``posledger sync`` running its loop with a metrics endpoint on a free port."""

    def __init__(self, fake: FakeBybit, url: str) -> None:
        command = [sys.executable, "-m", "posledger.cli", "sync", "--db", url]
        command += ["--interval", "0.2", "--metrics-port", "0"]
        self.process = subprocess.Popen(
            command,
            env=environment(fake),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        first = self.process.stderr.readline()
        assert first.startswith("Serving metrics on http://127.0.0.1:"), first
        self.endpoint = first.split()[-1]
        self.err: list[str] = [first]
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        self.err.extend(self.process.stderr)

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(2)
        out, _ = self.process.communicate(timeout=60)
        self.reader.join(timeout=10)
        return self.process.returncode, out + "".join(self.err)


def test_sync_serves_what_a_phantom_and_outages_did(fake: FakeBybit, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    seed_phantom(url)
    fake.inject(POSITIONS, HttpError(502), after=1, times=None)  # the first round only reads
    sync = SyncProcess(fake, url)
    try:
        suspect = scrape_until(
            sync.endpoint,
            lambda s: (value(s, "posledger_sync_failed_reads_total", kind="transport") or 0) >= 2,
        )
        assert value(suspect, "posledger_sync_rounds_total", result="complete") == 1
        assert value(suspect, "posledger_open_suspects") == 1
        assert value(suspect, "posledger_suspect_rounds", symbol="ETHUSDT", idx="0") == 1
        assert value(suspect, "posledger_unexplained_exposure") == 1500  # 0.5 × 3000
        assert value(suspect, "posledger_corrections_total", kind="phantom") is None
        assert (value(suspect, "posledger_sync_consecutive_failures") or 0) >= 2
        first_age = value(suspect, "posledger_sync_snapshot_age_seconds")
        time.sleep(1)
        later = scrape(sync.endpoint)
        later_age = value(later, "posledger_sync_snapshot_age_seconds")
        assert first_age is not None and later_age is not None and later_age >= first_age + 0.9

        fake.clear_faults()
        corrected = scrape_until(
            sync.endpoint,
            lambda s: value(s, "posledger_corrections_total", kind="phantom") == 1,
        )
        assert value(corrected, "posledger_open_suspects") == 0
        assert value(corrected, "posledger_unexplained_exposure") == 0
        assert value(corrected, "posledger_suspect_rounds", symbol="ETHUSDT", idx="0") is None
        assert value(corrected, "posledger_sync_consecutive_failures") == 0
        assert (unlabelled(corrected, "posledger_store_write_seconds_count") or 0) >= 2
        assert unlabelled(corrected, "posledger_storage_unavailable_total") == 0

        for fault, kind in [
            (RetCode(10016, "server busy"), "rejected"),
            (NotJson(), "malformed"),
            (TruncatedJson(), "truncated"),
        ]:
            fake.inject(POSITIONS, fault)
            scrape_until(
                sync.endpoint,
                lambda s, kind=kind: value(s, "posledger_sync_failed_reads_total", kind=kind) == 1,
            )
    finally:
        code, output = sync.stop()
    assert code == 0, output
    assert_secrets_not_shown(output)
    with Ledger.open(url) as ledger:
        assert ledger.open_positions() == []


def test_a_library_user_registers_the_metrics_on_their_own_registry(fake: FakeBybit) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    fake.set_position("ETHUSDT", "Buy", "0.5", "3000")
    with Ledger.open("memory://", observers=[metrics]) as ledger:
        venue = BybitVenue(fake.session(), account="main", category="linear", settle_coin="USDT")
        sync = Synchronizer(ledger, venue, observers=[metrics])
        sync.run_once()
        fake.inject(POSITIONS, RetCode(10003, "API key is invalid."))
        with pytest.raises(ExchangeAuthFailed):
            sync.run_once()
    scope = ("bybit", "main", "linear")
    assert (
        registry.get_sample_value(
            "posledger_sync_rounds_total",
            dict(zip(SCOPE, (*scope,), strict=True), result="complete"),
        )
        == 1
    )
    assert (
        registry.get_sample_value("posledger_sync_failed_reads_total", {**SCOPE, "kind": "auth"})
        == 1
    )
    assert registry.get_sample_value("posledger_store_write_seconds_count") == 1  # the adoption
    assert registry.get_sample_value("posledger_sync_snapshot_age_seconds", SCOPE) is not None
