"""How an account-level change is shared among the account's books (docs/books.md#allocation).

What the exchange did on its own (an execution of no order the ledger knows, a liquidation, a
residual correction) belongs to no book. The rule is one table: the unassigned book takes it,
unless the policy shares that cause pro rata; funding is always shared pro rata. Shares are
exact: rounded down to a unit, then the remainder given one unit at a time to the largest
fractions (ties: book name), so the books sum to the account's figure to the last unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

import attrs

from posledger.core.errors import InvalidInput, shown
from posledger.core.model import SIZES, ExecKind, _to_book

ZERO = Decimal(0)

MONEY_UNIT = Decimal("1e-8")
"""The coarsest unit funding is split in (a satoshi; finer when the exchange's figure is)."""

FUNDING = "funding"
"""The cause of a funding split (always pro rata)."""

SHAREABLE = frozenset(
    {
        ExecKind.ADL.value,
        ExecKind.LIQUIDATION.value,
        ExecKind.DELIVERY.value,
        ExecKind.SETTLE.value,
        ExecKind.UNKNOWN.value,
        ExecKind.TRADE.value,
        "phantom",
        "stale_quantity",
        "side_mismatch",
    }
)
"""Causes a policy may share pro rata: executions of no known order, by kind (``trade`` is a
manual trade or an order placed outside the ledger), and the residual corrections."""


class Rule(StrEnum):
    """How one allocation was made (``Allocated.rule``)."""

    UNASSIGNED = "unassigned"
    """All of it to the policy's unassigned book."""
    PRO_RATA = "pro_rata"
    """The part reducing the account's position toward flat shared in proportion to the
    books' signed sizes (each book scaled by the same factor); any rest (beyond flat) to the
    unassigned book."""


def _pro_rata(value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInput(f"pro_rata must be a set of causes, got {shown(value)}")
    causes = frozenset(str(getattr(item, "value", item)) for item in value)
    unknown = sorted(causes - SHAREABLE)
    if unknown:
        raise InvalidInput(
            f"pro_rata cannot share {', '.join(unknown)}; one of {', '.join(sorted(SHAREABLE))}"
        )
    return causes


@attrs.frozen
class AllocationPolicy:
    """Where what belongs to no book goes: the ``unassigned`` book (the default book unless
    named), or, for the causes in ``pro_rata``, the books holding the position."""

    unassigned: str = attrs.field(default="", converter=_to_book)
    pro_rata: frozenset[str] = attrs.field(factory=frozenset, converter=_pro_rata)

    def rule(self, cause: str) -> Rule:
        return Rule.PRO_RATA if cause in self.pro_rata else Rule.UNASSIGNED


def unit_of(*values: Decimal) -> Decimal:
    """The finest significant digit among ``values`` (1 for integers): the unit shares are
    exact in. Trailing zeros do not count, so ``1.0`` and ``1`` split alike."""
    exponent = min([0, *(int(v.normalize().as_tuple().exponent) for v in values if v.is_finite())])
    return Decimal(1).scaleb(exponent)


def hamilton(total: Decimal, weights: Mapping[str, Decimal], unit: Decimal) -> dict[str, Decimal]:
    """``total`` split in proportion to ``weights`` (signed; their sum not zero), in whole
    ``unit``s: each exact share (a fraction) rounded down, then one unit each to the largest
    remainders, ties by name. The shares sum to ``total`` exactly when ``total`` is a whole
    number of units."""
    whole = sum((Fraction(w) for w in weights.values()), Fraction(0))
    if whole == 0:
        raise ValueError("weights sum to zero")
    step = Fraction(unit)
    exact = {book: Fraction(total) * Fraction(w) / whole / step for book, w in weights.items()}
    units = {book: math.floor(value) for book, value in exact.items()}
    left = math.floor(Fraction(total) / step) - sum(units.values())
    for book in sorted(exact, key=lambda b: (units[b] - exact[b], b))[:left]:
        units[book] += 1
    return {book: SIZES.multiply(Decimal(n), unit) for book, n in units.items()}


def allocate_change(
    change: Decimal, books: Mapping[str, Decimal], rule: Rule, unassigned: str
) -> dict[str, Decimal]:
    """A signed change of the account's position as signed changes of its books (``books``:
    each book's signed size). Under :attr:`Rule.PRO_RATA` the part that reduces the account
    toward flat scales every book by the same factor (shares in proportion to the books'
    signed sizes: a reduction to flat leaves every book flat, netting ones too); the rest, and
    all of it under :attr:`Rule.UNASSIGNED`, goes to ``unassigned``. Books whose share is zero
    are left out; the shares sum to ``change`` exactly."""
    net = sum(books.values(), ZERO)
    shares: dict[str, Decimal] = {}
    reducing = ZERO
    if rule is Rule.PRO_RATA and net != 0 and change != 0 and (change > 0) != (net > 0):
        reducing = min(abs(change), abs(net)) * (1 if change > 0 else -1)
        holders = {book: size for book, size in books.items() if size != 0}
        split = hamilton(reducing, holders, unit_of(reducing, *holders.values()))
        shares = dict(split)
    rest = SIZES.subtract(change, reducing)
    if rest:
        shares[unassigned] = SIZES.add(shares.get(unassigned, ZERO), rest)
    # the unassigned book's two parts cancel when it nets against a change beyond flat
    return {book: share for book, share in shares.items() if share}


def split_funding(amount: Decimal, books: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """A funding amount of the account shared by its books in proportion to their signed sizes
    at the funding time (a book short against the account's long receives what the long
    pays), exact to :data:`MONEY_UNIT` or the amount's own last digit if finer. Empty when the
    books hold nothing net (the caller gives it to the unassigned book)."""
    holding = {book: size for book, size in books.items() if size != 0}
    if not holding or sum(holding.values(), ZERO) == 0:
        return {}
    unit = min(unit_of(amount), MONEY_UNIT)
    return {b: s for b, s in hamilton(amount, holding, unit).items() if s}
