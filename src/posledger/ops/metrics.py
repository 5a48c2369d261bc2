"""Prometheus metrics of synchronizers, Bybit streams and a ledger's store (the optional extra
``metrics``: prometheus-client). docs/operations.md#metrics lists every metric.

:class:`Metrics` is an observer: pass it to ``Ledger.open(url, observers=[metrics])`` and
``Synchronizer(..., observers=[metrics])``, and :meth:`Metrics.watch_stream` a
:class:`~posledger.drivers.bybit_stream.BybitStream`. Counters move as rounds and writes are
reported; what is a state rather than an event (how old the last complete snapshot is, what a
stream's :class:`~posledger.drivers.bybit_stream.StreamHealth` counted, how long each suspect has
stayed open) is read when Prometheus scrapes.

Labels stay bounded: ``venue``, ``account`` and ``category`` (one set per synchronizer or stream),
failure and correction kinds (fixed lists). No counter has a symbol label; the one per-key gauge,
``posledger_suspect_rounds``, has a series only for a key whose suspect is open in the latest
round, and the series goes when the suspect does (corrected, agreeing, proposed). Books
(docs/books.md) add no label: an account is reconciled once over its books, so every outcome's
key is the account's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from posledger.core.errors import (
    ExchangeAuthFailed,
    ExchangeMalformed,
    ExchangeRejected,
    ExchangeTruncated,
    ExchangeUnavailable,
    StorageUnavailable,
)
from posledger.core.model import PositionKey
from posledger.core.reconcile import Outcome
from posledger.drivers.bybit_stream import BybitStream, StreamHealth
from posledger.drivers.observers import RoundSource, SyncObserver
from posledger.drivers.report import SyncReport
from posledger.ledger.observers import StoreObserver

SCOPE = ("venue", "account", "category")
Scope = tuple[str, str, str]

FAILURE_KINDS: tuple[tuple[type[ExchangeUnavailable], str], ...] = (
    (ExchangeAuthFailed, "auth"),
    (ExchangeRejected, "rejected"),
    (ExchangeTruncated, "truncated"),
    (ExchangeMalformed, "malformed"),
    (ExchangeUnavailable, "transport"),
)
"""A failed read's ``kind`` label, by exception type, most specific first."""

WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

STREAM_COUNTS = (
    (
        "gaps_detected",
        "posledger_stream_gaps",
        "Gaps the stream detected (a reconnect, silence, a lost message).",
    ),
    ("resyncs", "posledger_stream_resyncs", "Gaps filled by reading the executions through REST."),
    ("resync_failures", "posledger_stream_resync_failures", "Resyncs that failed (retried)."),
    ("fills_recovered", "posledger_stream_recovered_executions", "Executions a resync recorded."),
    ("unknown_executions", "posledger_stream_unknown_executions", "Executions of an unknown type."),
)
"""StreamHealth's counts exported as counters: (field, metric name, help)."""


def failure_kind(error: BaseException) -> str | None:
    """The ``kind`` of a failed exchange read, None for a failure that is not one."""
    for error_type, kind in FAILURE_KINDS:
        if isinstance(error, error_type):
            return kind
    return None


def scope_of(source: Any) -> Scope:
    """The labels of a synchronizer's or a stream's venue."""
    venue = source.venue
    return (str(venue.venue), str(venue.account), str(venue.category))


