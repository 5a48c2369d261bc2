"""The persisted events. Their names and fields are public API: stored data outlives the code.

Events are frozen dataclasses (eventsourcing transcodes those, not attrs classes). Each class
carries a stable ``TOPIC`` registered at import, so a module can move without orphaning stored
events. Enum values are stored as plain strings, and lists stay lists (the JSON transcoder turns
tuples into lists).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import register_topic, resolve_topic


@dataclass(frozen=True)
class PositionEvent:
    """Common envelope: the stream (one per PositionKey), its version, and the business time."""

    TOPIC: ClassVar[str] = "posledger:PositionEvent"

    originator_id: UUID
    originator_version: int
    timestamp: datetime


@dataclass(frozen=True)
class KeyRegistered(PositionEvent):
    """First event of every stream: makes the stream self-describing for bulk readers."""

    TOPIC: ClassVar[str] = "posledger:KeyRegistered"

    venue: str
    account: str
    category: str
    symbol: str
    idx: int


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
    fee counted, but it does not change the size a second time.
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
class Reconciled(PositionEvent):
    """The ledger corrected itself to the exchange, with the before/after and the evidence."""

    TOPIC: ClassVar[str] = "posledger:Reconciled"

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
)
POSITION_TOPICS: tuple[str, ...] = tuple(cls.TOPIC for cls in EVENT_TYPES)

for _cls in EVENT_TYPES:
    register_topic(_cls.TOPIC, _cls)


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


# --- decoding stored rows ----------------------------------------------------------------------

STANDARD_TRANSCODINGS = {
    "uuid_hex": UUIDAsHex,
    "decimal_str": DecimalAsStr,
    "datetime_iso": DatetimeAsISO,
}
"""The transcodings an eventsourcing Application registers by default, by stored name."""


def is_standard_mapper(mapper: Mapper[Any]) -> bool:
    """True when ``mapper`` stores events as eventsourcing's plain JSON with only its default
    transcodings (no cipher, no compressor): the stored bytes posledger's own fast decoder and
    encoder read and write exactly as the mapper does."""
    transcoder = mapper.transcoder
    return (
        mapper.cipher is None
        and mapper.compressor is None
        and type(transcoder) is JSONTranscoder
        and {name: type(t) for name, t in transcoder.names.items()} == STANDARD_TRANSCODINGS
        and {kind: type(t) for kind, t in transcoder.types.items()}
        == {t.type: t for t in STANDARD_TRANSCODINGS.values()}
    )


ID_CACHE_SIZE = 100_000
"""Stream ids a decoder keeps parsed (a replay has one per key; dedup markers one each)."""


class _NotStandard(Exception):
    """A value the fast decoder does not know: the mapper decides what it is."""


def _standard_fields(fields: dict[str, Any]) -> None:
    """Decode, in place, the transcoded values of an event's fields as the transcoder's object
    hook would (its default transcodings, whose encoded data is a string); raise
    ``_NotStandard`` for any structure it is not sure of (other objects, objects in lists),
    which the mapper then decodes. One C ``json.loads`` plus this loop costs less than a Python
    object hook called for every JSON object."""
    if "_type_" in fields:
        raise _NotStandard
    for name, value in fields.items():
        kind = value.__class__
        if kind is dict:
            data = value.get("_data_")
            if len(value) != 2 or data.__class__ is not str:
                raise _NotStandard
            transcoding = value.get("_type_")
            if transcoding == "decimal_str":
                fields[name] = Decimal(data)
            elif transcoding == "datetime_iso":
                fields[name] = datetime.fromisoformat(data)
            elif transcoding == "uuid_hex":
                fields[name] = UUID(data)
            else:
                raise _NotStandard
        elif kind is list:
            for item in value:
                if item.__class__ is dict or item.__class__ is list:
                    raise _NotStandard


class StoredEventDecoder:
    """Turns stored rows of posledger's own events into the very objects
    ``mapper.to_domain_event`` returns, without its per-row overhead (topic resolution, id
    conversion, a ``StoredEvent`` per row).

    Bulk replays decode millions of rows. For the topics in :data:`EVENT_TYPES` and
    :class:`ExecutionSeen`, on a store with eventsourcing's plain JSON transcoder and its
    default transcodings (no cipher, no compressor), a row is decoded with one ``json.loads``
    and a loop over its fields; anything else (another topic, an unknown ``_type_``, any other
    JSON object, a ``class_version``, other settings) goes to the mapper, which decodes it or
    raises its own error."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        standard = is_standard_mapper(mapper)
        classes: tuple[type[Any], ...] = (*EVENT_TYPES, ExecutionSeen)
        self.standard = standard
        """Rows are plain JSON with the default transcodings' objects in it, so a reader that
        knows a topic's fields may ``json.loads`` them itself."""
        self.classes: dict[str, type[Any]] = (
            {cls.TOPIC: cls for cls in classes if resolve_topic(cls.TOPIC) is cls}
            if standard
            else {}
        )
        self._ids: dict[str, UUID] = {}

    def __call__(
        self, originator_id: UUID | str, originator_version: int, topic: str, state: bytes
    ) -> Any:
        """The domain event of one stored row (``originator_id`` as a UUID or its text)."""
        cls = self.classes.get(topic)
        if cls is not None:
            stream = self.stream_id(originator_id)
            try:
                fields = json.loads(bytes(state).decode("utf8"))
                _standard_fields(fields)
            except Exception:
                fields = None
            if fields is not None and "class_version" not in fields:
                fields["originator_id"] = stream
                fields["originator_version"] = originator_version
                event = object.__new__(cls)
                object.__setattr__(event, "__dict__", fields)
                return event
        return self.mapper.to_domain_event(
            StoredEvent(originator_id, originator_version, topic, bytes(state))
        )

    def stream_id(self, originator_id: UUID | str) -> UUID:
        """A stored stream id as a UUID; SQLite's text is parsed once per stream."""
        if isinstance(originator_id, UUID):
            return originator_id
        stream = self._ids.get(originator_id)
        if stream is None:
            if len(self._ids) >= ID_CACHE_SIZE:
                self._ids.clear()
            stream = self._ids[originator_id] = UUID(originator_id)
        return stream
