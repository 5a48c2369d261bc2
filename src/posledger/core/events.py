"""The persisted events. Their names and fields are public API: stored data outlives the code.

Events are frozen dataclasses (eventsourcing transcodes those, not attrs classes). Each class
carries a stable ``TOPIC`` registered at import, so a module can move without orphaning stored
events. Enum values are stored as plain strings, and lists stay lists (the JSON transcoder turns
tuples into lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar
from uuid import UUID, uuid5

from eventsourcing.utils import register_topic


@dataclass(frozen=True)
class PositionEvent:
    """Common envelope: the stream (one per PositionKey), its version, and the business time."""

    TOPIC: ClassVar[str] = "posledger:PositionEvent"

    originator_id: UUID
    originator_version: int
    timestamp: datetime


@dataclass(frozen=True)
class KeyRegistered(PositionEvent):
    """First event of every stream: makes the stream self-describing for bulk readers.

    ``book`` is stored only for a named book (:func:`posledger.core.decide.register` leaves
    it out for the default one), so stores that never named a book keep their exact bytes."""

    TOPIC: ClassVar[str] = "posledger:KeyRegistered"

    venue: str
    account: str
    category: str
    symbol: str
    idx: int
    book: str = ""


@dataclass(frozen=True)
class OpenRequested(PositionEvent):
    """The bot submitted an order that is not reduce-only (opens, adds, or may flip)."""

    TOPIC: ClassVar[str] = "posledger:OpenRequested"

    order_id: str
    side: str
    qty: Decimal
    price: Decimal | None


@dataclass(frozen=True)
class ExitRequested(PositionEvent):
    """The bot submitted a reduce-only order (TP/SL, aged-position exit); it can never flip."""

    TOPIC: ClassVar[str] = "posledger:ExitRequested"

    order_id: str
    side: str
    qty: Decimal
    price: Decimal | None


@dataclass(frozen=True)
class ExecutionEvent(PositionEvent):
    """One execution, flat fields as the exchange reported them, plus what the ledger decided.

    ``reduce_only`` says the fill may only shrink the position (its order was an exit, or the
    key is a hedge leg and the fill is on the other side); ``overfill`` is the quantity beyond
    what the order had left, or beyond the position for a reduce-only fill: recorded, never
    silently dropped. ``absorbed`` marks a late execution that the snapshot behind the last
    correction already reflected (its seq, else its time, is not later): it is recorded and its
    fee counted, but it does not change the size a second time. ``venue_type`` is the venue's
    own name for the execution's type (Bybit ``execType``, OKX ``subType``) when the fill came
    from a venue adapter; events stored before it existed read as None.
    """

    TOPIC: ClassVar[str] = "posledger:ExecutionEvent"

    exec_id: str
    order_id: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    exec_time: datetime
    seq: int | None
    kind: str
    leaves_qty: Decimal | None
    reduce_only: bool
    overfill: Decimal
    absorbed: bool
    venue_type: str | None = None


@dataclass(frozen=True)
class PartiallyFilled(ExecutionEvent):
    """An execution that leaves its order still working."""

    TOPIC: ClassVar[str] = "posledger:PartiallyFilled"


@dataclass(frozen=True)
class Filled(ExecutionEvent):
    """An execution that completes its order, or an order-less one (liquidation, ADL)."""

    TOPIC: ClassVar[str] = "posledger:Filled"


@dataclass(frozen=True)
class FundingSettled(ExecutionEvent):
    """A funding execution: cash and realized PnL only; ``qty`` is the position size it was
    charged on, never a size change."""

    TOPIC: ClassVar[str] = "posledger:FundingSettled"


@dataclass(frozen=True)
class OrderEnded(PositionEvent):
    """An order ended without (full) fill: cancelled, rejected, expired."""

    TOPIC: ClassVar[str] = "posledger:OrderEnded"

    order_id: str
    status: str


@dataclass(frozen=True)
class ExchangeSnapshot(PositionEvent):
    """What the exchange reported for this key. ``suspect`` marks a disagreement still waiting
    for confirmations (``confirmations`` is how many consecutive snapshots have shown it)."""

    TOPIC: ClassVar[str] = "posledger:ExchangeSnapshot"

    taken_at: datetime
    side: str | None
    size: Decimal
    avg_price: Decimal | None
    seq: int | None
    updated_at: datetime | None
    suspect: bool
    confirmations: int


@dataclass(frozen=True)
class CorrectionEvent(PositionEvent):
    """A correction's fields: what it fixes (``kind``), the ledger's side and size before, the
    exchange's after, and the snapshot that proved it. Applied (:class:`Reconciled`) or
    proposed (:class:`CorrectionProposed`); never stored itself."""

    TOPIC: ClassVar[str] = "posledger:CorrectionEvent"

    kind: str
    before_side: str | None
    before_size: Decimal
    after_side: str | None
    after_size: Decimal
    after_avg_price: Decimal | None
    snapshot_taken_at: datetime
    snapshot_seq: int | None
    snapshot_avg_price: Decimal | None
    confirmations: int
    cleared_orders: list[str]


@dataclass(frozen=True)
class Reconciled(CorrectionEvent):
    """The ledger corrected itself to the exchange, with the before/after and the evidence."""

    TOPIC: ClassVar[str] = "posledger:Reconciled"


@dataclass(frozen=True)
class CorrectionProposed(CorrectionEvent):
    """A confirmed disagreement the policy holds for a person (docs/design.md#approval): the
    correction that approving ``proposal_id`` would apply, and ``reason``, why it was held. The
    key is held until it is decided."""

    TOPIC: ClassVar[str] = "posledger:CorrectionProposed"

    proposal_id: str
    reason: str


@dataclass(frozen=True)
class ProposalDecided(PositionEvent):
    """A proposal's end: ``approved`` (the ``Reconciled`` it proposed follows in the same save),
    ``rejected`` by ``operator``, or ``withdrawn`` when its evidence no longer stands (operator
    ``posledger``); ``reason`` says why."""

    TOPIC: ClassVar[str] = "posledger:ProposalDecided"

    proposal_id: str
    decision: str
    operator: str
    reason: str


@dataclass(frozen=True)
class MoneyReconciled(PositionEvent):
    """The exchange's records of money for the closes in ``[window_start, window_end]``
    disagreed with what the ledger realized from fills beyond ``tolerance``
    (docs/design.md#money). Both sides' figures, the records used and the difference are kept;
    the difference is ``adopted`` (the ledger corrected the key in the window, so fills it never
    saw explain it: their PnL comes into the books from the exchange's record) or unexplained.
    Amounts are in the key's settle coin; ``*_funding`` None where the records do not say."""

    TOPIC: ClassVar[str] = "posledger:MoneyReconciled"

    window_start: datetime
    window_end: datetime
    records: list[str]
    ledger_trading_pnl: Decimal
    ledger_fees: Decimal
    ledger_funding: Decimal | None
    exchange_trading_pnl: Decimal
    exchange_fees: Decimal
    exchange_funding: Decimal | None
    exchange_penalty: Decimal
    difference: Decimal
    adopted: bool
    tolerance: Decimal


@dataclass(frozen=True)
class Allocated(PositionEvent):
    """This book's share of something that happened to the whole account and belongs to no
    book by itself (docs/books.md#allocation), written just before the share's own event (the
    execution, funding or ``Reconciled`` it explains). ``cause`` is the execution's kind, the
    correction's kind or ``funding``; ``rule`` how it was shared; ``total`` the account's
    figure (a signed size change, or the funding amount) and ``share`` this book's part of it;
    ``books`` every book that took a part. ``exec_id`` names the execution, if one.
    ``account_before``/``account_after`` are the account's signed size around the change; for
    a correction (written in every book, its share possibly zero) ``account_after`` is what
    the exchange showed."""

    TOPIC: ClassVar[str] = "posledger:Allocated"

    cause: str
    rule: str
    exec_id: str | None
    total: Decimal
    share: Decimal
    books: list[str]
    account_before: Decimal
    account_after: Decimal


@dataclass(frozen=True)
class Closed(PositionEvent):
    """A lifecycle ended. The state change happened in the event before it; this records the
    lifecycle's final figures so history reads without folding."""

    TOPIC: ClassVar[str] = "posledger:Closed"

    reason: str
    lifecycle: int
    opened_at: datetime | None
    realized_pnl: Decimal
    fees: Decimal
    funding: Decimal
    cleared_orders: list[str]


EVENT_TYPES: tuple[type[PositionEvent], ...] = (
    KeyRegistered,
    OpenRequested,
    ExitRequested,
    PartiallyFilled,
    Filled,
    FundingSettled,
    OrderEnded,
    ExchangeSnapshot,
    Reconciled,
    Closed,
    CorrectionProposed,
    ProposalDecided,
    MoneyReconciled,
    Allocated,
)
POSITION_TOPICS: tuple[str, ...] = tuple(cls.TOPIC for cls in EVENT_TYPES)

for _cls in EVENT_TYPES:
    register_topic(_cls.TOPIC, _cls)


EXEC_NAMESPACE = UUID("2b8f4f3e-6c57-5b1e-8d0c-657865632d69")
"""uuid5 namespace of execution markers; changing it forgets every recorded exec_id."""


ORDER_NAMESPACE = UUID("0e3c5a77-1b2d-5f60-8a4e-626f6f6b6f72")
"""uuid5 namespace of order-to-book markers (stored data: never change it)."""


def order_marker_id(venue: str, account: str, order_id: str) -> UUID:
    """The stream id of an order's :class:`OrderBooked` marker."""
    return uuid5(ORDER_NAMESPACE, "\x1f".join((venue, account, order_id)))


def marker_id(venue: str, account: str, exec_id: str) -> UUID:
    """The stream id of an execution's :class:`ExecutionSeen` marker (stored data: never change
    it)."""
    return uuid5(EXEC_NAMESPACE, "\x1f".join((venue, account, exec_id)))


PROPOSAL_NAMESPACE = UUID("7d0b3c1e-2f4a-5e8b-9c6d-70726f706f73")
"""uuid5 namespace of proposal ids (stored data: never change it)."""


def proposal_id(stream_id: UUID, version: int) -> str:
    """The id a person approves or rejects: short, and unique because no two proposals share a
    stream and version."""
    return uuid5(PROPOSAL_NAMESPACE, f"{stream_id}:{version}").hex[:12]


@dataclass(frozen=True)
class ExecutionSeen:
    """Durable dedup marker: a one-event stream per (venue, account, exec_id), written in the same
    transaction as the execution's event. A second writer of the same exec_id fails on the
    stream's unique version, so an execution is applied once across restarts, lifecycles and
    processes, while position state carries no ever-growing set of ids."""

    TOPIC: ClassVar[str] = "posledger:ExecutionSeen"

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    exec_id: str
    stream_id: UUID
    payload: str


register_topic(ExecutionSeen.TOPIC, ExecutionSeen)


@dataclass(frozen=True)
class OrderBooked:
    """Which book an order was requested in: a one-event stream per (venue, account,
    order_id), written with the request of an order in a named book, or in the default book
    of an account that has named books, so its executions find their book after the order
    ended too (docs/books.md). An account with one book writes none: it stores what it did
    before books existed."""

    TOPIC: ClassVar[str] = "posledger:OrderBooked"

    originator_id: UUID
    originator_version: int
    timestamp: datetime
    order_id: str
    book: str
    stream_id: UUID


register_topic(OrderBooked.TOPIC, OrderBooked)
