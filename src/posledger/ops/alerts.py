"""Alert hooks: callbacks told when something needs a person (docs/operations.md#alerts).

:class:`Alerts` is an observer of synchronizers and of a ledger's store. It turns what they
report into :class:`Alert` s, each once: a key becoming suspect (not again each round it stays
so), a correction applied, a correction proposed for approval, the ``failed_rounds``-th failed
round in a row of a synchronizer, and the first ``StorageUnavailable`` of an outage (the next
write or complete round ends it). Hooks run in the reporting thread and must be quick: a hook
that sends anything away queues it (:class:`~posledger.ops.webhook.WebhookNotifier`). A hook
that raises is logged; the others are still called.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum

import attrs

from posledger.core.errors import StorageUnavailable
from posledger.core.model import PositionKey
from posledger.core.reconcile import KeyOutcome, Outcome
from posledger.drivers.money import MoneyOutcome
from posledger.drivers.observers import RoundSource, SyncObserver
from posledger.drivers.report import SyncReport
from posledger.ledger.observers import StoreObserver, notify


class AlertKind(StrEnum):
    """What an alert is about."""

    SUSPECT = "suspect"
    CORRECTION = "correction"
    PROPOSAL = "proposal"
    FAILED_ROUNDS = "failed_rounds"
    STORAGE_OUTAGE = "storage_outage"
    MONEY = "money"
    """A money check found a difference nobody explains (docs/design.md#money)."""


@attrs.frozen
class Alert:
    """One alert: its kind, one line for a person, and the structured fields behind it (all
    strings: the key's parts, the outcome, the correction, the error...)."""

    kind: AlertKind
    text: str
    fields: Mapping[str, str]
    at: datetime


Hook = Callable[[Alert], object]


@attrs.frozen
class _Subscription:
    hook: Hook
    kinds: frozenset[AlertKind]

    def __call__(self, alert: Alert) -> None:
        if alert.kind in self.kinds:
            self.hook(alert)


class Alerts(SyncObserver, StoreObserver):
    """Calls each subscribed hook with the alerts of the kinds it asked for. ``failed_rounds``:
    how many failed rounds in a row of one synchronizer make an alert (once per streak)."""

    def __init__(
        self,
        *hooks: Hook,
        failed_rounds: int = 3,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if failed_rounds < 1:
            raise ValueError(f"failed_rounds must be at least 1, got {failed_rounds}")
        self.failed_rounds = failed_rounds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._subscriptions: list[_Subscription] = []
        self._failures: dict[str, int] = {}
        self._suspects: dict[str, frozenset[str]] = {}
        self._outage = False
        for hook in hooks:
            self.subscribe(hook)

    def subscribe(self, hook: Hook, kinds: Iterable[AlertKind | str] | None = None) -> None:
        """Call ``hook`` with every alert, or only those of ``kinds``."""
        wanted = frozenset(AlertKind) if kinds is None else frozenset(map(AlertKind, kinds))
        with self._lock:
            self._subscriptions.append(_Subscription(hook, wanted))

    # observers

    def round_done(self, source: RoundSource, report: SyncReport) -> None:
        """Alerts for new suspects, corrections and proposals; ends a failure streak."""
        scope = _scope(source)
        suspects = frozenset(str(o.key) for o in report.outcomes if o.outcome is Outcome.SUSPECT)
        with self._lock:
            self._failures.pop(scope, None)
            known = self._suspects.get(scope, frozenset())
            self._suspects[scope] = suspects
            self._outage = False
        for outcome in report.outcomes:
            kind = OUTCOME_ALERTS.get(outcome.outcome)
            if kind is AlertKind.SUSPECT and str(outcome.key) in known:
                continue
            if kind is not None:
                self._emit(_key_alert(kind, outcome, self._clock()))
        for checked in report.money:
            if checked.check.events and not checked.check.adopted:  # written, unexplained
                self._emit(_money_alert(checked, self._clock()))

    def round_failed(self, source: RoundSource, error: Exception) -> None:
        """An alert when this failure makes ``failed_rounds`` in a row."""
        scope = _scope(source)
        with self._lock:
            count = self._failures[scope] = self._failures.get(scope, 0) + 1
        if count == self.failed_rounds:
            text = f"posledger {scope}: {count} sync rounds failed in a row; last: {error}"
            fields = {"scope": scope, "rounds": str(count), "error": type(error).__name__}
            self._emit(Alert(AlertKind.FAILED_ROUNDS, text, fields, self._clock()))

    def storage_unavailable(self, error: StorageUnavailable) -> None:
        """An alert for the first unreachable-store error of an outage."""
        with self._lock:
            first, self._outage = not self._outage, True
        if first:
            text = f"posledger: the ledger's store is unavailable: {error}"
            fields = {"error": str(error)}
            self._emit(Alert(AlertKind.STORAGE_OUTAGE, text, fields, self._clock()))

    def write_seconds(self, seconds: float) -> None:
        """A write went through: an outage is over."""
        with self._lock:
            self._outage = False

    def _emit(self, alert: Alert) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        notify(subscriptions, lambda subscription: subscription(alert))


OUTCOME_ALERTS = {
    Outcome.SUSPECT: AlertKind.SUSPECT,
    Outcome.CORRECTED: AlertKind.CORRECTION,
    Outcome.PROPOSED: AlertKind.PROPOSAL,
}
"""The reconciliation outcomes that make an alert, and its kind."""


def _scope(source: RoundSource) -> str:
    venue = source.venue
    return f"{venue.venue}/{venue.account}/{venue.category}"


def _key_fields(key: PositionKey) -> dict[str, str]:
    """The key's parts, as an alert's fields name them."""
    return {
        "venue": key.venue,
        "account": key.account,
        "category": key.category,
        "symbol": key.symbol,
        "idx": str(key.idx),
    }


def _key_alert(kind: AlertKind, outcome: KeyOutcome, at: datetime) -> Alert:
    key = outcome.key
    correction = outcome.correction.value if outcome.correction else ""
    what = {
        AlertKind.SUSPECT: "suspect",
        AlertKind.CORRECTION: f"corrected ({correction})",
        AlertKind.PROPOSAL: f"correction proposed ({correction}), awaiting approval",
    }[kind]
    text = f"posledger {key}: {what}" + (f": {outcome.detail}" if outcome.detail else "")
    fields = {
        **_key_fields(key),
        "outcome": outcome.outcome.value,
        "correction": correction,
        "detail": outcome.detail,
    }
    return Alert(kind, text, fields, at)


def _money_alert(checked: MoneyOutcome, at: datetime) -> Alert:
    key = checked.key
    coin = key.settle_coin or ""
    text = (
        f"posledger {key}: money of lifecycle {checked.lifecycle} differs from the exchange's "
        f"records by {checked.check.difference:+f} {coin}, unexplained"
    ).rstrip()
    fields = {
        **_key_fields(key),
        "lifecycle": str(checked.lifecycle),
        "difference": str(checked.check.difference),
        "settle_coin": coin,
    }
    return Alert(AlertKind.MONEY, text, fields, at)
