"""A BybitStream's health as metrics at scrape time: gaps, resyncs and recoveries after an
outage of the real pybit WebSocket against the fake private stream."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from posledger import Ledger
from posledger.ops.metrics import Metrics
from posledger.testing.fake_bybit import FakeBybit
from posledger.testing.fake_bybit_ws import FakeBybitWebSocket
from tests.drivers.test_bybit_stream import (  # noqa: F401 (fixtures)
    RunningClock,
    clock,
    fake,
    fake_ws,
    ledger,
    open_short,
    settled,
    stream_for,
)

SCOPE = {"venue": "bybit", "account": "main", "category": "linear"}


def test_a_watched_stream_shows_its_gaps_resyncs_and_recoveries(
    ledger: Ledger,  # noqa: F811
    fake: FakeBybit,  # noqa: F811
    fake_ws: FakeBybitWebSocket,  # noqa: F811
    clock: RunningClock,  # noqa: F811
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        metrics.watch_stream(stream)
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        with fake_ws.outage():
            fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(settled(lambda h: h.logins == 2 and h.resyncs == 2))
        health = stream.health()

        def sample(name: str) -> float | None:
            return registry.get_sample_value(name, SCOPE)

        assert sample("posledger_stream_resyncs_total") == health.resyncs == 2
        assert sample("posledger_stream_gaps_total") == health.gaps_detected >= 2
        assert sample("posledger_stream_recovered_executions_total") == 1
        assert sample("posledger_stream_unknown_executions_total") == 0
        assert sample("posledger_stream_connected") == 1
