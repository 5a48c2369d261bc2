"""Strategies for single values an exchange reports: quantities, prices, fees, UTC times,
position keys, executions, exchange rows and complete snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import strategies as st

from posledger.core.allocation import SHAREABLE, AllocationPolicy
from posledger.core.model import (
    ExchangePosition,
    ExecKind,
    Fill,
    PositionKey,
    Side,
    Snapshot,
)

ZERO = Decimal(0)
DEFAULT_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
"""Symbols drawn when a strategy is not given its own."""

_EPOCH_MIN = datetime(2020, 1, 1)
_EPOCH_MAX = datetime(2035, 12, 31)
_HEDGE_SIDE = {1: Side.BUY, 2: Side.SELL}


def _dec(value: Decimal | int | str) -> Decimal:
    if isinstance(value, float):
        raise TypeError("pass Decimal, int or str bounds, never float")
    return Decimal(value)


# --- numbers and times ---------------------------------------------------------------------


def decimals_qty(
    *,
    min_value: Decimal | int | str = "0.001",
    max_value: Decimal | int | str = "1000",
    places: int = 3,
) -> st.SearchStrategy[Decimal]:
    """Positive order/execution quantities with exactly ``places`` decimal places (a lot step of
    ``10**-places``), between ``min_value`` and ``max_value`` inclusive."""
    low, high = _dec(min_value), _dec(max_value)
    if low <= 0:
        raise ValueError(f"quantities are > 0; min_value={low}")
    return st.decimals(
        min_value=low, max_value=high, places=places, allow_nan=False, allow_infinity=False
    )


def prices(
    *,
    min_value: Decimal | int | str = "0.0001",
    max_value: Decimal | int | str = "100000",
    places: int = 4,
) -> st.SearchStrategy[Decimal]:
    """Positive, finite prices with ``places`` decimal places (a tick of ``10**-places``)."""
    low, high = _dec(min_value), _dec(max_value)
    if low <= 0:
        raise ValueError(f"prices are > 0; min_value={low}")
    return st.decimals(
        min_value=low, max_value=high, places=places, allow_nan=False, allow_infinity=False
    )


def fees(
    *,
    min_value: Decimal | int | str = "-1",
    max_value: Decimal | int | str = "10",
    places: int = 8,
) -> st.SearchStrategy[Decimal]:
    """Finite fees; negative values are maker rebates (or funding received) and are valid."""
    return st.decimals(
        min_value=_dec(min_value),
        max_value=_dec(max_value),
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )


def utc_datetimes(
    *, min_value: datetime = _EPOCH_MIN, max_value: datetime = _EPOCH_MAX
) -> st.SearchStrategy[datetime]:
    """Timezone-aware UTC datetimes (bounds are naive or aware; aware ones are taken as UTC)."""
    return st.datetimes(
        min_value=_naive_utc(min_value),
        max_value=_naive_utc(max_value),
        timezones=st.just(UTC),
    ).map(lambda value: value.replace(fold=0))


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


# --- keys, fills, exchange rows ------------------------------------------------------------


def position_keys(
    *,
    venue: str = "bybit",
    account: str = "main",
    category: str = "linear",
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = False,
    books: Sequence[str] = ("",),
) -> st.SearchStrategy[PositionKey]:
    """Keys of one venue/account/category. ``hedge`` False draws one-way keys (``idx`` 0), True
    hedge-mode legs (``idx`` 1 or 2), None either; ``books`` the books they may be in (the
    default book ``""`` only, unless given: docs/books.md)."""
    if not symbols or not books:
        raise ValueError("symbols and books must not be empty")
    idxs = _idxs(hedge)
    return st.builds(
        PositionKey,
        venue=st.just(venue),
        account=st.just(account),
        category=st.just(category),
        symbol=st.sampled_from(tuple(symbols)),
        idx=st.sampled_from(idxs),
        book=st.sampled_from(tuple(books)),
    )


def book_names(*, default: bool = True) -> st.SearchStrategy[str]:
    """Names a book may have: the default book ``""`` (unless ``default`` is False) and printable
    names up to 64 characters, none with surrounding spaces (docs/books.md)."""
    named = st.text(
        st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=64
    ).filter(lambda name: name == name.strip())
    return st.one_of(st.just(""), named) if default else named


def allocation_policies(
    books: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[AllocationPolicy]:
    """Allocation policies: an unassigned book (drawn from ``books``, default
    :func:`book_names`) and any set of the causes that may be shared pro rata."""
    return st.builds(
        AllocationPolicy,
        unassigned=books if books is not None else book_names(),
        pro_rata=st.frozensets(st.sampled_from(sorted(SHAREABLE))),
    )


def _idxs(hedge: bool | None) -> tuple[int, ...]:
    if hedge is None:
        return (0, 1, 2)
    return (1, 2) if hedge else (0,)


@st.composite
def _fills(
    draw: st.DrawFn,
    key: PositionKey | None,
    side: Side | None,
    kinds: Sequence[ExecKind],
    order_id: str | None,
    exec_times: st.SearchStrategy[datetime],
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
    fee_values: st.SearchStrategy[Decimal],
    with_seq: bool,
    with_leg: bool,
) -> Fill:
    kind = draw(st.sampled_from(tuple(kinds)))
    if side is None:
        leg = key.leg_side if key is not None else None
        if kind is ExecKind.FUNDING and leg is not None:
            side = leg
        else:
            side = draw(st.sampled_from((Side.BUY, Side.SELL)))
    exec_id = draw(st.uuids().map(lambda u: f"e-{u.hex[:16]}"))
    if order_id is None:
        order_id = (
            ""
            if kind is not ExecKind.TRADE
            else draw(st.one_of(st.just(""), st.integers(1, 10**6).map(lambda n: f"o-{n}")))
        )
    leaves = draw(st.none() | st.just(ZERO) | quantities)
    return Fill(
        exec_id=exec_id,
        order_id=order_id,
        side=side,
        qty=draw(quantities),
        price=draw(price_values),
        fee=draw(fee_values),
        exec_time=draw(exec_times),
        seq=draw(st.integers(1, 2**40)) if with_seq else None,
        kind=kind,
        leaves_qty=None if kind is ExecKind.FUNDING else leaves,
        symbol=key.symbol if key is not None and with_leg else None,
        idx=key.idx if key is not None and with_leg else None,
    )


def fills(
    key: PositionKey | None = None,
    *,
    side: Side | None = None,
    kinds: Sequence[ExecKind | str] = (ExecKind.TRADE,),
    order_id: str | None = None,
    exec_times: st.SearchStrategy[datetime] | None = None,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
    fee_values: st.SearchStrategy[Decimal] | None = None,
    with_seq: bool = True,
    with_leg: bool = True,
) -> st.SearchStrategy[Fill]:
    """Single executions with random ``exec_id`` (``e-`` + 16 hex digits: distinct in practice,
    not guaranteed; use ``st.lists(..., unique_by=lambda f: f.exec_id)`` to be sure).

    ``key``, when given, stamps ``symbol``/``idx`` on the fill (``with_leg``) and, for a hedge
    leg, makes funding executions carry the leg's side. ``side``/``order_id`` fix those fields;
    ``kinds`` limits the execution kinds (trades by default; add ``"funding"``, ``"adl"``, …).
    ``leaves_qty`` is drawn as unknown (None), 0 (order complete) or a positive remainder.
    """
    parsed = tuple(ExecKind.parse(kind) for kind in kinds)
    if not parsed:
        raise ValueError("kinds must not be empty")
    return _fills(
        key,
        side,
        parsed,
        order_id,
        exec_times if exec_times is not None else utc_datetimes(),
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
        fee_values if fee_values is not None else fees(),
        with_seq,
        with_leg,
    )


@st.composite
def _exchange_positions(
    draw: st.DrawFn,
    symbols: tuple[str, ...],
    idxs: tuple[int, ...],
    allow_flat: bool,
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> ExchangePosition:
    symbol = draw(st.sampled_from(symbols))
    idx = draw(st.sampled_from(idxs))
    return _row(draw, symbol, idx, allow_flat, quantities, price_values)


def _row(
    draw: st.DrawFn,
    symbol: str,
    idx: int,
    allow_flat: bool,
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> ExchangePosition:
    flat = allow_flat and draw(st.booleans())
    side = None if flat else _HEDGE_SIDE.get(idx) or draw(st.sampled_from((Side.BUY, Side.SELL)))
    return ExchangePosition(
        symbol=symbol,
        idx=idx,
        side=side,
        size=ZERO if flat else draw(quantities),
        avg_price=None if flat else draw(st.none() | price_values),
        seq=draw(st.none() | st.integers(1, 2**40)),
        updated_at=draw(st.none() | utc_datetimes()),
    )


def exchange_positions(
    *,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = False,
    allow_flat: bool = True,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
) -> st.SearchStrategy[ExchangePosition]:
    """One exchange row. Hedge legs hold their own side (``idx`` 1 buy, 2 sell); a flat row
    (``allow_flat``) has size 0 and no side, as Bybit reports a position queried by symbol."""
    if not symbols:
        raise ValueError("symbols must not be empty")
    return _exchange_positions(
        tuple(symbols),
        _idxs(hedge),
        allow_flat,
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
    )


@st.composite
def _snapshots(
    draw: st.DrawFn,
    venue: str,
    account: str,
    category: str,
    symbols: tuple[str, ...],
    hedge: bool | None,
    taken_at: st.SearchStrategy[datetime],
    partial: bool,
    open_order_ids: st.SearchStrategy[frozenset[str] | None],
    quantities: st.SearchStrategy[Decimal],
    price_values: st.SearchStrategy[Decimal],
) -> Snapshot:
    if partial and draw(st.booleans()):
        covered: frozenset[str] | None = frozenset(
            draw(st.lists(st.sampled_from(symbols), min_size=1, unique=True))
        )
    else:
        covered = None
    rows = []
    for symbol in symbols:
        if covered is not None and symbol not in covered:
            continue
        in_hedge = draw(st.booleans()) if hedge is None else hedge
        for idx in (1, 2) if in_hedge else (0,):
            if draw(st.booleans()):  # listed (open, or an explicit flat row) or omitted (flat)
                rows.append(_row(draw, symbol, idx, True, quantities, price_values))
    return Snapshot(
        venue=venue,
        account=account,
        category=category,
        taken_at=draw(taken_at),
        positions=rows,
        symbols=covered,
        open_order_ids=draw(open_order_ids),
    )


def snapshots(
    *,
    venue: str = "bybit",
    account: str = "main",
    category: str = "linear",
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    hedge: bool | None = None,
    taken_at: st.SearchStrategy[datetime] | None = None,
    partial: bool = True,
    open_order_ids: st.SearchStrategy[frozenset[str] | None] | None = None,
    quantities: st.SearchStrategy[Decimal] | None = None,
    price_values: st.SearchStrategy[Decimal] | None = None,
) -> st.SearchStrategy[Snapshot]:
    """Complete, successful reads of one venue/account/category.

    Each symbol is one-way (one row, ``idx`` 0) or hedge mode (two legs), per ``hedge``
    (None: drawn per symbol). A row is open, an explicit flat row, or omitted (flat), as Bybit
    omits flat positions from a category-wide read. With ``partial`` the snapshot may cover a
    listed subset of ``symbols`` only (``Snapshot.symbols``), listing no row outside it.
    ``open_order_ids`` defaults to "not reported" (None) or a few ``o-N`` ids.
    """
    if not symbols:
        raise ValueError("symbols must not be empty")
    orders = (
        open_order_ids
        if open_order_ids is not None
        else st.none() | st.frozensets(st.integers(1, 50).map(lambda n: f"o-{n}"), max_size=5)
    )
    return _snapshots(
        venue,
        account,
        category,
        tuple(dict.fromkeys(symbols)),
        hedge,
        taken_at if taken_at is not None else utc_datetimes(),
        partial,
        orders,
        quantities if quantities is not None else decimals_qty(),
        price_values if price_values is not None else prices(),
    )
