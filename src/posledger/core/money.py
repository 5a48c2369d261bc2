"""Money reconciliation (docs/design.md#money): the exchange's own records of what it booked
when (part of) a key's position closed, and the pure check that compares them with what the
ledger realized from fills. The venues read the records completely or raise.

Signs are the ledger's: a profit is positive; ``fees``, ``funding`` and ``penalty`` are
positive when paid, negative when received (a maker rebate). Amounts are in the key's settle
coin (the coin itself on an inverse key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

import attrs

from posledger.core.decide import Emitter
from posledger.core.errors import InvalidInput, shown
from posledger.core.events import MoneyReconciled, PositionEvent, Reconciled
from posledger.core.model import (
    PositionKey,
    aware_utc,
    non_negative_decimal,
    positive_decimal,
    text,
    to_decimal,
)
from posledger.core.position import PositionState, evolve


def _key(value: object) -> PositionKey:
    if not isinstance(value, PositionKey):
        raise InvalidInput(f"key must be a PositionKey, got {type(value).__name__}")
    return value


def _record_id(value: object) -> str:
    return text(value, "record_id")


def _closed_at(value: object) -> datetime:
    return aware_utc(value, "closed_at")


def _closed_size(value: object) -> Decimal:
    return positive_decimal(value, "closed_size")


def _trading_pnl(value: object) -> Decimal:
    return to_decimal(value, "trading_pnl")


def _fees(value: object) -> Decimal:
    return to_decimal(value, "fees")


def _net_pnl(value: object) -> Decimal:
    return to_decimal(value, "net_pnl")


def _penalty(value: object) -> Decimal:
    return to_decimal(value, "penalty")


def _funding(value: object) -> Decimal | None:
    return None if value is None else to_decimal(value, "funding")


@attrs.frozen
class MoneyRecord:
    """One close the exchange booked on one key: Bybit's ``/v5/position/closed-pnl`` row (one
    closing order), OKX's ``positions-history`` row (one closed or partly closed position).

    ``trading_pnl`` is the price difference alone (exit − entry value, long positive), before
    any fee or funding; ``net_pnl`` is the exchange's own headline figure as it reported it
    (Bybit ``closedPnl``, OKX ``realizedPnl``); ``funding`` is None where the record does not
    say (the funding is then read from the exchange's funding rows, not from this record).
    """

    key: PositionKey = attrs.field(converter=_key)
    record_id: str = attrs.field(converter=_record_id)
    closed_at: datetime = attrs.field(converter=_closed_at)
    closed_size: Decimal = attrs.field(converter=_closed_size)
    trading_pnl: Decimal = attrs.field(converter=_trading_pnl)
    fees: Decimal = attrs.field(converter=_fees)
    net_pnl: Decimal = attrs.field(converter=_net_pnl)
    funding: Decimal | None = attrs.field(default=None, converter=_funding)
    penalty: Decimal = attrs.field(default=Decimal(0), converter=_penalty)


def _tolerance(value: object) -> Decimal:
    return non_negative_decimal(value, "tolerance")


def _per_coin(value: object) -> Mapping[str, Decimal]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"per_coin must map settle coins to tolerances, got {shown(value)}")
    return MappingProxyType(
        {text(coin, "settle coin"): _tolerance(amount) for coin, amount in value.items()}
    )


@attrs.frozen
class MoneyPolicy:
    """How far the ledger's money may be from the exchange's records and still agree: per
    settle coin (``per_coin``), else ``tolerance``; each of trading PnL, fees and funding."""

    tolerance: Decimal = attrs.field(default=Decimal(0), converter=_tolerance)
    per_coin: Mapping[str, Decimal] = attrs.field(factory=dict, converter=_per_coin)

    def for_key(self, key: PositionKey) -> Decimal:
        coin = key.settle_coin
        return self.per_coin.get(coin, self.tolerance) if coin is not None else self.tolerance


@attrs.frozen
class LedgerMoney:
    """What the ledger realized from fills in a window: the price difference alone, fees and
    funding (positive paid), and whether a correction in the window set the size to the
    exchange's (so fills it never saw closed part of the position)."""

    trading_pnl: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    funding: Decimal = Decimal(0)
    corrected: bool = False


@attrs.frozen
class MoneyCheck:
    """A money check's outcome: agreement (no events) or the ``MoneyReconciled`` it writes."""

    agrees: bool
    difference: Decimal
    events: tuple[PositionEvent, ...] = ()
    detail: str = ""
    adopted: bool = False
    """A correction in the window explains the difference (only when one was written)."""


def ledger_money(events: Iterable[PositionEvent], start: datetime, end: datetime) -> LedgerMoney:
    """The ledger's money in ``[start, end]``, folded from a key's whole history: each event in
    the window adds what it changed (realized PnL, fees, funding)."""
    return folded_money(events, start, end)[1]


def folded_money(
    events: Iterable[PositionEvent], start: datetime, end: datetime
) -> tuple[PositionState | None, LedgerMoney]:
    """:func:`ledger_money`, and the state the history folds to (one pass for both)."""
    state: PositionState | None = None
    trading = fees = funding = Decimal(0)
    corrected = False
    for event in events:
        before = state
        state = evolve(state, event)
        if before is None or not start <= event.timestamp <= end:
            continue
        paid = state.funding - before.funding
        trading += state.realized_pnl - before.realized_pnl + paid
        fees += state.fees - before.fees
        funding += paid
        corrected = corrected or isinstance(event, Reconciled)
    return state, LedgerMoney(trading, fees, funding, corrected)


def decide_money(
    state: PositionState,
    ledger: LedgerMoney,
    records: Sequence[MoneyRecord],
    *,
    window: tuple[datetime, datetime],
    policy: MoneyPolicy,
    at: datetime,
) -> MoneyCheck:
    """Compare the ledger's money in ``window`` with the exchange's ``records`` of the closes
    in it (docs/design.md#money). Within tolerance on each of trading PnL, fees and funding
    (funding only where every record states it) nothing is written; otherwise one
    ``MoneyReconciled`` keeps both sides and the net difference, adopted when a correction in
    the window explains it. A window already checked writes nothing again."""
    start, end = window
    mine = [r for r in records if r.key == state.key and start <= r.closed_at <= end]
    checked = state.money_checked_until
    if checked is not None and end <= checked:
        return MoneyCheck(True, Decimal(0), (), f"checked through {checked.isoformat()}")
    funding_known = all(r.funding is not None for r in mine)
    exchange_funding = sum((r.funding or Decimal(0) for r in mine), Decimal(0))
    exchange = (
        sum((r.trading_pnl for r in mine), Decimal(0)),
        sum((r.fees for r in mine), Decimal(0)),
        exchange_funding if funding_known else None,
    )
    penalty = sum((r.penalty for r in mine), Decimal(0))
    ours = (ledger.trading_pnl, ledger.fees, ledger.funding if funding_known else None)
    tolerance = policy.for_key(state.key)
    apart = [
        abs(theirs - own) > tolerance
        for theirs, own in zip(exchange, ours, strict=True)
        if theirs is not None and own is not None
    ]
    difference = _net(*exchange) - penalty - _net(*ours)
    if not any(apart) and abs(penalty) <= tolerance:
        return MoneyCheck(True, difference)
    emitter = Emitter(state)
    emitter.emit(
        MoneyReconciled,
        at,
        window_start=start,
        window_end=end,
        records=[r.record_id for r in mine],
        ledger_trading_pnl=ours[0],
        ledger_fees=ours[1],
        ledger_funding=ours[2],
        exchange_trading_pnl=exchange[0],
        exchange_fees=exchange[1],
        exchange_funding=exchange[2],
        exchange_penalty=penalty,
        difference=difference,
        adopted=ledger.corrected,
        tolerance=tolerance,
    )
    how = "adopted (a correction in the window)" if ledger.corrected else "unexplained"
    detail = f"{difference:+f} {how}"
    return MoneyCheck(False, difference, tuple(emitter.events), detail, ledger.corrected)


def _net(trading: Decimal, fees: Decimal, funding: Decimal | None) -> Decimal:
    return trading - fees - (funding or Decimal(0))
