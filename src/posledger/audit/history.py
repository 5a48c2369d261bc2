"""History rows: one key's events explained one by one, with the sizes before and after each and
the exchange's evidence behind every correction."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from posledger.audit.format import ZERO, side_value, signed_quantity, signed_size
from posledger.audit.html import html_table
from posledger.audit.replays import replay_events
from posledger.audit.source import PAGE_SIZE, Progress, Source, key_events
from posledger.core.events import (
    Allocated,
    Closed,
    CorrectionEvent,
    CorrectionProposed,
    ExchangeSnapshot,
    ExecutionEvent,
    ExitRequested,
    OpenRequested,
    OrderEnded,
    PositionEvent,
    ProposalDecided,
)
from posledger.core.model import PositionKey
from posledger.core.position import PositionState, evolve


@attrs.frozen
class Evidence:
    """The exchange snapshot behind an ``ExchangeSnapshot``, a ``Reconciled`` or a
    ``CorrectionProposed``."""

    taken_at: datetime
    side: str | None
    size: Decimal
    seq: int | None
    avg_price: Decimal | None
    confirmations: int

    @property
    def signed_size(self) -> Decimal:
        return signed_size(self.side, self.size)


@attrs.frozen
class HistoryRow:
    """One event of a key, explained: what it was and what it did to the position.

    ``lifecycle`` is the lifecycle the key is in after the event (for ``Closed``, the one it
    records). ``reason``: ``Reconciled.kind``, ``Closed.reason``, ``OrderEnded.status``, the
    execution kind (``trade``, ``funding``, ``liquidation`` …), or ``suspect`` / ``agrees`` for
    an ``ExchangeSnapshot``. ``realized_pnl`` is the key's running total after the event."""

    key: PositionKey
    time: datetime
    version: int
    event: str
    lifecycle: int
    side_before: str | None
    size_before: Decimal
    side_after: str | None
    size_after: Decimal
    status: str
    side: str | None = None
    qty: Decimal | None = None
    price: Decimal | None = None
    fee: Decimal | None = None
    exec_id: str | None = None
    order_id: str | None = None
    reason: str | None = None
    evidence: Evidence | None = None
    reduce_only: bool = False
    absorbed: bool = False
    overfill: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    @property
    def signed_size_before(self) -> Decimal:
        return signed_size(self.side_before, self.size_before)

    @property
    def signed_size_after(self) -> Decimal:
        return signed_size(self.side_after, self.size_after)

    @property
    def size_change(self) -> Decimal:
        """Signed change of the position (long positive)."""
        return self.signed_size_after - self.signed_size_before

    def _repr_html_(self) -> str:
        return history_html([self])


class HistoryRows(list[HistoryRow]):
    """A plain list of :class:`HistoryRow` that a notebook shows as a table."""

    def _repr_html_(self) -> str:
        return history_html(self)


