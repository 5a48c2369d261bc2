"""Check ``executions`` of :func:`~posledger.audit.verify`: no exec_id applied twice (per venue
and account, the ledger's dedup scope), every applied execution matched with its
``ExecutionSeen`` marker (pointing at its key, with the same payload), and no marker without its
execution. Executions and markers are matched in whichever order the log holds them. Executions
of an unknown type are flagged on the way (:class:`~posledger.audit.findings.Flag`)."""

from __future__ import annotations

import uuid

import attrs

from posledger.audit.findings import Check, Findings, Flag, Problem, StreamAudit
from posledger.core.errors import PosledgerError
from posledger.core.events import ExecutionEvent, ExecutionSeen, marker_id
from posledger.core.model import ExecKind, Fill, PositionKey


@attrs.frozen
class _Applied:
    stream_id: uuid.UUID
    version: int
    exec_id: str
    payload: str | None


@attrs.frozen
class _Marker:
    stream_id: uuid.UUID
    exec_id: str
    payload: str


def _payload(key: PositionKey, event: ExecutionEvent) -> str | None:
    """What the Ledger wrote in the execution's marker; None if the event is not a valid fill."""
    try:
        fill = Fill(
            exec_id=event.exec_id,
            order_id=event.order_id,
            side=event.side,
            qty=event.qty,
            price=event.price,
            exec_time=event.exec_time,
            fee=event.fee,
            kind=event.kind,
        )
    except (PosledgerError, ValueError, TypeError):
        return None
    return f"{key}|{fill.payload()}"


class ExecutionChecks:
    """Matches applied executions with their markers; holds one small entry per execution."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.applied: dict[uuid.UUID, uuid.UUID] = {}
        """marker id -> the stream that applied it (first application), for duplicates."""
        self.unmatched: dict[uuid.UUID, _Applied] = {}
        """Applied executions whose marker has not been read yet."""
        self.markers: dict[uuid.UUID, _Marker] = {}
        """Markers whose execution has not been read yet."""
        self.executions = 0
        self.markers_read = 0

    def execution(self, stream: StreamAudit, event: ExecutionEvent) -> None:
        """An execution applied to ``stream`` (a stream with a key)."""
        self.executions += 1
        key = stream.key
        assert key is not None
        seen_id = marker_id(key.venue, key.account, event.exec_id)
        first = self.applied.get(seen_id)
        version = event.originator_version
        if event.kind == ExecKind.UNKNOWN:
            self.findings.flags.append(Flag(key, version, event.exec_id, event.venue_type))
        if first is not None:
            where = self.findings.key_of_stream(first)
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"exec_id {event.exec_id!r} applied again ({type(event).__name__}); "
                f"first applied to {where if where is not None else first}",
                version,
            )
            return
        self.applied[seen_id] = stream.stream_id
        applied = _Applied(stream.stream_id, version, event.exec_id, _payload(key, event))
        marker = self.markers.pop(seen_id, None)
        if marker is None:
            self.unmatched[seen_id] = applied
        else:
            self._match(applied, marker)

    def marker(self, event: ExecutionSeen) -> None:
        """An ``ExecutionSeen`` marker: at most one per execution."""
        self.markers_read += 1
        seen_id = event.originator_id
        marker = _Marker(event.stream_id, event.exec_id, event.payload)
        already = seen_id in self.applied and seen_id not in self.unmatched
        if already or seen_id in self.markers:
            self.findings.problem(
                self.findings.streams.get(event.stream_id),
                Check.EXECUTIONS,
                f"a second ExecutionSeen marker for exec_id {event.exec_id!r}",
            )
            return
        applied = self.unmatched.pop(seen_id, None)
        if applied is None:
            self.markers[seen_id] = marker
        else:
            self._match(applied, marker)

    def _match(self, applied: _Applied, marker: _Marker) -> None:
        """The marker points at the stream that applied the execution, with its payload."""
        stream = self.findings.streams.get(applied.stream_id)
        if marker.stream_id != applied.stream_id:
            where = self.findings.key_of_stream(marker.stream_id) or marker.stream_id
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"the ExecutionSeen marker of {applied.exec_id!r} points at {where}, not this key",
                applied.version,
            )
        elif marker.exec_id != applied.exec_id:
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"the marker of {applied.exec_id!r} records exec_id {marker.exec_id!r}",
                applied.version,
            )
        elif applied.payload is not None and marker.payload != applied.payload:
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"{applied.exec_id!r} was applied as {applied.payload!r} but its marker "
                f"records {marker.payload!r}",
                applied.version,
            )

    def finish(self) -> None:
        """At the end of the log: executions without a marker, markers without an execution."""
        for applied in self.unmatched.values():
            self.findings.problem(
                self.findings.streams.get(applied.stream_id),
                Check.EXECUTIONS,
                f"exec_id {applied.exec_id!r} was applied without its ExecutionSeen marker "
                "(a replayed WebSocket message would be applied again)",
                applied.version,
            )
        for marker in self.markers.values():
            owner = self.findings.streams.get(marker.stream_id)
            target = "" if owner is not None else f" (stream {marker.stream_id} is unknown)"
            self.findings.problems.append(
                Problem(
                    owner.key if owner is not None else None,
                    Check.EXECUTIONS,
                    f"ExecutionSeen marker of exec_id {marker.exec_id!r} without an applied "
                    f"execution{target}: that execution would be skipped as a duplicate",
                )
            )
