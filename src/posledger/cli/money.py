"""``posledger money``: what the money checks found (docs/design.md#money), per key and per
settle coin, from the store alone."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from posledger.audit.format import money, quantity, when
from posledger.cli.base import (
    DB_ARGUMENT,
    JSON_ARGUMENT,
    PROG,
    argument,
    open_ledger,
    print_json,
    progress_bar,
    subcommand,
    table,
)
from posledger.cli.books import short_key
from posledger.cli.corruption import reporting_corruption

if TYPE_CHECKING:
    from rich.console import Console

    from posledger.audit.money import MoneyRow
    from posledger.core.model import PositionKey

UNEXPLAINED = 1
"""Exit status when a money check left a difference nobody explains."""


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a date or ISO time (2025-11-12) is needed, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@subcommand(
    "money",
    help="the money checks' differences: ledger vs exchange vs unexplained, per settle coin",
    description="""\
List every difference a money check found between what the ledger realized from fills and
what the exchange booked for the same closes (MoneyReconciled events, written by
`posledger sync` or Ledger.check_money): the ledger's net, the exchange's net, the
difference, and whether it was adopted (a correction in the window explains it: fills the
ledger never saw) or is unexplained. Totals are per settle coin, never across coins.

Exit status: 0 when nothing is unexplained, 1 when a difference is unexplained, 2 when the
ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} money --db sqlite:///positions.db
  {PROG} money --db sqlite:///positions.db --since 2025-11-01 --json
""",
    arguments=(
        DB_ARGUMENT,
        argument("--since", type=_since, help="only checks written at or after this date/time"),
        JSON_ARGUMENT,
    ),
)
@reporting_corruption
def money_command(args: argparse.Namespace, console: Console) -> int:
    from posledger.audit import money_record, money_rows, unexplained_by_coin

    with open_ledger(args.db) as ledger, progress_bar("replaying the ledger") as progress:
        rows = money_rows(ledger, since=args.since, progress=progress)
    unexplained = {coin: total for coin, total in unexplained_by_coin(rows).items() if total}
    status = UNEXPLAINED if any(not row.adopted for row in rows) else 0
    if args.json:
        print_json({"checks": [money_record(r) for r in rows], "unexplained": unexplained})
        return status
    if not rows:
        console.print("No money check found a difference: the books agree with the exchange's.")
        return 0
    made = table("time", "key", "window", "ledger", "exchange", "difference", "coin", "why")
    for row in rows:
        made.add_row(
            when(row.time),
            short_key(row.key),
            f"{when(row.window_start)} → {when(row.window_end)}",
            quantity(row.ledger_net),
            quantity(row.exchange_net),
            f"{row.difference:+f}",
            row.settle_coin or "",
            "adopted: a correction explains it" if row.adopted else "unexplained",
        )
    console.print(made)
    console.print()
    console.print(_per_key(rows))
    console.print()
    listed = ", ".join(money(total, coin) for coin, total in sorted(unexplained.items(), key=str))
    console.print(
        f"Unexplained, per settle coin: {listed}." if listed else "Nothing is unexplained.",
        soft_wrap=True,
    )
    return status


def _per_key(rows: Sequence[MoneyRow]) -> object:
    """Each key's differences summed: adopted and unexplained, in its settle coin."""
    totals: dict[PositionKey, list[Decimal]] = {}
    for row in rows:
        adopted, unexplained = totals.setdefault(row.key, [Decimal(0), Decimal(0)])
        if row.adopted:
            totals[row.key][0] = adopted + row.difference
        else:
            totals[row.key][1] = unexplained + row.difference
    made = table("key", "checks", "adopted", "unexplained", "coin")
    for key, (adopted, unexplained) in sorted(totals.items(), key=lambda item: str(item[0])):
        made.add_row(
            str(key),
            str(sum(1 for row in rows if row.key == key)),
            f"{adopted:+f}",
            f"{unexplained:+f}",
            key.settle_coin or "",
        )
    return made
