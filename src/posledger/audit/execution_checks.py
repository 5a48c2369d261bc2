"""Check ``executions`` of :func:`~posledger.audit.verify`: no exec_id applied twice (per venue
and account, the ledger's dedup scope), every applied execution matched with its
``ExecutionSeen`` marker (pointing at its key, with the same payload), and no marker without its
execution. Executions and markers are matched whatever order the log holds them in. Executions
of an unknown type are flagged on the way (:class:`~posledger.audit.findings.Flag`).

Books (docs/books.md): an execution shared between the books of one account is applied once in
each receiving book's stream under the same exec_id, with one marker pointing at one of them and
recording the account's execution; the shares must add up to it. The same exec_id in two
different accounts' keys, or twice in one stream, is still applied twice."""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation

import attrs

from posledger.audit.findings import Check, Findings, Flag, Problem, StreamAudit
from posledger.core.errors import PosledgerError
from posledger.core.events import ExecutionEvent, ExecutionSeen, marker_id
from posledger.core.model import ExecKind, Fill, PositionKey, Side


@attrs.define
class _Applied:
    stream_id: uuid.UUID
    version: int
    exec_id: str
    account: PositionKey
    """The account key of the book that applied it: shares go to books of this account only."""
    payload: str | None
    shares: list[tuple[uuid.UUID, str | None]] = attrs.Factory(list)
    """Further books' streams that applied a share of it, with their payloads."""

    def streams(self) -> list[uuid.UUID]:
        return [self.stream_id, *(stream for stream, _ in self.shares)]


@attrs.frozen
class _Marker:
    stream_id: uuid.UUID
    exec_id: str
    payload: str


