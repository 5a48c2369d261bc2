"""Value objects: small, frozen, validated on construction so bad input never reaches the ledger.

Quantities and prices are ``Decimal``. A ``float`` is refused (its binary rounding is exactly the
kind of silent drift this library exists to prevent); ``str`` and ``int`` are converted, within
1e-30 .. 1e30 in magnitude. Times are timezone-aware and normalised to UTC. Names and ids are
text without control characters: a key's fields are joined with one to name its stream.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from enum import StrEnum
from typing import TypeVar

import attrs

from posledger.core.contract import INVERSE, settle_coin
from posledger.core.errors import InvalidInput, shown

STREAM_NAMESPACE = uuid.UUID("6f1c1e0a-3b0e-5d55-9a55-706f736c6564")
"""uuid5 namespace of position streams; changing it orphans every stored stream."""


E = TypeVar("E", bound=StrEnum)


def _parse_choice(cls: type[E], value: object, noun: str) -> E:
    """An enum member from itself or its case-insensitive value; anything else is refused."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value.strip().lower())
        except ValueError:
            pass
    choices = ", ".join(repr(member.value) for member in cls)
    raise InvalidInput(f"unknown {noun} {value!r}: expected one of {choices}")


class Side(StrEnum):
    """Direction of an order, an execution, or a position (BUY = long, SELL = short)."""

    BUY = "buy"
    SELL = "sell"

    @classmethod
    def parse(cls, value: object) -> Side:
        """Accept a Side or a case-insensitive 'buy'/'sell' (Bybit writes 'Buy'/'Sell')."""
        return _parse_choice(cls, value, "side")

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class ExecKind(StrEnum):
    """What an execution was. All but FUNDING change the position's size; UNKNOWN is a venue's
    execution type posledger does not know, recorded as moving size by its signed quantity and
    flagged (docs/design.md#exec-types)."""

    TRADE = "trade"
    ADL = "adl"
    LIQUIDATION = "liquidation"
    DELIVERY = "delivery"
    SETTLE = "settle"
    FUNDING = "funding"
    BLOCK_TRADE = "block_trade"
    MOVE_POSITION = "move_position"
    SPREAD_TRADE = "spread_trade"
    CORPORATE_ACTION = "corporate_action"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> ExecKind:
        return _parse_choice(cls, value, "execution kind")

    @property
    def changes_size(self) -> bool:
        return self is not ExecKind.FUNDING


class Status(StrEnum):
    """Where a key stands: nothing held, only requests in flight, or a position held."""

    FLAT = "flat"
    PENDING = "pending"
    OPEN = "open"


DECIMAL_RANGE = 30
"""Accepted decimals are 0 or lie within 1e-30 .. 1e30 in magnitude with no digit below 1e-30:
every real price, quantity and fee, and nothing whose arithmetic could overflow."""


SIZES = Context(prec=100, Emax=999_999, Emin=-999_999, traps=[Inexact, Overflow, InvalidOperation])
"""The arithmetic of sizes, filled quantities and remainders: exact. The default context keeps
28 significant digits, so 1000 + 1e-28 - 1000 would be 0E-24; within :data:`DECIMAL_RANGE`
these sums need far fewer than 100 digits, and an inexact one would raise, never round."""