class Metrics(SyncObserver, StoreObserver):
    """posledger's metrics on ``registry`` (prometheus-client's default one if None): serve
    them with ``prometheus_client.start_http_server(port, registry=...)``. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry
        self._lock = threading.Lock()
        self._sources: dict[Scope, tuple[RoundSource, float]] = {}
        self._suspects: dict[Scope, dict[PositionKey, int]] = {}
        self._streams: list[BybitStream] = []
        self._define(self.registry)
        self.registry.register(_ScrapeTime(self))

    def _define(self, registry: CollectorRegistry) -> None:
        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, [*SCOPE, *labels], registry=registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, SCOPE, registry=registry)

        self.rounds = counter("posledger_sync_rounds", "Sync rounds, by result.", "result")
        self.failed_reads = counter(
            "posledger_sync_failed_reads", "Failed exchange reads, by kind.", "kind"
        )
        self.corrections = counter(
            "posledger_corrections", "Corrections applied by a synchronizer, by kind.", "kind"
        )
        self.proposals = counter(
            "posledger_proposals", "Corrections proposed for approval, by kind.", "kind"
        )
        self.recovered = counter(
            "posledger_sync_recovered_executions", "Missed executions a round recorded."
        )
        self.money_differences = counter(
            "posledger_money_differences",
            "Money checks that found the ledger apart from the exchange's records, by whether a "
            "correction explains it.",
            "explained",
        )
        self.unknown = counter(
            "posledger_sync_unknown_executions", "Recovered executions of an unknown type."
        )
        self.consecutive_failures = gauge(
            "posledger_sync_consecutive_failures", "Rounds failed since the last complete one."
        )
        self.open_suspects = gauge("posledger_open_suspects", "Suspect keys after the last round.")
        self.open_proposals = gauge(
            "posledger_open_proposals", "Keys held by an open proposal after the last round."
        )
        self.exposure = gauge(
            "posledger_unexplained_exposure",
            "Notional of the keys whose ledger size differs from the last snapshot.",
        )
        self.write_latency = Histogram(
            "posledger_store_write_seconds",
            "Seconds each store transaction took to write.",
            buckets=WRITE_BUCKETS,
            registry=registry,
        )
        self.storage_outages = Counter(
            "posledger_storage_unavailable",
            "Ledger calls that raised StorageUnavailable.",
            registry=registry,
        )

    # observers

    def round_done(self, source: RoundSource, report: SyncReport) -> None:
        """Count the round, its corrections, proposals and recoveries; set the open counts."""
        scope = self._seen(source)
        outcomes = report.outcomes
        self.rounds.labels(*scope, "complete").inc()
        self.consecutive_failures.labels(*scope).set(0)
        for outcome in outcomes:
            kind = outcome.correction.value if outcome.correction else "unknown"
            if outcome.outcome is Outcome.CORRECTED:
                self.corrections.labels(*scope, kind).inc()
            elif outcome.outcome is Outcome.PROPOSED:
                self.proposals.labels(*scope, kind).inc()
        self.recovered.labels(*scope).inc(report.fills_recovered)
        for checked in report.money:
            if checked.check.events:  # a difference written, not one awaiting confirmation
                why = "adopted" if checked.check.adopted else "unexplained"
                self.money_differences.labels(*scope, why).inc()
        self.unknown.labels(*scope).inc(len(report.unknown_executions))
        held = sum(o.outcome in (Outcome.PROPOSED, Outcome.HELD) for o in outcomes)
        self.open_proposals.labels(*scope).set(held)
        self.exposure.labels(*scope).set(float(report.unexplained_exposure))
        suspects = [o.key for o in outcomes if o.outcome is Outcome.SUSPECT]
        self.open_suspects.labels(*scope).set(len(suspects))
        with self._lock:
            before = self._suspects.get(scope, {})
            self._suspects[scope] = {key: before.get(key, 0) + 1 for key in suspects}

    def round_failed(self, source: RoundSource, error: Exception) -> None:
        """Count the failed round, and the failed read by kind if the exchange failed."""
        scope = self._seen(source)
        self.rounds.labels(*scope, "failed").inc()
        self.consecutive_failures.labels(*scope).inc()
        kind = failure_kind(error)
        if kind is not None:
            self.failed_reads.labels(*scope, kind).inc()

    def write_seconds(self, seconds: float) -> None:
        """Observe one store transaction's duration."""
        self.write_latency.observe(seconds)

    def storage_unavailable(self, error: StorageUnavailable) -> None:
        """Count one call that found the store unreachable."""
        self.storage_outages.inc()

    def watch_stream(self, stream: BybitStream) -> None:
        """Export ``stream``'s health (gaps, resyncs, recoveries, connection) at each scrape."""
        with self._lock:
            self._streams.append(stream)

    def _seen(self, source: RoundSource) -> Scope:
        scope = scope_of(source)
        with self._lock:
            self._sources.setdefault(scope, (source, time.monotonic()))
        return scope

    # read at scrape time

    def snapshot_ages(self) -> Iterator[tuple[Scope, float]]:
        """Seconds since each synchronizer's last complete snapshot; before its first one,
        since the synchronizer was first heard of (a lower bound)."""
        with self._lock:
            sources = list(self._sources.items())
        for scope, (source, first_seen) in sources:
            staleness = source.staleness()
            age = time.monotonic() - first_seen if staleness is None else staleness.total_seconds()
            yield scope, age

    def suspect_rounds(self) -> list[tuple[Scope, PositionKey, int]]:
        """Each open suspect and the consecutive rounds it has been one."""
        with self._lock:
            return [
                (scope, key, rounds)
                for scope, keys in self._suspects.items()
                for key, rounds in keys.items()
            ]

    def stream_health(self) -> list[tuple[Scope, StreamHealth]]:
        with self._lock:
            streams = list(self._streams)
        return [(scope_of(stream), stream.health()) for stream in streams]


class _ScrapeTime(Collector):
    """The metrics computed when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        ages = GaugeMetricFamily(
            "posledger_sync_snapshot_age_seconds",
            "Seconds since the last complete exchange snapshot.",
            labels=SCOPE,
        )
        for scope, age in self.metrics.snapshot_ages():
            ages.add_metric(scope, age)
        yield ages
        rounds = GaugeMetricFamily(
            "posledger_suspect_rounds",
            "Consecutive rounds each open suspect key has stayed suspect.",
            labels=[*SCOPE, "symbol", "idx"],
        )
        for scope, key, count in self.metrics.suspect_rounds():
            rounds.add_metric([*scope, key.symbol, str(key.idx)], count)
        yield rounds
        yield from self._streams()

    def _streams(self) -> Iterator[Metric]:
        health = self.metrics.stream_health()
        for field, name, text in STREAM_COUNTS:
            family = CounterMetricFamily(name, text, labels=SCOPE)
            for scope, seen in health:
                family.add_metric(scope, getattr(seen, field))
            yield family
        connected = GaugeMetricFamily(
            "posledger_stream_connected", "1 while the stream's socket is connected.", labels=SCOPE
        )
        for scope, seen in health:
            connected.add_metric(scope, float(seen.connected))
        yield connected