@attrs.frozen
class _Fields:
    """A marker payload's fill fields (``Fill.payload``), decimals parsed."""

    order_id: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    kind: str

    @classmethod
    def of(cls, payload: str | None, key: PositionKey) -> _Fields | None:
        """The fields of ``payload`` written for ``key``; None if it is not one."""
        prefix = f"{key}|"
        if payload is None or not payload.startswith(prefix):
            return None
        parts = payload[len(prefix) :].rsplit("|", 5)
        if len(parts) != 6:
            return None
        order_id, side, qty, price, fee, kind = parts
        try:
            return cls(order_id, Side.parse(side), Decimal(qty), Decimal(price), Decimal(fee), kind)
        except (PosledgerError, InvalidOperation):
            return None

    @property
    def signed_qty(self) -> Decimal:
        return self.qty * self.side.sign


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
    """Matches applied executions with their markers. An execution whose marker names its
    stream and payload exactly is settled as soon as both are read (one small entry kept, for
    duplicates); one that may be shared between books (its marker records the account's
    execution) is matched at the end of the log, when all its shares are read."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.settled: dict[uuid.UUID, uuid.UUID] = {}
        """marker id -> the stream that applied it, once matched with its marker exactly."""
        self.applied: dict[uuid.UUID, _Applied] = {}
        """marker id -> where the execution was applied (its first book, and any shares)."""
        self.markers: dict[uuid.UUID, _Marker] = {}
        """Markers not settled with their execution yet."""
        self.executions = 0
        self.markers_read = 0

    def execution(self, stream: StreamAudit, event: ExecutionEvent) -> None:
        """An execution applied to ``stream`` (a stream with a key)."""
        self.executions += 1
        key = stream.key
        assert key is not None
        seen_id = marker_id(key.venue, key.account, event.exec_id)
        version = event.originator_version
        if event.kind == ExecKind.UNKNOWN:
            self.findings.flags.append(Flag(key, version, event.exec_id, event.venue_type))
        first = self.applied.get(seen_id)
        settled = self.settled.get(seen_id)
        if first is None and settled is None:
            payload = _payload(key, event)
            applied = _Applied(stream.stream_id, version, event.exec_id, key.account_key, payload)
            self.applied[seen_id] = applied
            self._settle(seen_id, applied)
        elif (
            first is not None
            and first.account == key.account_key
            and (stream.stream_id not in first.streams())
        ):
            first.shares.append((stream.stream_id, _payload(key, event)))  # another book's share
        else:
            where_id = first.stream_id if first is not None else settled
            where = self.findings.key_of_stream(where_id) if where_id is not None else None
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"exec_id {event.exec_id!r} applied again ({type(event).__name__}); "
                f"first applied to {where if where is not None else where_id}",
                version,
            )

    def marker(self, event: ExecutionSeen) -> None:
        """An ``ExecutionSeen`` marker: at most one per execution."""
        self.markers_read += 1
        seen_id = event.originator_id
        if seen_id in self.markers or seen_id in self.settled:
            self.findings.problem(
                self.findings.streams.get(event.stream_id),
                Check.EXECUTIONS,
                f"a second ExecutionSeen marker for exec_id {event.exec_id!r}",
            )
            return
        self.markers[seen_id] = _Marker(event.stream_id, event.exec_id, event.payload)
        applied = self.applied.get(seen_id)
        if applied is not None:
            self._settle(seen_id, applied)

    def _settle(self, seen_id: uuid.UUID, applied: _Applied) -> None:
        """Settle an execution whose marker names its stream, exec_id and payload exactly: a
        share of an execution split between books never does (its marker records the
        account's execution), so no other share can follow."""
        marker = self.markers.get(seen_id)
        if (
            marker is not None
            and not applied.shares
            and (marker.stream_id, marker.exec_id, marker.payload)
            == (applied.stream_id, applied.exec_id, applied.payload)
        ):
            del self.markers[seen_id], self.applied[seen_id]
            self.settled[seen_id] = applied.stream_id

    def _match(self, applied: _Applied, marker: _Marker) -> None:
        """The marker points at a stream that applied the execution, with its payload: the
        stream's own, or the account's execution the books' shares add up to."""
        stream = self.findings.streams.get(applied.stream_id)
        if marker.stream_id not in applied.streams():
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
        elif applied.payload is None or (marker.payload == applied.payload and not applied.shares):
            return
        elif not self._adds_up(applied, marker):
            applied_as = repr(applied.payload)
            if applied.shares:
                applied_as = f"{len(applied.shares) + 1} books' shares " + ", ".join(
                    repr(p) for p in (applied.payload, *(p for _, p in applied.shares))
                )
            self.findings.problem(
                stream,
                Check.EXECUTIONS,
                f"{applied.exec_id!r} was applied as {applied_as} but its marker "
                f"records {marker.payload!r}",
                applied.version,
            )

    def _adds_up(self, applied: _Applied, marker: _Marker) -> bool:
        """Whether the shares (one, for an execution allocated whole to a book) are the
        account's execution the marker records: its order, price and kind, its fee summed,
        and, for one that changes size, its signed quantity summed."""
        recorded = _Fields.of(marker.payload, applied.account)
        shares = [applied.payload, *(payload for _, payload in applied.shares)]
        keys = [self.findings.key_of_stream(s) for s in applied.streams()]
        fields = [_Fields.of(p, k) for p, k in zip(shares, keys, strict=True) if k is not None]
        if recorded is None or len(fields) != len(shares) or None in fields:
            return False
        parts = [f for f in fields if f is not None]
        same = all(
            (f.order_id, f.price, f.kind) == (recorded.order_id, recorded.price, recorded.kind)
            for f in parts
        )
        fees = sum((f.fee for f in parts), Decimal(0)) == recorded.fee
        sizes = recorded.kind == ExecKind.FUNDING or (
            sum((f.signed_qty for f in parts), Decimal(0)) == recorded.signed_qty
        )
        return same and fees and sizes

    def finish(self) -> None:
        """At the end of the log: each execution matched with its marker; executions without a
        marker, markers without an execution."""
        for seen_id, applied in self.applied.items():
            marker = self.markers.pop(seen_id, None)
            if marker is not None:
                self._match(applied, marker)
                continue
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