def to_decimal(value: object, what: str) -> Decimal:
    """Convert to a finite Decimal; floats and bools are refused, not rounded."""
    if isinstance(value, bool | float):
        raise InvalidInput(
            f"{what} must be a Decimal, int or str, not {type(value).__name__} {value!r}"
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise InvalidInput(f"{what} is not a number: {value!r}") from None
    else:
        raise InvalidInput(f"{what} must be a Decimal, int or str, not {type(value).__name__}")
    if not result.is_finite():
        raise InvalidInput(f"{what} must be finite, got {value!r}")
    if result and not (
        -DECIMAL_RANGE <= result.adjusted() < DECIMAL_RANGE
        and int(result.as_tuple().exponent) >= -DECIMAL_RANGE
    ):
        raise InvalidInput(f"{what} is out of range (1e-30 .. 1e30): {value!r}")
    return result


def positive_decimal(value: object, what: str) -> Decimal:
    result = to_decimal(value, what)
    if result <= 0:
        raise InvalidInput(f"{what} must be > 0, got {value!r}")
    return result


def non_negative_decimal(value: object, what: str) -> Decimal:
    result = to_decimal(value, what)
    if result < 0:
        raise InvalidInput(f"{what} must be >= 0, got {value!r}")
    return result


def aware_utc(value: object, what: str) -> datetime:
    """Accept only timezone-aware datetimes; a naive one has no meaning across machines."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def text(value: object, what: str, *, empty: bool = False) -> str:
    """A name or id: a string (non-empty unless ``empty``) without control characters (a key's
    fields are joined with one to name its stream, so one inside a field could make two keys
    share a stream) and storable as UTF-8 (no lone surrogate)."""
    if not isinstance(value, str) or not (empty or value.strip()):
        raise InvalidInput(f"{what} must be a non-empty string, got {shown(value)}")
    if _UNSAFE.search(value):
        raise InvalidInput(f"{what} must not contain control characters: {value!r}")
    return value


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""Unicode's control characters (category Cc) and lone surrogates (Cs)."""


def non_negative_delta(value: object, what: str) -> timedelta:
    """A duration setting (a grace, a lookback): a ``timedelta`` of zero or more."""
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidInput(f"expected a non-negative timedelta for {what}, got {value!r}")
    return value


def positive_int(value: object, what: str) -> int:
    """A count setting (confirmations): an ``int`` of one or more, never a bool."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be an int >= 1, got {value!r}")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an int, got {value!r}")
    return value


def _idx(value: object, what: str) -> int:
    idx = _int(value, what)
    if idx not in (0, 1, 2):
        raise InvalidInput(f"{what} must be 0 (one-way), 1 (hedge long) or 2 (hedge short)")
    return idx


def _to_account(value: object) -> str:
    return text(value, "account")


def _to_category(value: object) -> str:
    return text(value, "category")


def _to_book(value: object) -> str:
    """A book's name: "" is the default book (an account's only one until others are named)."""
    if value == "":
        return ""
    name = text(value, "book")
    if name != name.strip() or any(not c.isprintable() for c in name) or len(name) > 64:
        raise InvalidInput(
            f"book must be printable text of at most 64 characters, got {shown(value)}"
        )
    return name


def _to_exec_id(value: object) -> str:
    return text(value, "exec_id")


def _to_order_id(value: object) -> str:
    return text(value, "order_id", empty=True)


def _to_exec_time(value: object) -> datetime:
    return aware_utc(value, "exec_time")


def _to_fee(value: object) -> Decimal:
    return to_decimal(value, "fee")


def _to_idx(value: object) -> int:
    return _idx(value, "idx")


def _to_optional_avg_price(value: object) -> Decimal | None:
    return None if value is None else non_negative_decimal(value, "avg_price")


def _to_optional_idx(value: object) -> int | None:
    return None if value is None else _idx(value, "idx")


def _to_optional_leaves_qty(value: object) -> Decimal | None:
    return None if value is None else non_negative_decimal(value, "leaves_qty")


def _to_optional_seq(value: object) -> int | None:
    return None if value is None else _int(value, "seq")


def _to_optional_symbol(value: object) -> str | None:
    return None if value is None else text(value, "symbol")


def _to_optional_venue_type(value: object) -> str | None:
    return None if value is None else text(value, "venue_type")


def _to_optional_updated_at(value: object) -> datetime | None:
    return None if value is None else aware_utc(value, "updated_at")


def _to_price(value: object) -> Decimal:
    return positive_decimal(value, "price")


def _to_qty(value: object) -> Decimal:
    return positive_decimal(value, "qty")


def _to_size(value: object) -> Decimal:
    return non_negative_decimal(value, "size")


def _to_symbol(value: object) -> str:
    return text(value, "symbol")


def _to_taken_at(value: object) -> datetime:
    return aware_utc(value, "taken_at")


def _to_venue(value: object) -> str:
    return text(value, "venue")


def _to_side(value: object) -> Side:
    return Side.parse(value)


def _to_kind(value: object) -> ExecKind:
    return ExecKind.parse(value)


def _to_caveats(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput("caveats must be a collection of strings")
    return tuple(text(item, "caveat") for item in value)


def _to_optional_side(value: object) -> Side | None:
    return None if value in (None, "") else Side.parse(value)


def _to_symbols(value: object) -> frozenset[str] | None:
    return _frozen_set_or_none(value, "symbols")


def _to_open_order_ids(value: object) -> frozenset[str] | None:
    return _frozen_set_or_none(value, "open_order_ids")


@attrs.frozen(cache_hash=True)
class PositionKey:
    """One position stream: venue, account, category, symbol, Bybit's ``positionIdx`` and the
    book (the strategy or bot that owns it inside the account, docs/books.md).

    The default book ``""`` is the account's only one until others are named: its stream id
    is the one keys had before books existed, so existing stores are that book."""

    venue: str = attrs.field(converter=_to_venue)
    account: str = attrs.field(converter=_to_account)
    category: str = attrs.field(converter=_to_category)
    symbol: str = attrs.field(converter=_to_symbol)
    idx: int = attrs.field(default=0, converter=_to_idx)
    book: str = attrs.field(default="", converter=_to_book)
    stream_id: uuid.UUID = attrs.field(init=False, eq=False, repr=False)

    @stream_id.default
    def _stream_id(self) -> uuid.UUID:
        parts = [self.venue, self.account, self.category, self.symbol, str(self.idx)]
        if self.book:
            parts.append(self.book)
        return uuid.uuid5(STREAM_NAMESPACE, "\x1f".join(parts))

    @staticmethod
    def book_name(value: object) -> str:
        """``value`` checked as a book's name (InvalidInput if it cannot be one)."""
        return _to_book(value)

    @property
    def account_key(self) -> PositionKey:
        """The account-level position this key's book is part of: the key in the default
        book (what the exchange reports, the sum over the account's books)."""
        if not self.book:
            return self
        return cached_key(self.venue, self.account, self.category, self.symbol, self.idx, "")

    def in_book(self, book: str) -> PositionKey:
        """The same account position in ``book``."""
        return PositionKey(
            venue=self.venue,
            account=self.account,
            category=self.category,
            symbol=self.symbol,
            idx=self.idx,
            book=book,
        )

    @property
    def inverse(self) -> bool:
        """An inverse contract (Bybit's category ``inverse``; OKX coin-margined instruments are
        keyed in the same category): sizes in USD contracts, PnL, fees and funding in the coin.
        A fact of the key, stored with its first event, so a replay never depends on
        configuration (docs/design.md#inverse)."""
        return self.category == INVERSE

    @property
    def settle_coin(self) -> str | None:
        """The coin of the key's PnL, fees and funding, from the venue's symbol naming; None
        where it follows no documented pattern (docs/design.md#inverse)."""
        return settle_coin(self.venue, self.category, self.symbol)

    @property
    def leg_side(self) -> Side | None:
        """The only side a hedge-mode leg can hold; None in one-way mode."""
        return {0: None, 1: Side.BUY, 2: Side.SELL}[self.idx]

    def __str__(self) -> str:
        text = f"{self.venue}/{self.account}/{self.category}/{self.symbol}#{self.idx}"
        return f"{text}@{self.book}" if self.book else text