def _event_fields(event: PositionEvent, allocated: Allocated | None) -> dict[str, Any]:
    """What a row shows of the event itself: the execution or request, the reason, the
    evidence (in a book's correction, the exchange's size is the account's, from the
    ``Allocated`` just before it: docs/books.md#reconciliation)."""
    if isinstance(event, ExecutionEvent):
        return {
            "side": event.side,
            "qty": event.qty,
            "price": event.price,
            "fee": event.fee,
            "exec_id": event.exec_id,
            "order_id": event.order_id or None,
            "reason": event.kind,
            "reduce_only": event.reduce_only,
            "absorbed": event.absorbed,
            "overfill": event.overfill,
        }
    if isinstance(event, OpenRequested | ExitRequested):
        return {
            "side": event.side,
            "qty": event.qty,
            "price": event.price,
            "order_id": event.order_id,
            "reduce_only": isinstance(event, ExitRequested),
        }
    if isinstance(event, OrderEnded):
        return {"order_id": event.order_id, "reason": event.status}
    if isinstance(event, ExchangeSnapshot):
        evidence = Evidence(
            taken_at=event.taken_at,
            side=event.side or None,
            size=event.size,
            seq=event.seq,
            avg_price=event.avg_price,
            confirmations=event.confirmations,
        )
        return {"reason": "suspect" if event.suspect else "agrees", "evidence": evidence}
    if isinstance(event, CorrectionEvent):
        side, size = event.after_side or None, event.after_size
        if allocated is not None:
            shown = allocated.account_after
            side, size = (None if shown == 0 else "buy" if shown > 0 else "sell"), abs(shown)
        evidence = Evidence(
            taken_at=event.snapshot_taken_at,
            side=side,
            size=size,
            seq=event.snapshot_seq,
            avg_price=event.snapshot_avg_price,
            confirmations=event.confirmations,
        )
        if isinstance(event, CorrectionProposed):
            return {"reason": f"{event.kind} proposed {event.proposal_id}", "evidence": evidence}
        return {"reason": event.kind, "evidence": evidence}
    if isinstance(event, ProposalDecided):
        return {
            "reason": f"{event.proposal_id} {event.decision} by {event.operator}: {event.reason}"
        }
    if isinstance(event, Closed):
        return {"reason": event.reason}
    if isinstance(event, Allocated):
        return {"exec_id": event.exec_id, "reason": allocation_text(event)}
    return {}


def allocation_text(event: Allocated) -> str:
    """Why a book took part of an account's change, in a few words: ``adl -0.5 pro rata among
    alpha, beta: share -0.4`` (docs/books.md#allocation)."""
    books = ", ".join(book_label(book) for book in event.books)
    how = "pro rata among" if event.rule == "pro_rata" else "to the unassigned book"
    return (
        f"{event.cause} {signed_quantity(event.total)} {how} {books}: "
        f"share {signed_quantity(event.share)}"
    )


def book_label(book: str) -> str:
    """A book's name as a person reads it: the default book ``""`` is ``(default)``."""
    return book or "(default)"


def history_row(
    before: PositionState | None,
    event: PositionEvent,
    after: PositionState,
    previous: PositionEvent | None = None,
) -> HistoryRow:
    """The row of ``event``, which took the key from ``before`` (None: no state yet) to
    ``after``; ``previous`` is the stream's event before it."""
    allocated = previous if isinstance(previous, Allocated) else None
    return HistoryRow(
        key=after.key,
        time=event.timestamp,
        version=event.originator_version,
        event=type(event).__name__,
        lifecycle=event.lifecycle if isinstance(event, Closed) else after.lifecycle,
        side_before=side_value(before.side) if before is not None else None,
        size_before=before.size if before is not None else ZERO,
        side_after=side_value(after.side),
        size_after=after.size,
        status=after.status.value,
        realized_pnl=after.realized_pnl,
        **_event_fields(event, allocated),
    )


def history_rows(
    source: Source | Iterable[PositionEvent], key: PositionKey | None = None
) -> HistoryRows:
    """One :class:`HistoryRow` per event of ``key``, oldest first, folded with ``evolve`` (the
    sizes before/after are the ledger's own states). ``source`` is a Ledger, a URL, or the
    key's events (then ``key`` may be omitted; given, it selects that key's events)."""
    rows = HistoryRows()
    state: PositionState | None = None
    previous: PositionEvent | None = None
    for event in key_events(source, key):
        after = evolve(state, event)
        rows.append(history_row(state, event, after, previous))
        state, previous = after, event
    return rows


