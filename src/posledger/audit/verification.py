"""Verify: replay the whole store and check the ledger's invariants, reporting problems by key.

The log is read once, in bulk pages: :class:`~posledger.audit.stream_checks.StreamChecks` folds
and checks every stream (``sizes``, ``lifecycles``) and
:class:`~posledger.audit.execution_checks.ExecutionChecks` matches executions with their markers
(``executions``). The replayed states are then compared with snapshot-based loads
(``ledger``, :mod:`~posledger.audit.ledger_check`) and with the read model's table
(``read_model``, :mod:`~posledger.audit.readmodel_check`).
"""

from __future__ import annotations

import time
import uuid

import attrs
from eventsourcing.persistence import Notification

from posledger.audit.execution_checks import ExecutionChecks
from posledger.audit.findings import Check, Findings, Flag, Problem
from posledger.audit.html import cell, html_table
from posledger.audit.ledger_check import check_ledger_loads
from posledger.audit.readmodel_check import compare_read_model, read_model_rows
from posledger.audit.source import PAGE_SIZE, Decoder, Progress, Source, notifications, opened
from posledger.audit.stream_checks import StreamChecks
from posledger.core.events import POSITION_TOPICS, ExecutionEvent, ExecutionSeen, PositionEvent
from posledger.core.model import PositionKey
from posledger.store.readmodel import TABLE


