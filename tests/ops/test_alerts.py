"""Alert hooks: each alert once (a suspect when it appears, a failure streak when it reaches the
threshold, an outage when it begins), filtered by kind; a hook that raises breaks nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from posledger import ExchangeUnavailable, Ledger, ReconcilePolicy, StorageUnavailable
from posledger.drivers.sync import Synchronizer
from posledger.ops.alerts import Alert, AlertKind, Alerts
from tests.drivers.test_sync import AGI, ScriptedVenue
from tests.helpers import at, fill


def phantom_rounds(alerts: Alerts, policy: ReconcilePolicy | None = None) -> ScriptedVenue:
    """AGIUSDT short 4160 in the ledger, nothing on the exchange, for three rounds."""
    venue = ScriptedVenue()
    with Ledger.open("memory://", policy=policy) as ledger:
        ledger.record_fill(AGI, fill("open", "sell", "4160", "0.05", symbol="AGIUSDT"))
        sync = Synchronizer(ledger, venue, clock=lambda: venue.now, observers=[alerts])
        for minute in (10, 11, 12):
            venue.now = at(minute)
            sync.run_once()
    return venue


def test_a_suspect_then_its_correction() -> None:
    seen: list[Alert] = []
    phantom_rounds(Alerts(seen.append))
    assert [a.kind for a in seen] == [AlertKind.SUSPECT, AlertKind.CORRECTION]
    assert seen[1].text.startswith(f"posledger {AGI}: corrected (phantom)")
    assert seen[1].fields["symbol"] == "AGIUSDT" and seen[1].fields["correction"] == "phantom"


def test_a_held_correction_alerts_once_as_a_proposal() -> None:
    seen: list[Alert] = []
    phantom_rounds(Alerts(seen.append), ReconcilePolicy(hold_for_approval={"phantom"}))
    assert [a.kind for a in seen] == [AlertKind.SUSPECT, AlertKind.PROPOSAL]


def test_a_suspect_that_stays_one_alerts_once() -> None:
    seen: list[Alert] = []
    phantom_rounds(Alerts(seen.append), ReconcilePolicy(confirmations=5))
    assert [a.kind for a in seen] == [AlertKind.SUSPECT]


def test_failed_rounds_alert_once_per_streak_at_the_threshold() -> None:
    seen: list[Alert] = []
    alerts = Alerts(seen.append, failed_rounds=2)
    venue = ScriptedVenue()
    with Ledger.open("memory://") as ledger:
        sync = Synchronizer(ledger, venue, clock=lambda: venue.now, observers=[alerts])
        for failures in (3, 2):
            venue.fail_snapshot = failures
            for _ in range(failures):
                with pytest.raises(ExchangeUnavailable):
                    sync.run_once()
            sync.run_once()
    assert [a.kind for a in seen] == [AlertKind.FAILED_ROUNDS] * 2
    assert seen[0].text == (
        "posledger bybit/main/linear: 2 sync rounds failed in a row; last: retCode 10006: "
        "rate limited"
    )


def test_a_storage_outage_alerts_once_until_a_write_goes_through(tmp_path: Path) -> None:
    seen: list[Alert] = []
    path = tmp_path / "ledger.db"
    with Ledger.open(f"sqlite:///{path}", timeout=0.2, observers=[Alerts(seen.append)]) as ledger:
        for outage in range(2):
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            for n in range(2):
                with pytest.raises(StorageUnavailable):
                    ledger.record_fill(AGI, fill(f"lost-{outage}-{n}", "buy", "1"))
            blocker.execute("ROLLBACK")
            blocker.close()
            ledger.record_fill(AGI, fill(f"after-{outage}", "buy", "1"))
    assert [a.kind for a in seen] == [AlertKind.STORAGE_OUTAGE] * 2


def test_hooks_get_the_kinds_they_asked_for_and_one_that_raises_breaks_nothing() -> None:
    corrections: list[Alert] = []
    everything: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("hook bug")

    alerts = Alerts(broken)
    alerts.subscribe(corrections.append, kinds=["correction"])
    alerts.subscribe(everything.append)
    phantom_rounds(alerts)
    assert [a.kind for a in corrections] == [AlertKind.CORRECTION]
    assert [a.kind for a in everything] == [AlertKind.SUSPECT, AlertKind.CORRECTION]
