"""The allocation rules of ``posledger.core.allocation`` (docs/books.md#allocation), each tested
with literal inputs; the laws among them also as properties. Invariants, numbered as the tests
name them:

A1  ``hamilton`` is exact: the shares sum to the total when it is a whole number of units
    (rounded down to one when it is not), whatever the order the books come in.
A2  Each share is its exact fraction rounded down to a unit; the units left go one at a time to
    the largest remainders, ties to the book whose name sorts first.
A3  Weights are signed: a negative weight takes a share of the opposite sign; weights summing
    to zero are refused. The unit may be finer than every weight (``unit_of`` finds it).
A4  ``allocate_change`` under the unassigned rule gives the whole change to the unassigned
    book, whatever the books hold.
A5  Pro rata shares only the part of a change that reduces the account toward flat, in
    proportion to the books' signed sizes (every book scaled by the same factor, netting books
    too); the part beyond flat, and any increase, goes to the unassigned book. A share never
    exceeds its book's size, and the shares sum to the change.
A6  ``split_funding`` splits by signed size (a book short against a long account receives what
    the long books pay), in 1e-8 or the amount's finer unit; books netting to zero (or none
    holding) give an empty split.
A7  ``AllocationPolicy`` refuses (InvalidInput) an unknown cause, a bad book name and a bare
    string for ``pro_rata``; a cause is pro rata exactly when listed (enum members accepted).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posledger import AllocationPolicy, ExecKind, InvalidInput, PositionKey
from posledger.core.allocation import (
    MONEY_UNIT,
    SHAREABLE,
    Rule,
    allocate_change,
    hamilton,
    split_funding,
    unit_of,
)
from posledger.testing.strategies import allocation_policies, book_names, position_keys
from tests.core.literals import d

NAMES = st.sampled_from(("", "alpha", "beta", "gamma", "manual"))
UNITS = st.sampled_from((Decimal(1), Decimal("0.1"), Decimal("0.001"), Decimal("1e-8")))
SIZE = st.decimals(min_value="-50", max_value="50", places=3).filter(lambda v: v != 0)
BOOKS = st.dictionaries(NAMES, SIZE, min_size=1, max_size=5)


def reversed_dict(books: dict[str, Decimal]) -> dict[str, Decimal]:
    return dict(reversed(list(books.items())))


# --- A1 exactness -----------------------------------------------------------------------------


def test_a1_shares_sum_to_the_total_exactly() -> None:
    shares = hamilton(d(10), {"a": d(1), "b": d(1), "c": d(1)}, d(1))
    assert shares == {"a": 4, "b": 3, "c": 3}
    assert sum(shares.values()) == 10


def test_a1_a_total_finer_than_the_unit_is_rounded_down_to_one() -> None:
    assert hamilton(d("0.0015"), {"a": d(1), "b": d(1)}, d("0.001")) == {
        "a": d("0.001"),
        "b": 0,
    }


@given(
    weights=BOOKS.filter(lambda b: sum(b.values()) != 0),
    units=st.integers(min_value=-10_000, max_value=10_000),
    unit=UNITS,
)
def test_a1_property_exact_sum_and_order_of_books_irrelevant(
    weights: dict[str, Decimal], units: int, unit: Decimal
) -> None:
    total = units * unit
    shares = hamilton(total, weights, unit)
    assert sum(shares.values()) == total
    assert hamilton(total, reversed_dict(weights), unit) == shares
    whole = sum(weights.values())
    for book, share in shares.items():  # within one unit below... or above its exact fraction
        exact = Fraction(total) * Fraction(weights[book]) / Fraction(whole)
        assert abs(Fraction(share) - exact) < Fraction(unit)
        assert share % unit == 0


# --- A2 largest remainders ----------------------------------------------------------------------


def test_a2_floor_then_largest_remainders() -> None:
    # exact 1.67, 3.33, 5: floors 1, 3, 5 leave one unit, to a (remainder 0.67)
    assert hamilton(d(10), {"a": d(1), "b": d(2), "c": d(3)}, d(1)) == {"a": 2, "b": 3, "c": 5}


def test_a2_ties_go_to_the_first_name() -> None:
    assert hamilton(d(1), {"b": d(1), "a": d(1)}, d(1)) == {"a": 1, "b": 0}
    assert hamilton(d(2), {"c": d(1), "b": d(1), "a": d(1)}, d(1)) == {"a": 1, "b": 1, "c": 0}


# --- A3 signed weights, units -------------------------------------------------------------------


def test_a3_a_negative_weight_takes_the_opposite_sign() -> None:
    # exact 1.5 and -0.5: floors 1 and -1 leave one unit; the remainders tie (0.5), a first
    assert hamilton(d(1), {"a": d(3), "b": d(-1)}, d(1)) == {"a": 2, "b": -1}
    assert hamilton(d(-3), {"a": d(2), "b": d(1)}, d(1)) == {"a": -2, "b": -1}


def test_a3_weights_summing_to_zero_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^weights sum to zero$"):
        hamilton(d(1), {"a": d(1), "b": d(-1)}, d(1))


def test_a3_a_total_finer_than_the_weights_is_split_in_its_own_unit() -> None:
    assert unit_of(d("0.003"), d(2), d(1), d(1)) == d("0.001")
    assert unit_of(d(3), d("1.50")) == d("0.1")  # trailing zeros do not count: how a figure is
    assert unit_of(d("1.0"), d(2)) == unit_of(d(1), d(2)) == 1  # written never changes a split
    assert unit_of(d(5)) == 1 and unit_of(d("5E+2")) == 1
    assert unit_of(d("0.1"), Decimal("NaN")) == d("0.1")
    # exact 1.5, 0.75, 0.75 thousandths: floors 1, 0, 0; two units to the 0.75s
    shares = hamilton(d("0.003"), {"a": d(2), "b": d(1), "c": d(1)}, d("0.001"))
    assert shares == {"a": d("0.001"), "b": d("0.001"), "c": d("0.001")}
    assert all(isinstance(v, Decimal) for v in shares.values())


# --- A4 the unassigned rule ---------------------------------------------------------------------


def test_a4_the_unassigned_rule_gives_all_to_the_unassigned_book() -> None:
    books = {"alpha": d(2), "beta": d(1)}
    assert allocate_change(d(-1), books, Rule.UNASSIGNED, "") == {"": -1}
    assert allocate_change(d("0.5"), books, Rule.UNASSIGNED, "manual") == {"manual": d("0.5")}
    assert allocate_change(d(-1), {"manual": d(1)}, Rule.UNASSIGNED, "manual") == {"manual": -1}
    assert allocate_change(d(0), books, Rule.UNASSIGNED, "") == {}


# --- A5 pro rata --------------------------------------------------------------------------------


def test_a5_a_reduction_is_shared_in_proportion() -> None:
    books = {"alpha": d(2), "beta": d(1)}
    assert allocate_change(d("-1.5"), books, Rule.PRO_RATA, "") == {
        "alpha": d(-1),
        "beta": d("-0.5"),
    }
    short = {"alpha": d(-2), "beta": d(-1)}
    assert allocate_change(d("0.3"), short, Rule.PRO_RATA, "") == {
        "alpha": d("0.2"),
        "beta": d("0.1"),
    }
    assert allocate_change(d(1), {"alpha": d(-1)}, Rule.PRO_RATA, "") == {"alpha": 1}


def test_a5_the_unit_is_the_finest_among_the_change_and_the_books() -> None:
    # a whole change of books held in halves is shared in halves, not whole units
    halves = {"a": d("0.5"), "b": d("0.5")}
    assert allocate_change(d(-1), halves, Rule.PRO_RATA, "") == {"a": d("-0.5"), "b": d("-0.5")}


def test_a5_beyond_flat_goes_to_the_unassigned_book() -> None:
    # the account long 2 sells 3: 2 shared (every book flat), 1 short to the unassigned book
    assert allocate_change(d(-3), {"a": d(1), "b": d(1)}, Rule.PRO_RATA, "u") == {
        "a": -1,
        "b": -1,
        "u": -1,
    }
    # the unassigned book holding a share receives both parts, summed
    assert allocate_change(d(-3), {"a": d(1), "u": d(1)}, Rule.PRO_RATA, "u") == {
        "a": -1,
        "u": -2,
    }


def test_a5_an_increase_goes_to_the_unassigned_book() -> None:
    books = {"alpha": d(2), "beta": d(1)}
    assert allocate_change(d(1), books, Rule.PRO_RATA, "") == {"": 1}
    assert allocate_change(d(-1), {"alpha": d(-1)}, Rule.PRO_RATA, "m") == {"m": -1}
    assert allocate_change(d(1), {"alpha": d(1), "beta": d(-1)}, Rule.PRO_RATA, "") == {"": 1}


def test_a5_netting_books_scale_by_the_same_factor() -> None:
    # alpha 2, beta 1, gamma -0.5 (net 2.5); to flat: every book flat, gamma bought back
    books = {"alpha": d(2), "beta": d(1), "gamma": d("-0.5")}
    assert allocate_change(d("-2.5"), books, Rule.PRO_RATA, "") == {
        "alpha": d(-2),
        "beta": d(-1),
        "gamma": d("0.5"),
    }
    # halfway: each book halves
    assert allocate_change(d("-1.25"), books, Rule.PRO_RATA, "") == {
        "alpha": d(-1),
        "beta": d("-0.50"),
        "gamma": d("0.25"),
    }


def test_a5_an_unassigned_book_whose_two_parts_cancel_is_left_out() -> None:
    # account long 1 (alpha 2, manual -1) sells 2: manual buys back 1 of the shared part and
    # sells 1 of the rest beyond flat, a zero share in all (no execution of quantity 0)
    books = {"alpha": d(2), "manual": d(-1)}
    assert allocate_change(d(-2), books, Rule.PRO_RATA, "manual") == {"alpha": d(-2)}


def test_a5_a_book_whose_share_rounds_to_zero_is_left_out() -> None:
    # exact -1, -0.5, +0.5: floors -1, -1, 0 leave one unit, to beta (tie with gamma, first)
    books = {"alpha": d(2), "beta": d(1), "gamma": d(-1)}
    assert allocate_change(d(-1), books, Rule.PRO_RATA, "") == {"alpha": -1}


@given(books=BOOKS, change=SIZE, unassigned=NAMES, rule=st.sampled_from(Rule))
def test_a5_property_shares_sum_stay_within_each_book_and_ignore_order(
    books: dict[str, Decimal], change: Decimal, unassigned: str, rule: Rule
) -> None:
    shares = allocate_change(change, books, rule, unassigned)
    assert sum(shares.values()) == change
    assert all(share != 0 for share in shares.values())
    assert allocate_change(change, reversed_dict(books), rule, unassigned) == shares
    net = sum(books.values())
    reducing = rule is Rule.PRO_RATA and net != 0 and (change > 0) != (net > 0)
    for book, share in shares.items():
        if book == unassigned:
            continue
        assert reducing, f"{book} took a share of a change no rule shares: {shares}"
        size = books[book]
        # the book moves toward flat (or nets the same way), never past it
        assert abs(share) <= abs(size) and (share > 0) != (size > 0)
    if not reducing:
        assert shares == {unassigned: change}


# --- A6 funding -------------------------------------------------------------------------------


def test_a6_funding_is_split_by_signed_size_to_the_satoshi() -> None:
    # docs/books.md#example: 0.00666667 + 0.00333334 (the larger remainder is beta's)
    split = split_funding(d("0.01000001"), {"trend": d("1.998"), "grid": d("0.999")})
    assert split == {"trend": d("0.00666667"), "grid": d("0.00333334")}
    assert d("1e-8") == MONEY_UNIT


def test_a6_a_short_book_receives_what_the_long_book_pays() -> None:
    split = split_funding(d("0.3"), {"long": d(2), "short": d(-1)})
    assert split == {"long": d("0.6"), "short": d("-0.3")}


def test_a6_an_amount_finer_than_a_satoshi_is_split_in_its_own_unit() -> None:
    split = split_funding(d("1e-10"), {"a": d(1), "b": d(1)})
    assert split == {"a": d("1e-10")}  # one unit of 1e-10; b's share is zero and left out
    assert sum(split_funding(d("3e-10"), {"a": d(1), "b": d(2)}).values()) == d("3e-10")


def test_a6_books_holding_nothing_net_give_no_split() -> None:
    assert split_funding(d("0.3"), {"a": d(1), "b": d(-1)}) == {}
    assert split_funding(d("0.3"), {"a": d(0)}) == {}
    assert split_funding(d("0.3"), {}) == {}
    assert split_funding(d("0.3"), {"a": d(0), "b": d(2)}) == {"b": d("0.3")}


@given(
    books=BOOKS.filter(lambda b: sum(b.values()) != 0),
    amount=st.decimals(min_value="-100", max_value="100", places=10),
)
def test_a6_property_funding_sums_exactly_and_ignores_order(
    books: dict[str, Decimal], amount: Decimal
) -> None:
    split = split_funding(amount, books)
    assert sum(split.values(), Decimal(0)) == amount
    assert split_funding(amount, reversed_dict(books)) == split
    assert set(split) <= set(books)


# --- A7 the policy ------------------------------------------------------------------------------


def test_a7_a_policy_shares_pro_rata_exactly_the_causes_it_lists() -> None:
    policy = AllocationPolicy(unassigned="manual", pro_rata={ExecKind.ADL, "phantom"})
    assert policy.pro_rata == {"adl", "phantom"}
    assert policy.rule("adl") is Rule.PRO_RATA and policy.rule("phantom") is Rule.PRO_RATA
    assert policy.rule("liquidation") is Rule.UNASSIGNED
    assert AllocationPolicy() == AllocationPolicy(unassigned="", pro_rata=())
    assert AllocationPolicy(pro_rata=sorted(SHAREABLE)).pro_rata == SHAREABLE


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pro_rata": {"funding"}}, "cannot share funding"),
        ({"pro_rata": {"adopted", "adl"}}, "cannot share adopted; one of adl, delivery, "),
        ({"pro_rata": {"adopted", "funding"}}, "cannot share adopted, funding;"),
        ({"pro_rata": "adl"}, "must be a set of causes"),
        ({"pro_rata": b"adl"}, "must be a set of causes"),
        ({"pro_rata": 3}, "must be a set of causes"),
        ({"unassigned": " padded"}, "book must be printable"),
        ({"unassigned": "x" * 65}, "book must be printable"),
        ({"unassigned": "tab\there"}, "control characters"),
        ({"unassigned": 7}, "book"),
    ],
)
def test_a7_bad_policies_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        AllocationPolicy(**fields)  # type: ignore[arg-type]


@given(book_names(), allocation_policies(), position_keys(books=("", "alpha", "beta")))
def test_the_public_strategies_draw_valid_books_policies_and_book_keys(
    name: str, policy: AllocationPolicy, k: PositionKey
) -> None:
    assert PositionKey.book_name(name) == name
    assert AllocationPolicy(unassigned=policy.unassigned, pro_rata=policy.pro_rata) == policy
    assert k.book in ("", "alpha", "beta") and k.account_key.book == ""
