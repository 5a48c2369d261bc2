"""How Bybit reads a request's parameters (category, filters, time window, limit, cursor), and
the ``retCode`` it answers when they are wrong."""

from __future__ import annotations

import re

from posledger.testing.fake_bybit.records import CATEGORIES, FakeOrder
from posledger.testing.fake_http import Row

WEEK_MS = 7 * 24 * 3600 * 1000
"""Bybit serves executions and order history in windows of at most seven days."""

_CURSOR = re.compile(r"page_token=(\d+)&")


class ApiError(Exception):
    """A Bybit error answer: HTTP 200 with this ``retCode`` and ``retMsg``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def cursor(offset: int) -> str:
    """Bybit's cursors are URL-encoded tokens; pybit sends them back verbatim."""
    return f"page_token%3D{offset}%26"


def category_of(params: dict[str, str]) -> str:
    category = params.get("category", "")
    if category not in CATEGORIES:
        raise ApiError(10001, f"params error: category {category!r} invalid")
    return category


def settle_filter(category: str, params: dict[str, str]) -> str | None:
    """The ``settleCoin`` a read is filtered by. Bybit documents the filter for linear reads;
    inverse reads are documented by category alone (``position/list?category=inverse`` lists
    every held position), so the fake ignores it there: a venue must filter inverse rows itself."""
    return None if category == "inverse" else params.get("settleCoin")


def order_matches(order: FakeOrder, params: dict[str, str]) -> bool:
    symbol, settle = params.get("symbol"), settle_filter(order.category, params)
    return symbol in (None, order.symbol) and settle in (None, order.settle_coin)


def optional_int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not value.lstrip("-").isdigit():
        raise ApiError(10001, f"params error: {name} must be an integer")
    return int(value)


def window(params: dict[str, str], now_ms: int) -> tuple[int, int]:
    """``startTime``/``endTime`` in ms: a missing end is a week after the start (or now), a
    missing start a week before the end."""
    start, end = optional_int(params, "startTime"), optional_int(params, "endTime")
    if end is None:
        end = now_ms if start is None else start + WEEK_MS
    if start is None:
        start = end - WEEK_MS
    if end - start > WEEK_MS:
        raise ApiError(10001, "The time range between startTime and endTime cannot exceed 7 days")
    if end < start:
        raise ApiError(10001, "startTime should be less than endTime")
    return start, end


def page(
    category: str,
    rows: list[Row],
    params: dict[str, str],
    *,
    default: int,
    maximum: int,
    page_size: int | None,
) -> Row:
    """The page of ``rows`` that ``limit`` and ``cursor`` ask for (at most ``page_size``)."""
    limit = optional_int(params, "limit") or default
    if not 1 <= limit <= maximum:
        raise ApiError(10001, f"params error: limit must be in [1, {maximum}]")
    size = min(limit, page_size or limit)
    token = params.get("cursor", "")
    match = _CURSOR.fullmatch(token)
    if token and match is None:
        raise ApiError(10001, "params error: cursor invalid")
    offset = int(match.group(1)) if match else 0
    end = offset + size
    return {
        "list": rows[offset:end],
        "nextPageCursor": cursor(end) if end < len(rows) else "",
        "category": category,
    }
