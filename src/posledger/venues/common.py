"""What every venue shares, whatever client carries its requests: reads written once as plans.

A plan is a generator that yields the :class:`Call` s a complete read needs, receives each call's
checked answer, and returns the value the read produces. It does no I/O, so one plan serves a
blocking client (pybit, ccxt) through :func:`run` and an asyncio client (``ccxt.async_support``)
through :func:`run_async`: paging, deduplication and every parsing rule live in one place.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Generator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from posledger.core.errors import (
    ExchangeAuthFailed,
    ExchangeMalformed,
    ExchangeRejected,
    ExchangeTruncated,
    ExchangeUnavailable,
    InvalidInput,
)
from posledger.core.model import Snapshot, aware_utc, to_decimal
from posledger.core.money import MoneyRecord

T = TypeVar("T")
S = TypeVar("S")
A = TypeVar("A")
Row = Mapping[str, Any]

INSTRUMENTS_TTL = timedelta(hours=1)
"""How long a venue trusts its list of instruments (symbols settling in a coin, contract
values) before it reads it again."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@attrs.frozen
class Call:
    """One request of a read: which endpoint, what it reads (for messages), and its query."""

    endpoint: str
    what: str
    query: Mapping[str, Any]


Plan = Generator[Call, Row, T]
"""Yields calls, is sent each call's checked ``result``, returns the read's value."""


class ReplyTimes:
    """The exchange's clock as the replies of one read tell it (Bybit's ``time``): a snapshot
    is stamped with the earliest, so ``taken_at`` is on the clock of the executions it is
    compared with, whatever the host's clock says (docs/design.md#absorbed)."""

    def __init__(self) -> None:
        self.earliest: datetime | None = None

    def saw(self, moment: datetime | None) -> None:
        """One reply's time (None: the reply did not say)."""
        if moment is not None and (self.earliest is None or moment < self.earliest):
            self.earliest = moment

    def stamp(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` taken at the earliest reply time; as it was (the host's clock, read
        before the first request) when no reply told the time."""
        if self.earliest is None:
            return snapshot
        return attrs.evolve(snapshot, taken_at=self.earliest)


def parsed_row(venue: str, what: str, row: Row, parse: Callable[[Row], T]) -> T:
    """A value from one row of ``venue``'s reply; any missing or malformed field fails the
    whole read (it is never read as a default)."""
    try:
        return parse(row)
    except (InvalidInput, KeyError, TypeError, ValueError, ArithmeticError) as error:
        message = f"{venue} {what} row is malformed ({error}): {row!r:.300}"
        raise ExchangeMalformed(message) from error


def unreadable(message: str, error: BaseException) -> ExchangeUnavailable:
    """The error for a request that failed in the client: :class:`ExchangeTruncated` when the
    body's JSON ran out before its value ended (a reply cut short: decoding stopped at its end,
    or in a string that runs to its end), :class:`ExchangeMalformed`
    when the body is not JSON at all, else a plain :class:`ExchangeUnavailable` (the transport
    failed). Clients rewrap a decoding error (pybit: "Could not decode JSON"), so the error's
    chain is searched for it."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, json.JSONDecodeError):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return ExchangeUnavailable(message)
    if cause.pos >= len(cause.doc.rstrip()) or cause.msg.startswith("Unterminated string"):
        return ExchangeTruncated(message)
    return ExchangeMalformed(message)


def rejection(
    message: str, code: int | str | None, auth_codes: Collection[int | str]
) -> ExchangeRejected:
    """The error for an answer with error ``code``: :class:`ExchangeAuthFailed` for one of the
    venue's ``auth_codes`` (the credentials were refused: retrying cannot help), else
    :class:`ExchangeRejected`."""
    if code in auth_codes:
        return ExchangeAuthFailed(message, code=code)
    return ExchangeRejected(message, code=code)


def run(plan: Generator[S, A, T], answer: Callable[[S], A]) -> T:
    """Carry out ``plan`` (a venue's read, or any plan of steps and answers) with blocking I/O.
    An exception from ``answer`` is raised inside the plan, at the step that failed: it ends
    the plan unless the plan handles it (a refused filter it can do without)."""
    try:
        step = next(plan)
        while True:
            try:
                reply = answer(step)
            except Exception as error:
                step = plan.throw(error)
            else:
                step = plan.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        plan.close()


async def run_async(plan: Generator[S, A, T], answer: Callable[[S], Awaitable[A]]) -> T:
    """Carry out ``plan`` with asyncio I/O, failures raised inside it as :func:`run` does;
    cancellation simply abandons the plan."""
    try:
        step = next(plan)
        while True:
            try:
                reply = await answer(step)
            except Exception as error:
                step = plan.throw(error)
            else:
                step = plan.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        plan.close()


def covered_symbols(symbols: Iterable[str] | None) -> tuple[str, ...] | None:
    """The symbols a read covers, sorted and each once; None covers them all."""
    if isinstance(symbols, str):
        raise InvalidInput("symbols must be a collection of symbols, not one string")
    covered = None if symbols is None else tuple(sorted(set(symbols)))
    if covered == ():
        raise InvalidInput("symbols must name at least one symbol (None covers them all)")
    return covered


def time_from_ms(value: Any) -> datetime | None:
    """A millisecond timestamp string, as Bybit and OKX write them; "" means not reported."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise InvalidInput(f"timestamp must be a string of milliseconds, got {value!r}")
    return _EPOCH + timedelta(milliseconds=int(value))


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as venues take time bounds."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def money_field(row: Row, name: str) -> Decimal:
    """A documented money field of a record row: a number string; missing or "" fails the row
    (an amount is never read as a default)."""
    value = row[name]
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} must be a number string, got {value!r}")
    return to_decimal(value, name)


def unique_records(exchange: str, records: Iterable[MoneyRecord]) -> list[MoneyRecord]:
    """Each money record once, oldest first (by ``closed_at``, then id): windows and pages can
    list one twice. The same id with other figures is an inconsistent read, never a choice."""
    seen: dict[str, MoneyRecord] = {}
    for record in records:
        first = seen.setdefault(record.record_id, record)
        if first != record:
            raise ExchangeUnavailable(
                f"{exchange} listed money record {record.record_id} twice with different "
                f"figures: {first} and {record}"
            )
    return sorted(seen.values(), key=lambda r: (r.closed_at, r.record_id))


def refuse_older_than(
    exchange: str, what: str, start_ms: int, now: datetime, span: timedelta
) -> None:
    """Refuse a read starting before the ``span`` the exchange serves back from ``now``: older
    records would be silently missing, so the read is refused rather than cut short."""
    oldest = aware_utc(now, "clock") - span
    if start_ms < to_ms(oldest):
        raise ExchangeUnavailable(
            f"{exchange} {what} serves the last {span.days} days only (since "
            f"{oldest:%Y-%m-%d %H:%M}): a read from further back would miss older records"
        )
