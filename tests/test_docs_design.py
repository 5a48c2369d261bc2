"""docs/design.md names what the code has: the page cannot silently drift from it."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from posledger import Correction, Outcome, PositionKey, ReconcilePolicy
from posledger.core.events import EVENT_TYPES, ExecutionSeen

PAGE = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def section(anchor: str) -> str:
    """The text under the heading with ``{#anchor}``, up to the next heading of its level or
    above."""
    text = PAGE.read_text(encoding="utf-8")
    heading = re.search(rf"^(#+) .*\{{#{anchor}\}}$", text, flags=re.M)
    assert heading is not None, f"docs/design.md has no section #{anchor}"
    level = len(heading.group(1))
    rest = text[heading.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def first_column(table_text: str) -> list[str]:
    """The backquoted names in the first cell of each row of the tables in ``table_text``."""
    return re.findall(r"^\| `(\w+)` \|", table_text, flags=re.M)


def test_the_correction_table_lists_exactly_the_corrections() -> None:
    listed = first_column(section("corrections"))
    assert sorted(listed) == sorted(c.value for c in Correction)


def test_the_events_section_names_every_event() -> None:
    events = section("events")
    for cls in (*EVENT_TYPES, ExecutionSeen):
        assert f"`{cls.__name__}`" in events, f"{cls.__name__} is not in docs/design.md#events"


def test_the_event_table_lists_exactly_the_position_events() -> None:
    assert first_column(section("events")) == [cls.__name__ for cls in EVENT_TYPES]


def test_the_policy_table_lists_exactly_the_policy_fields() -> None:
    listed = first_column(section("policy"))
    assert listed == [field.name for field in attrs.fields(ReconcilePolicy)]


def test_every_outcome_is_named() -> None:
    policy = section("policy")
    for outcome in Outcome:
        assert f"`{outcome.value}`" in policy


def test_the_settle_coin_table_is_what_the_keys_say() -> None:
    rows = re.findall(
        r"^\| (bybit|okx) \| (\w+) \| ([\w-]+) \| (yes|no) \| (\w+) \|$",
        section("inverse"),
        flags=re.M,
    )
    assert len(rows) == 10
    for venue, category, symbol, inverse, coin in rows:
        key = PositionKey(venue=venue, account="main", category=category, symbol=symbol)
        assert (key.inverse, key.settle_coin) == (inverse == "yes", coin), key
