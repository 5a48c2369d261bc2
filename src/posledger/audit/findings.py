"""What :func:`~posledger.audit.verify` finds: the invariant broken (:class:`Check`), each
:class:`Problem`, and the running record of every stream that the checks share while the log
is read."""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum

import attrs

from posledger.audit.format import ZERO, shortened
from posledger.core.model import PositionKey
from posledger.core.position import LifecycleSummary, PositionState


class Check(StrEnum):
    """The invariant a :class:`Problem` breaks."""

    SIZES = "sizes"
    """The size equals the signed sum of the size changes its events record."""
    EXECUTIONS = "executions"
    """Every exec_id applied once, with its ExecutionSeen marker (and no marker without it)."""
    LIFECYCLES = "lifecycles"
    """Streams start with KeyRegistered, versions are contiguous, every lifecycle end is followed
    by its Closed and lifecycles are numbered 1, 2, 3 …"""
    LEDGER = "ledger"
    """Loading a key the Ledger's way (latest snapshot plus tail) equals the bulk replay."""
    READ_MODEL = "read_model"
    """The ``posledger_positions`` table, where it exists, equals the replay."""
    DECODE = "decode"
    """A stored event that cannot be decoded."""


@attrs.frozen
class Problem:
    """One broken invariant. ``key`` is None only when no key can be named (a stream without
    ``KeyRegistered``, a marker pointing nowhere); ``version`` is the stream version involved."""

    key: PositionKey | None
    check: Check
    detail: str
    version: int | None = None

    def __str__(self) -> str:
        where = str(self.key) if self.key is not None else "(no key)"
        at = f" v{self.version}" if self.version is not None else ""
        return f"{where}{at} [{self.check}] {self.detail}"


@attrs.frozen
class Flag:
    """An execution of a type posledger does not know (``kind`` ``unknown``): recorded as moving
    the size by its signed quantity, which the exchange's position confirms or corrects. Not a
    broken invariant, so not a :class:`Problem`: a human should look at it once
    (docs/design.md#exec-types)."""

    key: PositionKey
    version: int
    exec_id: str
    venue_type: str | None

    @property
    def detail(self) -> str:
        return (
            f"exec_id {self.exec_id!r} has an execution type posledger does not know "
            f"({self.venue_type!r}); it was recorded as moving the size by its signed quantity"
        )

    def __str__(self) -> str:
        return f"{self.key} v{self.version} [unknown execution] {self.detail}"


@attrs.define
class StreamAudit:
    """Running audit of one stream while the log is read."""

    stream_id: uuid.UUID
    key: PositionKey | None
    state: PositionState | None = None
    broken: bool = False
    """A check could not go on: the rest of the stream is not checked."""
    expected: Decimal = ZERO
    """Signed size recomputed from the event fields alone."""
    awaiting_close: LifecycleSummary | None = None
    awaiting_since: int = 0
    last_closed: int = 0
    events: int = 0


class Findings:
    """The problems found so far and the streams read so far, shared by every check of one
    verify run."""

    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, StreamAudit] = {}
        self.problems: list[Problem] = []
        self.flags: list[Flag] = []

    def problem(
        self, stream: StreamAudit | None, check: Check, detail: str, version: int | None = None
    ) -> None:
        """Record a problem of ``stream``, named by its key, else by its id in the detail."""
        key = stream.key if stream is not None else None
        if stream is not None and key is None:
            detail = f"stream {stream.stream_id}: {detail}"
        self.problems.append(Problem(key, check, detail, version))

    def key_of_stream(self, stream_id: uuid.UUID) -> PositionKey | None:
        stream = self.streams.get(stream_id)
        return stream.key if stream is not None else None

    def states(self) -> dict[uuid.UUID, PositionState]:
        """The replayed state of every stream that was checked to its end."""
        return {
            s.stream_id: s.state
            for s in self.streams.values()
            if s.state is not None and not s.broken and s.key is not None
        }


def state_differences(left: PositionState, right: PositionState) -> list[tuple[str, str, str]]:
    """Every field in which two states differ: (name, left's value, right's value), shortened."""
    out = []
    for field in attrs.fields(PositionState):
        a, b = getattr(left, field.name), getattr(right, field.name)
        if a != b:
            out.append((field.name, shortened(a), shortened(b)))
    return out
