"""The Synchronizer's money check of the lifecycles it sees close (docs/design.md#money).

A lifecycle is checked once the exchange has had ``settle`` to book its last close: the
window runs from the lifecycle's opening (or just after the key's last checked window) to its
close plus ``settle``, the venue's money records of that window are read completely, and
``Ledger.check_money`` compares them. Agreement writes nothing, so which lifecycles were
checked is remembered in memory: after a restart the last closed lifecycle of each key is
checked once more, which writes nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import attrs

from posledger.core.events import Closed, PositionEvent
from posledger.core.model import (
    ExecKind,
    Fill,
    PositionKey,
    Snapshot,
    non_negative_delta,
    positive_int,
)
from posledger.core.money import MoneyCheck, MoneyPolicy, MoneyRecord
from posledger.core.position import PositionState
from posledger.ledger import Ledger

TICK = timedelta(microseconds=1)


def _settle(value: object) -> timedelta:
    return non_negative_delta(value, "settle")


def _lookback(value: object) -> timedelta:
    return non_negative_delta(value, "lookback")


def _confirmations(value: object) -> int:
    return positive_int(value, "confirmations")


@attrs.frozen
class MoneyChecks:
    """Turns the Synchronizer's money check on: ``policy`` says what agrees, ``settle`` how long
    after a close the exchange's record of it is awaited before the lifecycle is checked (its
    books lag its fills), ``lookback`` how old a close may be and still be checked."""

    policy: MoneyPolicy = attrs.field(factory=MoneyPolicy)
    settle: timedelta = attrs.field(default=timedelta(minutes=5), converter=_settle)
    lookback: timedelta = attrs.field(default=timedelta(days=7), converter=_lookback)
    confirmations: int = attrs.field(default=2, converter=_confirmations)
    """Consecutive rounds, each reading the records afresh, that must show the same difference
    before it is written: a record the exchange books late makes one round differ, not two."""


@attrs.frozen
class MoneyDue:
    """A closed lifecycle whose money is due for a check, and the window to check."""

    key: PositionKey
    lifecycle: int
    since: datetime
    until: datetime


@attrs.frozen
class MoneyOutcome:
    """What a round's money check of one lifecycle concluded: agreement, a difference written,
    or a difference seen ``seen`` times in a row and not yet written (it waits for
    ``MoneyChecks.confirmations``)."""

    key: PositionKey
    lifecycle: int
    check: MoneyCheck
    seen: int = 1

    @property
    def settled(self) -> bool:
        """The lifecycle needs no more checks: it agreed, or its difference was written."""
        return self.check.agrees or bool(self.check.events)


def candidates(
    states: Iterable[PositionState],
    checked: dict[PositionKey, int],
    now: datetime,
    lookback: timedelta,
) -> list[PositionState]:
    """Keys whose last closed lifecycle this process has not checked, and that changed within
    ``lookback`` (an older close is not checked)."""
    return [
        state
        for state in states
        if state.last_closed is not None
        and checked.get(state.key) != state.last_closed.number
        and now - state.updated_at <= lookback
    ]


def due(
    state: PositionState, history: Sequence[PositionEvent], now: datetime, settings: MoneyChecks
) -> MoneyDue | None:
    """The window of the key's last closed lifecycle, once ``settle`` has passed since its close
    (None before); it starts just after the key's last checked window if that is later."""
    summary = state.last_closed
    if summary is None:
        return None
    closes = [e for e in history if isinstance(e, Closed) and e.lifecycle == summary.number]
    if not closes:
        return None
    closed_at = closes[-1].timestamp
    until = closed_at + settings.settle
    if until > now:
        return None
    since = summary.opened_at or closed_at
    checked = state.money_checked_until
    if checked is not None and checked >= since:
        since = checked + TICK
    return MoneyDue(state.key, summary.number, min(since, until), until)


def funding_of(
    dues: Sequence[MoneyDue], fills: Iterable[Fill], snapshot: Snapshot
) -> list[tuple[PositionKey, list[Fill]]]:
    """The funding executions of the due lifecycles' windows, by key: what recovery records
    before a money check, so a funding row the bot never heard of is the real event, not a
    difference (a missed trade would have moved the size: reconciliation's business)."""
    windows = {item.key: item for item in dues}
    by_key: dict[PositionKey, list[Fill]] = {}
    for fill in fills:
        if fill.kind is not ExecKind.FUNDING or fill.symbol is None:
            continue
        key = snapshot.key(fill.symbol, fill.idx or 0)
        window = windows.get(key)
        if window is not None and window.since <= fill.exec_time <= window.until:
            by_key.setdefault(key, []).append(fill)
    return sorted(by_key.items(), key=lambda item: str(item[0]))


def check_due(
    ledger: Ledger,
    dues: Sequence[MoneyDue],
    records: Sequence[MoneyRecord],
    settings: MoneyChecks,
    now: datetime,
    runs: Mapping[tuple[PositionKey, int], tuple[Decimal, int]],
) -> list[MoneyOutcome]:
    """Each due lifecycle checked against the records (the venue's complete read of a window
    covering them all). A difference is written once ``settings.confirmations`` consecutive
    checks showed it (``runs``: the difference each unsettled lifecycle showed, how often)."""
    outcomes = []
    for item in dues:
        check = _check(ledger, item, records, settings.policy, now, record=False)
        if check.agrees:
            outcomes.append(MoneyOutcome(item.key, item.lifecycle, check))
            continue
        before = runs.get((item.key, item.lifecycle))
        seen = before[1] + 1 if before is not None and before[0] == check.difference else 1
        if seen >= settings.confirmations:
            check = _check(ledger, item, records, settings.policy, now, record=True)
        outcomes.append(MoneyOutcome(item.key, item.lifecycle, check, seen))
    return outcomes


def _check(
    ledger: Ledger,
    item: MoneyDue,
    records: Sequence[MoneyRecord],
    policy: MoneyPolicy,
    now: datetime,
    *,
    record: bool,
) -> MoneyCheck:
    """One due lifecycle's check: written (``record``) or only reported."""
    return ledger.check_money(
        item.key, records, since=item.since, until=item.until, policy=policy, at=now, record=record
    )