KEY_CACHE_SIZE = 65_536
"""Keys :func:`cached_key` keeps (a bot has hundreds; a bulk replay one per stream)."""


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def cached_key(
    venue: str, account: str, category: str, symbol: str, idx: int, book: str = ""
) -> PositionKey:
    """The key of fields validated before (stored ones, or a Snapshot's): loading and
    reconciling meet each key once per registration, snapshot and exchange row, and its stream
    id is a SHA-1. One shared immutable instance per key saves building and hashing it again.
    Callers pass all six arguments, ``book`` too: the cache tells ``(…, 0)`` from ``(…, 0, "")``."""
    return PositionKey(
        venue=venue, account=account, category=category, symbol=symbol, idx=idx, book=book
    )


@attrs.frozen
class Fill:
    """One execution as the exchange reported it; quantities are per execution, never cumulative.

    ``leaves_qty`` (what the order still has open after this execution, when the venue says) decides
    between ``PartiallyFilled`` and ``Filled``; ``symbol``/``idx``, when given, must match the key
    the fill is recorded for. ``venue_type`` is the venue's own name for the execution's type
    (Bybit ``execType``, OKX ``subType``), kept so an ``unknown`` kind can be audited; it is not
    part of the payload an ``exec_id`` must repeat.
    """

    exec_id: str = attrs.field(converter=_to_exec_id)
    order_id: str = attrs.field(converter=_to_order_id)
    side: Side = attrs.field(converter=_to_side)
    qty: Decimal = attrs.field(converter=_to_qty)
    price: Decimal = attrs.field(converter=_to_price)
    exec_time: datetime = attrs.field(converter=_to_exec_time)
    fee: Decimal = attrs.field(default=Decimal(0), converter=_to_fee)
    seq: int | None = attrs.field(default=None, converter=_to_optional_seq)
    kind: ExecKind = attrs.field(default=ExecKind.TRADE, converter=_to_kind)
    leaves_qty: Decimal | None = attrs.field(default=None, converter=_to_optional_leaves_qty)
    symbol: str | None = attrs.field(default=None, converter=_to_optional_symbol)
    idx: int | None = attrs.field(default=None, converter=_to_optional_idx)
    venue_type: str | None = attrs.field(default=None, converter=_to_optional_venue_type)

    def exchange_order(self) -> tuple[datetime, int, Decimal, int, str]:
        """Sort key: the order the exchange applied its executions in. ``exec_time`` first, and
        within one millisecond Bybit's ``seq`` (its matching sequence; Bybit warns that its lists
        are not in order when ``execTime`` is equal), then, within one match (Bybit gives all its
        fills one ``seq``), the fill that left more of its order first, then ``exec_id``
        (shorter first, so numeric ids such as OKX's ``tradeId`` sort as numbers).
        docs/design.md#executions."""
        seq = -1 if self.seq is None else self.seq
        left = -self.leaves_qty if self.leaves_qty is not None else Decimal(0)
        return (self.exec_time, seq, left, len(self.exec_id), self.exec_id)

    def payload(self) -> str:
        """The fields that must agree whenever this exec_id is seen again (values normalised)."""
        return "|".join(
            (
                self.order_id,
                self.side.value,
                _canonical(self.qty),
                _canonical(self.price),
                _canonical(self.fee),
                self.kind.value,
            )
        )