def history_stream(
    source: Source,
    *,
    progress: Progress | None = None,
    page_size: int = PAGE_SIZE,
) -> Generator[HistoryRow, None, None]:
    """Every key's :class:`HistoryRow` s in log order, from one bulk replay: memory grows with
    the number of keys, never with the number of events, so a whole store can be exported.
    A key's rows equal :func:`history_rows` for that key."""
    before: dict[uuid.UUID, PositionState] = {}
    allocations: dict[uuid.UUID, Allocated] = {}
    """Each stream's last event when it was an ``Allocated`` (the only previous event a row
    reads), so memory grows with the keys in an allocation, never with the events."""
    for event, after in replay_events(source, progress=progress, page_size=page_size):
        stream = event.originator_id
        yield history_row(before.get(stream), event, after, allocations.pop(stream, None))
        before[stream] = after
        if isinstance(event, Allocated):
            allocations[stream] = event


# --- as a table ---------------------------------------------------------------------------------


def evidence_text(evidence: Evidence | None) -> str | None:
    """Evidence in a few words: ``-3160 @ 2025-10-13 09:31:00 seq 12 (2×)``."""
    if evidence is None:
        return None
    return evidence_line(evidence, f"@ {evidence.taken_at:%Y-%m-%d %H:%M:%S}")


def evidence_line(evidence: Evidence, when: str) -> str:
    """The evidence's size, ``when`` it was taken (as the caller writes times), its seq and how
    many snapshots confirmed it: ``-3160 at 19:25:49 seq 12 (2×)``."""
    text = f"{signed_quantity(evidence.signed_size)} {when}"
    if evidence.seq is not None:
        text += f" seq {evidence.seq}"
    if evidence.confirmations:
        text += f" ({evidence.confirmations}×)"
    return text


def _size_text(row: HistoryRow) -> str:
    before, after = signed_quantity(row.signed_size_before), signed_quantity(row.signed_size_after)
    return f"{before} → {after}" if row.size_change else after


def _flags_text(row: HistoryRow) -> str | None:
    flags = (
        ("reduce-only", row.reduce_only),
        ("absorbed", row.absorbed),
        (f"overfill {row.overfill:f}", row.overfill > 0),
    )
    return " ".join(flag for flag, on in flags if on) or None


_HTML_COLUMNS: tuple[tuple[str, Callable[[HistoryRow], object]], ...] = (
    ("v", lambda r: r.version),
    ("time", lambda r: r.time),
    ("event", lambda r: r.event),
    ("lc", lambda r: r.lifecycle),
    ("size", _size_text),
    ("side", lambda r: r.side),
    ("qty", lambda r: r.qty),
    ("price", lambda r: r.price),
    ("fee", lambda r: r.fee),
    ("exec_id", lambda r: r.exec_id),
    ("order_id", lambda r: r.order_id),
    ("reason", lambda r: r.reason),
    ("evidence", lambda r: evidence_text(r.evidence)),
    ("flags", _flags_text),
)


def row_tone(row: HistoryRow) -> str:
    """What a row is to the eye: ``correction``, ``proposal`` (proposed or decided),
    ``suspect`` (an unconfirmed disagreement), ``closed``, ``allocation`` (a book's share of an
    account's change, docs/books.md), or empty."""
    if row.event == "Reconciled":
        return "correction"
    if row.event == "Allocated":
        return "allocation"
    if row.event in {"CorrectionProposed", "ProposalDecided"}:
        return "proposal"
    if row.reason == "suspect":
        return "suspect"
    if row.event == "Closed":
        return "closed"
    return ""


_SHADES = {
    "correction": "background:#f3e5f5",
    "suspect": "background:#fff3e0",
    "closed": "background:#f5f5f5",
    "allocation": "background:#e3f2fd",
}
"""Corrections purple, suspect snapshots orange, closes grey, allocations blue."""


def history_html(rows: Iterable[HistoryRow]) -> str:
    """An HTML table of history rows (for ``_repr_html_``); every value escaped. Size changes
    show as before → after; corrections are highlighted."""
    return html_table(
        (name for name, _ in _HTML_COLUMNS),
        ((_SHADES.get(row_tone(row), ""), [get(row) for _, get in _HTML_COLUMNS]) for row in rows),
    )