@attrs.frozen
class VerifyReport:
    """What :func:`verify` found. ``ok`` when there is no problem."""

    problems: tuple[Problem, ...]
    keys_checked: int
    events_checked: int
    executions_checked: int
    markers_checked: int
    read_model_checked: bool
    snapshot_loads_checked: int
    """Keys loaded through their latest snapshot (check 4); keys without one are skipped."""
    seconds: float
    flags: tuple[Flag, ...] = ()
    """Executions of a type posledger does not know: reported, but not problems (``ok`` stays
    True): nothing is broken, a human should check them once."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def for_key(self, key: PositionKey | None) -> list[Problem]:
        return [p for p in self.problems if p.key == key]

    def by_check(self, check: Check | str) -> list[Problem]:
        return [p for p in self.problems if p.check == check]

    @property
    def keys_with_problems(self) -> list[PositionKey | None]:
        seen: dict[str, PositionKey | None] = {}
        for problem in self.problems:
            seen.setdefault(str(problem.key), problem.key)
        return list(seen.values())

    def summary(self) -> str:
        checked = (
            f"{self.keys_checked} keys, {self.events_checked} events, "
            f"{self.executions_checked} executions, {self.markers_checked} markers"
        )
        extra = []
        if self.snapshot_loads_checked:
            extra.append(f"{self.snapshot_loads_checked} snapshot loads")
        if self.read_model_checked:
            extra.append(f"read model {TABLE}")
        also = f" (+ {', '.join(extra)})" if extra else ""
        flagged = f"; {len(self.flags)} execution(s) of an unknown type" if self.flags else ""
        if self.ok:
            return f"OK: {checked}{also} in {self.seconds:.2f}s{flagged}"
        return (
            f"{len(self.problems)} problem(s) in {len(self.keys_with_problems)} key(s); "
            f"checked {checked}{also} in {self.seconds:.2f}s{flagged}"
        )

    def __str__(self) -> str:
        lines = [f"  {p}" for p in self.problems] + [f"  {f}" for f in self.flags]
        return "\n".join([self.summary(), *lines])

    def _repr_html_(self) -> str:
        return verify_html(self)


def verify_html(report: VerifyReport) -> str:
    """An HTML rendering of a :class:`VerifyReport`: its summary, then one row per problem."""
    colour = "#2e7d32" if report.ok else "#c62828"
    summary = f'<p style="color:{colour};font-weight:bold">{cell(report.summary())}</p>'
    if report.ok and not report.flags:
        return summary
    problems = (
        (None, (p.key if p.key is not None else "(no key)", p.version, p.check.value, p.detail))
        for p in report.problems
    )
    flags = ((None, (f.key, f.version, "unknown execution", f.detail)) for f in report.flags)
    return summary + html_table(("key", "v", "check", "detail"), (*problems, *flags))


class _LogChecks:
    """The checks that read the log, fed one notification at a time."""

    def __init__(self) -> None:
        self.findings = Findings()
        self.streams = StreamChecks(self.findings)
        self.executions = ExecutionChecks(self.findings)

    def read(self, notification: Notification, decode: Decoder) -> None:
        """Check one notification; one that cannot be decoded is a problem of its stream, which
        is not checked further."""
        try:
            event = decode(notification)
        except Exception as error:
            stream = self.findings.streams.get(uuid.UUID(str(notification.originator_id)))
            self.findings.problem(
                stream,
                Check.DECODE,
                f"notification {notification.id} ({notification.topic}) cannot be decoded: {error}",
                notification.originator_version,
            )
            if stream is not None:
                stream.broken = True
            return
        if isinstance(event, ExecutionSeen):
            self.executions.marker(event)
        elif isinstance(event, PositionEvent):
            stream = self.streams.read(event)
            if stream is not None and isinstance(event, ExecutionEvent):
                self.executions.execution(stream, event)

    def finish(self) -> None:
        """At the end of the log: what was still waiting for an event that never came."""
        self.streams.finish()
        self.executions.finish()


def verify(
    source: Source,
    *,
    progress: Progress | None = None,
    check_ledger: bool = True,
    check_read_model: bool = True,
    page_size: int = PAGE_SIZE,
) -> VerifyReport:
    """Replay the whole store and check its invariants, reporting every problem by key.

    1. ``sizes``: each key's size equals the signed sum of the size changes its events record,
       recomputed from the event fields without ``evolve`` (fills: reduce-only ones never flip and
       are clipped at the position, with the excess recorded as overfill; absorbed ones change
       nothing; funding changes nothing; ``Reconciled``: after - before, where ``before`` must be
       what the events before it imply).
    2. ``executions``: no exec_id applied twice (per venue and account, the ledger's dedup
       scope), every applied execution has its ``ExecutionSeen`` marker pointing at its key with
       the same payload, and no marker lacks its execution. An execution shared between the
       books of one account is one in each book's stream, with one marker at one of them
       recording the account's execution, which the shares must add up to.
    3. ``lifecycles``: a stream starts with ``KeyRegistered``, versions are contiguous, every
       lifecycle end is followed by its ``Closed`` (with the replayed figures), numbered 1, 2, …
    4. ``ledger``: loading a key the Ledger's way, through its latest snapshot plus the events
       after it, equals the bulk replay (keys without a snapshot load by the same fold).
    5. ``read_model``: the ``posledger_positions`` table, if the store has one, equals the replay.

    Memory: the replay holds one state per key; the execution check holds one small entry per
    execution (its marker id), and an execution shared between books whole until the end."""
    started = time.perf_counter()
    checks = _LogChecks()
    findings = checks.findings
    topics = (*POSITION_TOPICS, ExecutionSeen.TOPIC)
    read_model = False
    loads = 0
    with opened(source) as app:
        for notification, decode in notifications(app, topics, progress, page_size):
            checks.read(notification, decode)
        checks.finish()
        states = findings.states()
        if check_ledger:
            loads = check_ledger_loads(app, findings, states)
        if check_read_model:
            rows = read_model_rows(app)
            if rows is not None:
                read_model = True
                compare_read_model(rows, findings, states)
    problems = sorted(
        findings.problems,
        key=lambda p: (str(p.key) if p.key is not None else "~", p.version or 0),
    )
    return VerifyReport(
        problems=tuple(problems),
        keys_checked=len(findings.streams),
        events_checked=checks.streams.events,
        executions_checked=checks.executions.executions,
        markers_checked=checks.executions.markers_read,
        read_model_checked=read_model,
        snapshot_loads_checked=loads,
        seconds=time.perf_counter() - started,
        flags=tuple(sorted(findings.flags, key=lambda f: (str(f.key), f.version))),
    )