def _canonical(value: Decimal) -> str:
    """'0.010' and '0.01' are the same quantity; print them the same way."""
    return format(value.normalize(), "f") if value else "0"


@attrs.frozen
class ExchangePosition:
    """What the exchange says one key holds. ``size`` 0 (``side`` None) is an explicit flat row."""

    symbol: str = attrs.field(converter=_to_symbol)
    idx: int = attrs.field(converter=_to_idx)
    side: Side | None = attrs.field(converter=_to_optional_side)
    size: Decimal = attrs.field(converter=_to_size)
    avg_price: Decimal | None = attrs.field(default=None, converter=_to_optional_avg_price)
    seq: int | None = attrs.field(default=None, converter=_to_optional_seq)
    updated_at: datetime | None = attrs.field(default=None, converter=_to_optional_updated_at)

    def __attrs_post_init__(self) -> None:
        if self.size > 0 and self.side is None:
            raise InvalidInput(f"{self.symbol}#{self.idx}: a non-zero size needs a side")
        if self.size == 0 and self.side is not None:
            object.__setattr__(self, "side", None)


def _frozen_set_or_none(value: object, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidInput(f"{what} must be a collection of strings or None")
    return frozenset(text(item, what) for item in value)


def _positions(value: object) -> tuple[ExchangePosition, ...]:
    if not isinstance(value, Iterable):
        raise InvalidInput("positions must be a collection of ExchangePosition")
    items = tuple(value)
    for item in items:
        if not isinstance(item, ExchangePosition):
            raise InvalidInput(f"positions must hold ExchangePosition, got {type(item).__name__}")
    return items


@attrs.frozen
class Snapshot:
    """A successful and complete read of the exchange for one venue/account/category.

    ``symbols`` None means the read covers every symbol of the category; otherwise only the
    listed symbols are judged. ``open_order_ids`` None means open orders were not read.
    ``caveats`` say, in words, where the read did less than asked and what that left out of
    its coverage (a status filter the exchange refused, say); the read is still complete for
    what it covers.
    """

    venue: str = attrs.field(converter=_to_venue)
    account: str = attrs.field(converter=_to_account)
    category: str = attrs.field(converter=_to_category)
    taken_at: datetime = attrs.field(converter=_to_taken_at)
    positions: tuple[ExchangePosition, ...] = attrs.field(default=(), converter=_positions)
    symbols: frozenset[str] | None = attrs.field(default=None, converter=_to_symbols)
    open_order_ids: frozenset[str] | None = attrs.field(default=None, converter=_to_open_order_ids)
    caveats: tuple[str, ...] = attrs.field(default=(), converter=_to_caveats)
    _by_leg: dict[tuple[str, int], ExchangePosition] = attrs.field(init=False, eq=False, repr=False)

    @_by_leg.default
    def _index(self) -> dict[tuple[str, int], ExchangePosition]:
        index: dict[tuple[str, int], ExchangePosition] = {}
        for position in self.positions:
            leg = (position.symbol, position.idx)
            if leg in index:
                raise InvalidInput(f"snapshot lists {position.symbol}#{position.idx} twice")
            if self.symbols is not None and position.symbol not in self.symbols:
                raise InvalidInput(
                    f"snapshot lists {position.symbol}, which is outside its symbols"
                )
            index[leg] = position
        return index

    def covers(self, key: PositionKey) -> bool:
        """True when this snapshot speaks for ``key`` (same venue/account/category, in coverage)."""
        return (
            key.venue == self.venue
            and key.account == self.account
            and key.category == self.category
            and (self.symbols is None or key.symbol in self.symbols)
        )

    def position(self, key: PositionKey) -> ExchangePosition | None:
        """The exchange row for ``key``; None when the exchange did not list it (flat)."""
        return self._by_leg.get((key.symbol, key.idx))

    def key_for(self, position: ExchangePosition) -> PositionKey:
        """The key of one of this snapshot's rows (their fields are validated already)."""
        return cached_key(
            self.venue, self.account, self.category, position.symbol, position.idx, ""
        )

    def key(self, symbol: str, idx: int = 0) -> PositionKey:
        """The key of ``symbol``/``idx`` in this snapshot's venue, account and category."""
        return PositionKey(
            venue=self.venue, account=self.account, category=self.category, symbol=symbol, idx=idx
        )
