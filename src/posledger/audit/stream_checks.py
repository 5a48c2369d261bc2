"""Checks ``sizes`` and ``lifecycles`` of :func:`~posledger.audit.verify`, event by event: each
stream starts with ``KeyRegistered`` and its versions are contiguous, its size equals the size
changes its events record (recomputed without ``evolve``), and every lifecycle end is followed by
its ``Closed``."""

from __future__ import annotations

from decimal import Decimal

from posledger.audit.findings import Check, Findings, StreamAudit
from posledger.audit.format import ZERO, signed_size
from posledger.core.events import (
    Closed,
    Filled,
    KeyRegistered,
    PartiallyFilled,
    PositionEvent,
    Reconciled,
)
from posledger.core.model import Side
from posledger.core.position import PositionState, evolve, key_of


class StreamChecks:
    """Folds every stream's events, checking each one against the stream so far."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.events = 0
        """Position events read, whether or not their stream could be checked."""

    def read(self, event: PositionEvent) -> StreamAudit | None:
        """Check ``event`` and fold it into its stream; None when the stream is (now) broken and
        the event was not applied."""
        self.events += 1
        stream = self._stream_of(event)
        if stream is None:
            return None
        stream.events += 1
        if stream.broken:
            return None
        before = stream.state
        after = self._applied(stream, event)
        if after is None:
            return None
        self._check_size(stream, event, after)
        self._check_lifecycle(stream, before, event, after)
        stream.state = after
        return stream

    def _stream_of(self, event: PositionEvent) -> StreamAudit | None:
        """The event's stream; a stream's first event must be ``KeyRegistered`` v1, or the
        stream is recorded broken and None returned."""
        stream = self.findings.streams.get(event.originator_id)
        if stream is not None:
            return stream
        version = event.originator_version
        stream = StreamAudit(event.originator_id, None)
        self.findings.streams[event.originator_id] = stream
        if isinstance(event, KeyRegistered):
            stream.key = key_of(event)
        if not isinstance(event, KeyRegistered) or version != 1:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"stream starts with {type(event).__name__} v{version}, not KeyRegistered v1",
                version,
            )
            stream.broken = True
            return None
        return stream

    def _applied(self, stream: StreamAudit, event: PositionEvent) -> PositionState | None:
        """The stream's state after ``event``, or None (and the stream broken) when the event
        does not follow it: a version gap, or an event ``evolve`` refuses."""
        state = stream.state
        version = event.originator_version
        name = type(event).__name__
        if state is not None and version != state.version + 1:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"{name} has version {version} after v{state.version}: "
                "versions are not contiguous; the rest of the stream is not checked",
                version,
            )
            stream.broken = True
            return None
        if state is not None and isinstance(event, KeyRegistered):
            self.findings.problem(
                stream, Check.LIFECYCLES, "KeyRegistered again mid-stream", version
            )
        try:
            after = evolve(state, event)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"{name} cannot be applied: {error}; the rest of the stream is not checked",
                version,
            )
            stream.broken = True
            return None
        if isinstance(event, KeyRegistered) and key_of(event).stream_id != stream.stream_id:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"KeyRegistered names {key_of(event)}, whose stream is "
                f"{key_of(event).stream_id}, not this one",
                version,
            )
        return after

    # -- sizes ------------------------------------------------------------------------------

    def _check_size(self, stream: StreamAudit, event: PositionEvent, after: PositionState) -> None:
        """Recompute the signed size from the event's own fields (not with evolve) and compare."""
        if isinstance(event, PartiallyFilled | Filled):
            expected = self._after_fill(stream, event)
        elif isinstance(event, Reconciled):
            expected = self._after_correction(stream, event)
        else:
            expected = stream.expected
        if after.signed_size != expected:
            self.findings.problem(
                stream,
                Check.SIZES,
                f"after {type(event).__name__} the replayed size is {after.signed_size:+} but "
                f"the events' size changes sum to {expected:+}",
                event.originator_version,
            )
            expected = after.signed_size
        stream.expected = expected

    def _after_fill(self, stream: StreamAudit, event: PartiallyFilled | Filled) -> Decimal:
        """An absorbed fill changes nothing; a reduce-only one never flips: what it takes beyond
        the position must be recorded as overfill."""
        expected = stream.expected
        sign = Decimal(Side(event.side).sign)
        if event.absorbed:
            return expected
        if not event.reduce_only:
            return expected + sign * event.qty
        reducible = abs(expected) if expected * sign < 0 else ZERO
        beyond = event.qty - reducible
        if beyond > 0 and event.overfill < beyond:
            self.findings.problem(
                stream,
                Check.SIZES,
                f"reduce-only {type(event).__name__} {event.exec_id} of {event.qty} against "
                f"{reducible} held records overfill {event.overfill}, not {beyond}: "
                "clipped silently",
                event.originator_version,
            )
        return expected + sign * min(event.qty, reducible)

    def _after_correction(self, stream: StreamAudit, event: Reconciled) -> Decimal:
        """A correction moves the size from its ``before`` to its ``after``, and its ``before``
        must be what the events before it imply."""
        expected = stream.expected
        before = signed_size(event.before_side, event.before_size)
        after = signed_size(event.after_side, event.after_size)
        version = event.originator_version
        if event.after_size > 0 and not event.after_side:
            self.findings.problem(
                stream,
                Check.SIZES,
                f"Reconciled after_size {event.after_size} has no side",
                version,
            )
        if before != expected:
            self.findings.problem(
                stream,
                Check.SIZES,
                f"Reconciled({event.kind}) says the ledger held {before:+} "
                f"but the events before it imply {expected:+}",
                version,
            )
            return after
        return expected + (after - before)

    # -- lifecycles -------------------------------------------------------------------------

    def _check_lifecycle(
        self,
        stream: StreamAudit,
        before: PositionState | None,
        event: PositionEvent,
        after: PositionState,
    ) -> None:
        """The event that ends a lifecycle must be followed by its ``Closed``."""
        if isinstance(event, Closed):
            self._check_closed(stream, event)
            return
        waiting = stream.awaiting_close
        if waiting is not None:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"lifecycle {waiting.number} ended at v{stream.awaiting_since} but "
                f"{type(event).__name__} follows instead of Closed",
                event.originator_version,
            )
            stream.awaiting_close = None
        ended = after.last_closed
        if before is not None and ended is not None and ended != before.last_closed:
            stream.awaiting_close = ended
            stream.awaiting_since = event.originator_version

    def _check_closed(self, stream: StreamAudit, event: Closed) -> None:
        """A ``Closed`` follows the end of its lifecycle, records the replayed figures, and
        lifecycles are numbered 1, 2, 3 …"""
        version = event.originator_version
        waiting = stream.awaiting_close
        if waiting is None:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"Closed(lifecycle {event.lifecycle}, {event.reason}) does not follow the "
                "end of a lifecycle",
                version,
            )
        else:
            if event.lifecycle != waiting.number:
                self.findings.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"Closed records lifecycle {event.lifecycle}, but v{version - 1} ended "
                    f"lifecycle {waiting.number}",
                    version,
                )
            figures = (event.realized_pnl, event.fees, event.funding)
            replayed = (waiting.realized_pnl, waiting.fees, waiting.funding)
            if figures != replayed:
                self.findings.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"Closed(lifecycle {event.lifecycle}) records pnl/fees/funding "
                    f"{'/'.join(map(str, figures))}, the replay gives "
                    f"{'/'.join(map(str, replayed))}",
                    version,
                )
        if event.lifecycle != stream.last_closed + 1:
            self.findings.problem(
                stream,
                Check.LIFECYCLES,
                f"Closed(lifecycle {event.lifecycle}) follows lifecycle "
                f"{stream.last_closed}: numbers must increase by one",
                version,
            )
        stream.last_closed = event.lifecycle
        stream.awaiting_close = None

    # -- the end of the log -----------------------------------------------------------------

    def finish(self) -> None:
        """At the end of the log: a lifecycle still waiting for its Closed, and streams that
        never registered their key."""
        for stream in self.findings.streams.values():
            if stream.awaiting_close is not None and not stream.broken:
                self.findings.problem(
                    stream,
                    Check.LIFECYCLES,
                    f"lifecycle {stream.awaiting_close.number} ended at "
                    f"v{stream.awaiting_since} but the stream ends without its Closed",
                    stream.awaiting_since,
                )
            if stream.key is None and stream.state is None and not stream.broken:
                self.findings.problem(stream, Check.LIFECYCLES, "stream without KeyRegistered")
