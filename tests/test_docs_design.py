"""docs/design.md names what the code has: the page cannot silently drift from it."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from posledger import Correction, ExecKind, Outcome, PositionKey, ReconcilePolicy
from posledger.core.decide import CLOSE_REASON_BY_KIND
from posledger.core.events import EVENT_TYPES, ExecutionSeen
from posledger.venues.bybit import EXEC_KINDS
from posledger.venues.okx import NOT_POSITION_FILLS, SUB_TYPES

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


def exec_type_rows() -> dict[str, dict[str, str]]:
    """The execution-type table as {venue: {type: kind}}, a range `a`–`b` expanded; "not a fill"
    is kept as the kind ``-``."""
    rows: dict[str, dict[str, str]] = {"Bybit": {}, "OKX": {}}
    table = re.findall(r"^\| (Bybit|OKX) \| ([^|]+) \| ([^|]+) \|", section("exec-types"), re.M)
    for venue, types, kind in table:
        names = re.findall(r"`(\w+)`", types)
        if "–" in types:
            first, last = (int(n) for n in names)
            names = [str(n) for n in range(first, last + 1)]
        for name in names:
            rows[venue][name] = kind.strip().strip("`") if "`" in kind else "-"
    return rows


def test_the_execution_type_table_is_the_venues_mapping() -> None:
    rows = exec_type_rows()
    bybit = {name: kind for name, kind in rows["Bybit"].items() if kind != ExecKind.UNKNOWN}
    assert bybit == {name: kind.value for name, kind in EXEC_KINDS.items()}
    assert not set(rows["Bybit"]) - set(bybit) & set(EXEC_KINDS)
    okx = {name: kind for name, kind in rows["OKX"].items() if kind != "-"}
    assert okx == {name: kind.value for name, kind in SUB_TYPES.items()}
    assert {name for name, kind in rows["OKX"].items() if kind == "-"} == NOT_POSITION_FILLS
    listed = {kind for venue in rows.values() for kind in venue.values()} - {"-"}
    assert listed == {kind.value for kind in ExecKind}


def test_every_close_reason_of_a_kind_is_named() -> None:
    events = section("events")
    for reason in CLOSE_REASON_BY_KIND.values():
        assert f"`{reason}`" in events
