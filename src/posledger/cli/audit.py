"""The audit queries: ``positions``, ``history``, ``verify`` and ``export``.

They only read: the ledger must exist already (no file or table is ever created), and a
whole-store replay shows a progress bar on an interactive stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from posledger.audit import (
    Flag,
    HistoryRow,
    Problem,
    VerifyReport,
    history_record,
    history_rows,
    replay_all,
    state_record,
    verify,
)
from posledger.audit.books import ACCOUNT_ROW, account_totals, with_account_rows
from posledger.audit.format import holding, money, per_settle_coin, quantity, signed_quantity, when
from posledger.audit.history import evidence_line
from posledger.cli.base import (
    DB_ARGUMENT,
    JSON_ARGUMENT,
    PROG,
    UsageError,
    argument,
    open_ledger,
    print_json,
    progress_bar,
    section,
    subcommand,
    symbol_suggestion,
    table,
)
from posledger.cli.books import book_argument, has_books
from posledger.cli.corruption import reporting_corruption
from posledger.core.model import PositionKey, Side, Status
from posledger.store.corruption import reading_stream

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from posledger.core.position import PositionState

VERIFY_FAILED = 1
"""Exit status of ``verify`` when it found a problem."""


# --- posledger positions ---------------------------------------------------------------------


@subcommand(
    "positions",
    help="what the ledger holds: open positions (--all: every key)",
    description="""\
Replay the ledger and list its positions: by default the open ones (what blocks new
trades), with --all every key it has seen, flat ones included. Sizes, prices and PnL
(realized, over all lifecycles) are exact decimals; lc is the lifecycle number, orders
the requests still in flight, updated the time of the last event (UTC).

When an account has books (strategies with positions of their own, docs/books.md), a
book column names each key's book ('' the default one) and a row "= account" after an
account's books sums all of them: the account's position, what the exchange shows.
--book lists one book's keys only, without account rows.

Exit status: 0, 1 when a stored stream is damaged (posledger verify lists every
problem), 2 when the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} positions --db sqlite:///positions.db
  {PROG} positions --db posledger-demo.db --all          a path to a SQLite ledger works too
  {PROG} positions --db 'postgresql://bot@db/trading?schema=bot1' --json | jq '.positions[]'
  {PROG} positions --db sqlite:///bots.db --book trend     one strategy's positions
