"""OKX's record of money: ``/api/v5/account/positions-history`` rows as :class:`MoneyRecord` s,
and the plan that pages through them (docs/money.md#okx-positions-history says what each field
means and where that is written).

A row is one position (``posId``, from its ``cTime``) that has closed, wholly or in part: its
cumulative closed size (``closeTotalPos`` contracts), price PnL (``pnl``), fees (``fee``, opening
and closing), ``fundingFee`` and ``liqPenalty``, and ``realizedPnl``, their sum. Signs are OKX's
balance changes (negative = paid), so the ledger's fees, funding and penalty are their negation.
A row still open after a partial close is listed too and grows with each later close: the record
of one position is read again, with larger figures, until it closes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from posledger.core.errors import ExchangeUnavailable, InvalidInput
from posledger.core.model import PositionKey, positive_decimal, text
from posledger.core.money import MoneyRecord
from posledger.venues.common import Call, Plan, Row, money_field, parsed_row, time_from_ms

POSITIONS_HISTORY = "/api/v5/account/positions-history"
POSITIONS_HISTORY_SPAN = timedelta(days=90)
"""positions-history serves the positions updated in the last three months."""

HISTORY_PAGE = 100
"""The largest page positions-history serves (``limit``, at most 100)."""

LEGS: Mapping[str, int] = {"net": 0, "long": 1, "short": 2}
"""OKX ``posSide`` → posledger's ``idx``."""

T = TypeVar("T")


def position_history(scope: Mapping[str, str], start_ms: int, end_ms: int) -> Plan[list[Row]]:
    """Every positions-history row of ``scope`` updated from ``start_ms`` up to ``end_ms``, and
    perhaps some older ones (the caller keeps its window). OKX pages it newest ``uTime`` first,
    ``after`` asking for rows updated strictly before a time; so rows sharing the last row's
    ``uTime`` may straddle two pages. Each next page therefore asks from that time again (its
    rows already read are skipped), and a page wholly of one ``uTime`` is followed below it.
    A row at or after the asked time means the server ignored ``after`` (paging would never
    end); a full page of one ``uTime`` cannot be paged past without missing rows: both fail
    the read, which never returns part of the listing."""
    rows: dict[tuple[str, str], Row] = {}
    after = end_ms + 1
    while True:
        query = {**scope, "limit": str(HISTORY_PAGE), "after": str(after)}
        page = (yield Call(POSITIONS_HISTORY, "positions history", query))["data"]
        times = [_parsed(row, _updated_ms) for row in page]
        if any(moment >= after for moment in times):
            raise ExchangeUnavailable(
                f"OKX positions history: asked for rows updated before {after}, got later ones: "
                f"the listing did not page"
            )
        fresh = {_parsed(r, _history_id): r for r in page if _parsed(r, _history_id) not in rows}
        rows.update(fresh)
        if not fresh or min(times) < start_ms:
            return list(rows.values())
        oldest = min(times)
        if all(moment == oldest for moment in times):
            if len(page) >= HISTORY_PAGE:
                raise ExchangeUnavailable(
                    f"OKX positions history: a full page of positions updated at {oldest}: "
                    f"paging by uTime cannot reach the rest of them"
                )
            after = oldest
        else:
            after = oldest + 1


def history_from_row(
    row: Row, *, venue: str, account: str, category: str, contract_size: Decimal
) -> MoneyRecord:
    """One row in the ledger's signs and units: ``closeTotalPos`` contracts × ``ctVal``;
    ``trading_pnl`` is ``pnl`` plus ``settledPnl`` (cross-margin futures settled daily; "" or
    absent elsewhere); ``fees``, ``funding`` and ``penalty`` are ``-fee``, ``-fundingFee`` and
    ``-liqPenalty``; ``net_pnl`` is ``realizedPnl`` as OKX reports it. The record is the
    position's, ``posId`` from ``cTime``: a ``posId`` is reused for a later position."""
    updated = time_from_ms(row["uTime"])
    if updated is None:
        raise InvalidInput("uTime must be reported")
    return MoneyRecord(
        key=PositionKey(
            venue=venue, account=account, category=category, symbol=row["instId"], idx=leg(row)
        ),
        record_id=":".join(_history_id(row)),
        closed_at=updated,
        closed_size=positive_decimal(row["closeTotalPos"], "closeTotalPos") * contract_size,
        trading_pnl=money_field(row, "pnl") + _optional(row, "settledPnl"),
        fees=-money_field(row, "fee"),
        funding=-money_field(row, "fundingFee"),
        penalty=-_optional(row, "liqPenalty"),
        net_pnl=money_field(row, "realizedPnl"),
    )


def _parsed(row: Row, parse: Callable[[Row], T]) -> T:
    return parsed_row("OKX", "positions history", row, parse)


def leg(row: Row) -> int:
    """A row's ``posSide`` as posledger's ``idx``."""
    pos_side = row["posSide"]
    if pos_side not in LEGS:
        raise InvalidInput(f"posSide must be one of {sorted(LEGS)}, got {pos_side!r}")
    return LEGS[pos_side]


def _history_id(row: Row) -> tuple[str, str]:
    """A position's record: its ``posId`` and its ``cTime`` (both digits)."""
    pos_id, created = row["posId"], row["cTime"]
    for name, value in (("posId", pos_id), ("cTime", created)):
        if not isinstance(value, str) or not value.isdigit():
            raise InvalidInput(f"{name} must be a string of digits, got {value!r}")
    return text(pos_id, "posId"), created


def _updated_ms(row: Row) -> int:
    value = row["uTime"]
    if not isinstance(value, str) or not value.isdigit():
        raise InvalidInput(f"uTime must be a string of milliseconds, got {value!r}")
    return int(value)


def _optional(row: Row, name: str) -> Decimal:
    """A field OKX writes only where it applies: "" or absent is 0."""
    value = row.get(name, "")
    return Decimal(0) if value == "" else money_field(row, name)
