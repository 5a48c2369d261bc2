"""What the pages show, as text: positions, proposals and history rows written once for the
templates (which only lay them out), in the words the CLI and the notebooks use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

import attrs

from posledger.audit.books import ACCOUNT_ROW, account_totals, with_account_rows
from posledger.audit.format import (
    direction,
    money,
    per_settle_coin,
    quantity,
    signed_quantity,
    signed_size,
    when,
)
from posledger.audit.history import HistoryRow, evidence_text, row_tone
from posledger.core.model import PositionKey, Status
from posledger.core.position import PositionState, Proposal, SuspectRun

TIMELINE_LIMIT = 500
"""History rows a key's page lists (the newest); the plot still draws every event."""


@attrs.frozen
class KeyView:
    """A key as the pages name and link it."""

    stream: str
    symbol: str
    idx: int
    where: str
    full: str
    book: str
    """The key's book ('' the default one, docs/books.md)."""

    @classmethod
    def of(cls, key: PositionKey) -> KeyView:
        return cls(
            stream=str(key.stream_id),
            symbol=key.symbol,
            idx=key.idx,
            where=f"{key.venue} / {key.account} / {key.category}",
            full=str(key),
            book=key.book,
        )


@attrs.frozen
class PositionView:
    """One key's state: what it holds, its money (in its settle coin), and its last evidence."""

    key: KeyView
    status: str
    held: bool
    side: str
    size: str
    avg_entry: str
    realized_pnl: str
    fees: str
    pending_orders: int
    last_snapshot: str
    suspect: str
    updated: str
    version: int
    book: str = ""
    """What the book column says: the key's book, ``(default)``, or ``ACCOUNT_ROW`` on an
    account's row (its books summed: no page of its own)."""

    @property
    def account_row(self) -> bool:
        return self.book == ACCOUNT_ROW

    @classmethod
    def of(cls, state: PositionState, book: str = "") -> PositionView:
        coin = state.key.settle_coin
        return cls(
            key=KeyView.of(state.key),
            status=state.status.value,
            held=state.held,
            side=direction(state.side) if state.side is not None and state.size else "",
            size=quantity(state.size),
            avg_entry=quantity(state.avg_entry_price) if state.size else "",
            realized_pnl=money(state.realized_pnl, coin),
            fees=money(state.fees, coin),
            pending_orders=len(state.pending_orders),
            last_snapshot=when(state.last_snapshot_at),
            suspect=suspect_text(state.suspect),
            updated=when(state.updated_at),
            version=state.version,
            book=book,
        )


@attrs.frozen
class ProposalView:
    """An open proposal: the correction approving it applies, and the evidence for it."""

    proposal_id: str
    key: KeyView
    kind: str
    ledger: str
    exchange: str
    evidence: str
    confirmations: int
    proposed: str
    reason: str
    cleared_orders: str

    @classmethod
    def of(cls, key: PositionKey, proposal: Proposal) -> ProposalView:
        return cls(
            proposal_id=proposal.proposal_id,
            key=KeyView.of(key),
            kind=proposal.kind,
            ledger=holding_text(proposal.before_side, proposal.before_size),
            exchange=holding_text(proposal.after_side, proposal.after_size),
            evidence=when(proposal.evidence_taken_at),
            confirmations=proposal.confirmations,
            proposed=when(proposal.proposed_at),
            reason=proposal.reason,
            cleared_orders=", ".join(proposal.cleared_orders),
        )


@attrs.frozen
class TimelineRow:
    """One event of a key's history: what it was and what it did to the size."""

    version: int
    time: str
    event: str
    lifecycle: int
    size: str
    changed: bool
    detail: str
    reason: str
    evidence: str
    tone: str

    @classmethod
    def of(cls, row: HistoryRow) -> TimelineRow:
        before = signed_quantity(row.signed_size_before)
        after = signed_quantity(row.signed_size_after)
        return cls(
            version=row.version,
            time=when(row.time),
            event=row.event,
            lifecycle=row.lifecycle,
            size=f"{before} → {after}" if row.size_change else after,
            changed=bool(row.size_change),
            detail=_execution_text(row),
            reason=row.reason or "",
            evidence=evidence_text(row.evidence) or "",
            tone=row_tone(row),
        )


def holding_text(side: str | None, size: Decimal) -> str:
    """``+2``, ``-3160`` or ``flat``: a proposal's before or after."""
    return signed_quantity(signed_size(side, size)) if side and size else "flat"


def suspect_text(run: SuspectRun | None) -> str:
    """An unconfirmed disagreement: ``exchange flat, 1× at 2025-11-12 09:10:00``."""
    if run is None:
        return ""
    shown = holding_text(run.side.value if run.side else None, run.size)
    return f"exchange {shown}, {run.count}× at {when(run.taken_at)}"


def watched(states: Sequence[PositionState], every_key: bool) -> list[PositionView]:
    """The keys the overview lists: every key, or those that hold, wait or need a look
    (open, pending, held, or with an unconfirmed disagreement); after an account's books, the
    account's row (its books summed, all of them)."""
    shown = [
        state
        for state in states
        if every_key or state.status is not Status.FLAT or state.held or state.suspect is not None
    ]
    accounts = {s.key.account_key for s in shown}
    totals = {k: v for k, v in account_totals(states).items() if k in accounts}
    return [PositionView.of(state, book) for book, state in with_account_rows(shown, totals)]


def proposal_views(states: Iterable[PositionState]) -> list[ProposalView]:
    """The open proposals of ``states`` (Ledger.proposals(): oldest first)."""
    return [ProposalView.of(s.key, s.proposal) for s in states if s.proposal is not None]


def pnl_totals(states: Iterable[PositionState]) -> list[str]:
    """Realized PnL per settle coin, never added across coins (docs/design.md#inverse)."""
    totals = per_settle_coin(states)
    return [money(total, coin) for coin, total in sorted(totals.items(), key=str)]


def timeline(rows: Sequence[HistoryRow]) -> list[TimelineRow]:
    """The newest TIMELINE_LIMIT rows, newest first: what changed last is read first."""
    return [TimelineRow.of(row) for row in reversed(rows[-TIMELINE_LIMIT:])]


def _execution_text(row: HistoryRow) -> str:
    if row.side is None or row.qty is None:
        return row.order_id or ""
    text = f"{row.side} {quantity(row.qty)}"
    if row.price is not None:
        text += f" @ {quantity(row.price)}"
    if row.fee:
        text += f", fee {quantity(row.fee)}"
    marks = (("reduce-only", row.reduce_only), ("absorbed", row.absorbed))
    flags = [name for name, on in marks if on]
    ids = [f"exec {row.exec_id}"] if row.exec_id else []
    ids += [f"order {row.order_id}"] if row.order_id else []
    return " · ".join([" ".join([text, *flags]), *ids])