""",
    arguments=(
        DB_ARGUMENT,
        argument("--all", action="store_true", help="list flat keys too"),
        book_argument("keys"),
        JSON_ARGUMENT,
    ),
)
@reporting_corruption
def positions(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        where = ledger.settings.description
        with progress_bar("replaying the ledger") as progress:
            states = list(replay_all(ledger, progress=progress).values())
    if args.book is not None:
        states = [s for s in states if s.key.book == args.book]
        where = f"book {args.book!r} of {where}"
    shown = states if args.all else [s for s in states if s.status is Status.OPEN]
    accounts = {} if args.book is not None else account_totals(states)
    accounts = {k: v for k, v in accounts.items() if any(s.key.account_key == k for s in shown)}
    if args.json:
        document: dict[str, object] = {
            "ledger": where,
            "keys": len(states),
            "positions": [state_record(s) for s in shown],
        }
        if accounts:
            document["accounts"] = [state_record(s) for s in accounts.values()]
        print_json(document)
        return 0
    open_count = sum(1 for s in states if s.status is Status.OPEN)
    if shown:
        console.print(_positions_table(shown, accounts))
        console.print()
    hidden = "" if args.all or open_count == len(states) else " (--all lists the others)"
    console.print(f"{open_count} open of {len(states)} keys in {where}{hidden}.", soft_wrap=True)
    if shown:
        totals = per_settle_coin(shown)
        listed = ", ".join(money(total, coin) for coin, total in sorted(totals.items(), key=str))
        console.print(f"Realized PnL of these keys, per settle coin: {listed}.", soft_wrap=True)
    return 0


def _positions_table(
    states: Sequence[PositionState], totals: dict[PositionKey, PositionState]
) -> object:
    """One row per key, and each account's total after its books; the venue, category, book
    and orders columns only where they say something (the table must fit 120 columns when
    piped)."""
    from rich.text import Text

    varying = [
        name for name in ("venue", "category") if len({getattr(s.key, name) for s in states}) > 1
    ]
    orders = any(s.pending_orders for s in states)
    books = has_books(states)
    columns = (
        *varying,
        "account",
        "symbol",
        "idx",
        *(("book",) if books else ()),
        *("status", "side", "size", "avg entry"),
    )
    made = table(
        *columns,
        "PnL",
        "fees",
        "coin",
        "lc",
        *(("orders",) if orders else ()),
        "updated",
        wrap=("account", "avg entry", "PnL", "fees", "updated"),
    )
    for book, state in with_account_rows(states, totals):
        key = state.key
        made.add_row(
            *(getattr(key, name) for name in varying),
            key.account,
            Text(key.symbol, style="bold"),
            str(key.idx),
            *((Text(book, style="bold" if book == ACCOUNT_ROW else ""),) if books else ()),
            f"{state.status.value} held" if state.held else state.status.value,
            _side_text(state.side),
            quantity(state.size),
            quantity(state.avg_entry_price),
            quantity(state.realized_pnl),
            quantity(state.fees),
            key.settle_coin or "",
            str(state.lifecycle),
            *((str(len(state.pending_orders) or ""),) if orders else ()),
            when(state.updated_at),
        )
    return made


def _money_checked(state: PositionState) -> str:
    """What money reconciliation brought in, when it did (docs/design.md#money)."""
    coin = state.key.settle_coin
    parts = [
        f"{what} {money(amount, coin)}"
        for what, amount in (("adopted", state.adopted_pnl), ("unexplained", state.unexplained_pnl))
        if amount
    ]
    return f"; from exchange records: {', '.join(parts)}" if parts else ""


def _side_text(side: Side | str | None) -> Text:
    from rich.text import Text

    if not side:
        return Text("")
    long = Side(side) is Side.BUY
    return Text("long" if long else "short", style="green" if long else "red")


# --- posledger history -----------------------------------------------------------------------


@subcommand(
    "history",
    help="one key's events, explained: sizes before -> after, fills, corrections, evidence",
    description="""\
Show every event of one key, oldest first: when, what, the lifecycle, the size before
and after (+ long, - short), the execution (side, qty, price, exec id), the reason
(correction kind, close reason, order status, execution kind, or suspect for an
unconfirmed snapshot) and the exchange snapshot that proved a correction.

SYMBOL is matched exactly, then ignoring case. When it names several keys (hedge legs,
accounts, categories, books) pick one with --idx, --account, --venue, --category or
--book (a strategy's own position inside the account, docs/books.md).

Exit status: 0, 1 when a stored stream is damaged (posledger verify lists every
problem), 2 when the ledger cannot be opened.""",
    epilog=f"""\
examples:
  {PROG} history --db posledger-demo.db AGIUSDT
  {PROG} history --db sqlite:///positions.db XRPUSDT --idx 2          the hedge short leg
  {PROG} history --db sqlite:///positions.db BTCUSDT --account alt --json
  {PROG} history --db sqlite:///bots.db BTCUSDT --book trend          one strategy's book
""",
    arguments=(
        DB_ARGUMENT,
        argument("symbol", metavar="SYMBOL", help="the exchange's symbol, e.g. ETHUSDT"),
        argument(
            "--idx",
            type=int,
            choices=(0, 1, 2),
            help="positionIdx: 0 one-way, 1 hedge long leg, 2 hedge short leg",
        ),
        argument("--venue", help="only keys of this venue (e.g. bybit)"),
        argument("--account", help="only keys of this account"),
        argument("--category", help="only keys of this category (e.g. linear)"),
        book_argument("keys"),
        JSON_ARGUMENT,
    ),
)
@reporting_corruption
def history(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        key = _resolve_key(args, ledger.keys(), ledger.settings.description)
        with reading_stream(key.stream_id, key):
            rows = history_rows(ledger, key)
        state = ledger.position(key)
    if args.json:
        print_json({"key": str(key), "rows": [history_record(r) for r in rows]})
        return 0
    from rich.text import Text

    console.print(Text(str(key), style="bold"), soft_wrap=True)
    if state is not None and rows:
        console.print(
            f"now {holding(state)}, lifecycle {state.lifecycle}, realized PnL "
            f"{money(state.realized_pnl, key.settle_coin)}, fees "
            f"{money(state.fees, key.settle_coin)}{_money_checked(state)}\n{len(rows)} events "
            f"from {when(rows[0].time)} to {when(rows[-1].time)} UTC",
            soft_wrap=True,
        )
    console.print()
    console.print(_history_table(rows))
    return 0


def _resolve_key(args: argparse.Namespace, keys: Sequence[PositionKey], where: str) -> PositionKey:
    symbol: str = args.symbol
    named = [k for k in keys if k.symbol == symbol] or [
        k for k in keys if k.symbol.upper() == symbol.upper()
    ]
    if not named:
        hint = symbol_suggestion(symbol, keys)
        raise UsageError(f"no key for symbol {symbol!r} in {where}.{hint}")
    filters = {
        name: getattr(args, name)
        for name in ("idx", "venue", "account", "category", "book")
        if getattr(args, name) is not None
    }
    chosen = [k for k in named if all(getattr(k, n) == v for n, v in filters.items())]
    listed = ", ".join(str(k) for k in named)
    if not chosen:
        wanted = " ".join(
            f"--{n} {v!r}" if n == "book" else f"--{n} {v}" for n, v in filters.items()
        )
        raise UsageError(f"{symbol}: no key matches {wanted}; the ledger has {listed}")
    if len(chosen) > 1:
        raise UsageError(
            f"{symbol} names {len(chosen)} keys ({', '.join(str(k) for k in chosen)}); "
            "pick one with --idx, --account, --venue, --category or --book"
        )
    return chosen[0]


_ROW_STYLES = {"Reconciled": "bold magenta", "Closed": "dim"}


def _history_table(rows: Sequence[HistoryRow]) -> object:
    from rich.text import Text

    made = table(
        "v",
        "time",
        "event",
        "lc",
        "size",
        "order/fill",
        "exec id",
        "reason",
        "exchange evidence",
        wrap=("order/fill", "reason", "exchange evidence"),
    )
    for row in rows:
        style = _ROW_STYLES.get(row.event, "yellow" if row.reason == "suspect" else "")
        change = (
            f"{signed_quantity(row.signed_size_before)} -> {signed_quantity(row.signed_size_after)}"
            if row.size_change
            else signed_quantity(row.signed_size_after)
        )
        made.add_row(
            str(row.version),
            f"{row.time:%m-%d %H:%M:%S}",
            Text(row.event, style=style),
            str(row.lifecycle),
            Text(change, style="bold" if row.size_change else ""),
            _order_text(row),
            row.exec_id or "",
            Text(row.reason or "", style=style),
            _evidence(row),
        )
    return made


def _order_text(row: HistoryRow) -> Text:
    """``buy 4160 @ 0.04701`` for a fill or a request (green buy, red sell)."""
    from rich.text import Text

    if row.side is None or row.qty is None:
        return Text("")
    text = Text(f"{row.side} {quantity(row.qty)}", style="green" if row.side == "buy" else "red")
    if row.price is not None:
        text.append(f" @ {quantity(row.price)}")
    return text


def _evidence(row: HistoryRow) -> str:
    """The snapshot behind a correction or a suspect: ``-3160 at 19:25:49 (2×)``; the date
    only when it differs from the row's."""
    evidence = row.evidence
    if evidence is None:
        return ""
    shape = "%H:%M:%S" if evidence.taken_at.date() == row.time.date() else "%m-%d %H:%M:%S"
    return evidence_line(evidence, f"at {evidence.taken_at:{shape}}")


# --- posledger verify ------------------------------------------------------------------------


@subcommand(
    "verify",
    help="replay everything and check the ledger's invariants; exit 1 on any problem",
    description="""\
Replay the whole store and check its invariants, reporting every problem by key:

  sizes        each size equals the size changes its events record (fills, corrections)
  executions   every exec_id applied once, with its dedup marker (and no marker without it)
  lifecycles   streams start with KeyRegistered, versions are contiguous, every lifecycle
               end is followed by its Closed
  ledger       loading a key through its latest snapshot equals the replay
  read_model   the posledger_positions table, where it exists, equals the replay
  decode       every stored event can be read

Executions of a type posledger does not know (kind unknown) are listed too; they are
not problems (the exit status stays 0): check each once against the exchange.

Exit status: 0 clean, 1 problems found, 2 the ledger could not be opened.""",
    epilog=f"""\
examples:
  {PROG} verify --db posledger-demo.db
  {PROG} verify --db 'postgresql://auditor@db/trading?schema=bot1' --json > verify.json
  {PROG} verify --db sqlite:///positions.db || alert "ledger corrupted"
""",
    arguments=(DB_ARGUMENT, JSON_ARGUMENT),
)
def verify_command(args: argparse.Namespace, console: Console) -> int:
    with open_ledger(args.db) as ledger:
        where = ledger.settings.description
        with progress_bar("verifying the ledger") as progress:
            report = verify(ledger, progress=progress)
    status = 0 if report.ok else VERIFY_FAILED
    if args.json:
        print_json(_verify_document(where, report))
        return status
    from rich.text import Text

    colour = "bold green" if report.ok else "bold red"
    console.print(Text(f"{where}: {report.summary()}", style=colour), soft_wrap=True)
    if report.flags:
        console.print()
        section(console, "executions of an unknown type", _flags_table(report.flags))
    if report.ok:
        return status
    console.print()
    for key in report.keys_with_problems:
        problems = report.for_key(key)
        title = str(key) if key is not None else "(no key: a stream without KeyRegistered)"
        section(console, f"{title}: {len(problems)} problem(s)", _problems_table(problems))
    return status


def _flags_table(flags: Sequence[Flag]) -> object:
    made = table("key", "v", "exec_id", "venue type")
    for flag in flags:
        made.add_row(str(flag.key), str(flag.version), flag.exec_id, str(flag.venue_type))
    return made


def _problems_table(problems: Sequence[Problem]) -> object:
    made = table("v", "check", "detail")
    for problem in problems:
        version = "" if problem.version is None else str(problem.version)
        made.add_row(version, problem.check.value, problem.detail)
    return made


def _verify_document(where: str, report: VerifyReport) -> dict[str, object]:
    return {
        "ledger": where,
        "ok": report.ok,
        "summary": report.summary(),
        "keys_checked": report.keys_checked,
        "events_checked": report.events_checked,
        "executions_checked": report.executions_checked,
        "markers_checked": report.markers_checked,
        "snapshot_loads_checked": report.snapshot_loads_checked,
        "read_model_checked": report.read_model_checked,
        "problems": [
            {
                "key": None if p.key is None else str(p.key),
                "check": p.check.value,
                "version": p.version,
                "detail": p.detail,
            }
            for p in report.problems
        ],
        "unknown_executions": [
            {
                "key": str(f.key),
                "version": f.version,
                "exec_id": f.exec_id,
                "venue_type": f.venue_type,
            }
            for f in report.flags
        ],
    }
