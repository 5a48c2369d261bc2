"""``posledger sync``: keep a ledger in step with a Bybit account through pybit.

The API key and secret come from ``BYBIT_API_KEY`` / ``BYBIT_API_SECRET`` and are never
printed: every message and log line this command writes has them masked. A failed read writes
nothing and exits 3 (``--once``) or is retried with backoff (the loop); refused credentials
exit 4 in both modes, since no retry fixes a key. ``Ctrl-C`` (or SIGTERM) finishes the round in
progress and exits 0; a second ``Ctrl-C`` interrupts at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from posledger.audit.format import counted, when
from posledger.cli.base import (
    DB_ARGUMENT,
    EXCHANGE_UNAVAILABLE,
    JSON_ARGUMENT,
    PROG,
    UsageError,
    argument,
    one_line,
    open_ledger,
    print_json,
    subcommand,
    table,
)
from posledger.cli.corruption import reporting_corruption
from posledger.cli.operations import OPERATIONS_ARGUMENTS, WEBHOOK_ENV, operations
from posledger.cli.secrets import RECORD_FIELDS, SecretMask, masking
from posledger.core.errors import ExchangeAuthFailed, ExchangeUnavailable
from posledger.core.reconcile import Correction, ReconcilePolicy

if TYPE_CHECKING:
    from rich.console import Console

    from posledger.drivers.sync import SyncReport

KEY_ENV, SECRET_ENV = "BYBIT_API_KEY", "BYBIT_API_SECRET"
ENDPOINT_ENV = "POSLEDGER_BYBIT_ENDPOINT"
"""Points pybit at another REST endpoint (a fake Bybit in tests, a proxy); unset: Bybit's."""
EXCHANGE_AUTH_FAILED = 4
"""Exit status when Bybit refuses the key pair (invalid, expired, without the permission, or
not bound to this IP): the loop stops too, since no retry fixes a key."""


@subcommand(
    "sync",
    help="keep the ledger in step with a Bybit account (missed fills first, then corrections)",
    description=f"""\
Read the account's positions and open orders from Bybit V5 (pybit), recover the
executions the ledger missed and record them as the fills they were, then reconcile:
only what the exchange's history cannot explain becomes a correction, and only after
two snapshots agree. A failed read is never "no position": it writes nothing.

The API key and secret are read from ${KEY_ENV} and ${SECRET_ENV} (never printed;
read-only keys suffice). The ledger must exist (posledger init-db --db URL creates it).

With --once: one round, its report, and exit 0 (3 when the exchange could not be read).
Without: a round every --interval seconds, backing off on failures, logging each round to
stderr, until Ctrl-C or SIGTERM (exit 0).

Either way, when Bybit refuses the key pair (invalid or expired key, wrong secret, a key
without read permission or not bound to this IP) it prints one line and exits 4: no retry
fixes a key. A damaged ledger exits 1 (posledger verify lists every problem).""",
    epilog=f"""\
examples:
  export {KEY_ENV}=... {SECRET_ENV}=...
  {PROG} sync --db sqlite:///positions.db --once
  {PROG} sync --db sqlite:///positions.db --testnet --interval 10
  {PROG} sync --db 'postgresql://bot@db/trading?schema=bot1' --account main --settle-coin USDC
  {PROG} sync --db sqlite:///positions.db --metrics-port 9464 --webhook-format slack

environment:
  {KEY_ENV}, {SECRET_ENV}   the API key pair (required)
  {ENDPOINT_ENV}   another REST endpoint for pybit (tests, proxies)
  {WEBHOOK_ENV}   where alerts are posted, if --webhook is not given
""",
    arguments=(
        DB_ARGUMENT,
        argument("--testnet", action="store_true", help="use Bybit's testnet"),
        argument("--once", action="store_true", help="run one round, print its report, exit"),
        argument("--account", default="main", help="the ledger's account name (default: main)"),
        argument("--category", default="linear", help="Bybit category (default: linear)"),
        argument(
            "--settle-coin",
            default=None,
            metavar="COIN",
            help="settle coin whose positions to read (default: USDT on linear, every coin on "
            "inverse)",
        ),
        argument(
            "--interval",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds between rounds (default: 30)",
        ),
        argument(
            "--hold",
            action="append",
            default=[],
            metavar="KIND",
            choices=[c.value for c in Correction],
            help="propose corrections of this kind for approval instead of applying them "
            "(repeatable; posledger corrections lists them)",
        ),
        argument(
            "--no-money",
            action="store_true",
            help="do not check closed lifecycles' PnL and fees against Bybit's closed-pnl "
            "records (docs/design.md#money; on by default, posledger money lists differences)",
        ),
        argument(
            "--hold-above",
            metavar="NOTIONAL",
            help="propose any correction that moves more than this notional for approval",
        ),
        *OPERATIONS_ARGUMENTS,
        JSON_ARGUMENT,
    ),
)
@reporting_corruption
def sync_command(args: argparse.Namespace, console: Console) -> int:
    from posledger.drivers.money import MoneyChecks
    from posledger.drivers.sync import Synchronizer

    if not args.interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {args.interval}")
    api_key, api_secret = _credentials()
    secrets = SecretMask((api_key, api_secret))
    venue = _venue(args, api_key, api_secret)
    policy = ReconcilePolicy(hold_for_approval=args.hold, hold_above_notional=args.hold_above)
    with (
        operations(args, (api_key, api_secret)) as observers,
        open_ledger(args.db, observers) as ledger,
    ):
        interval = timedelta(seconds=args.interval)
        synchronizer = Synchronizer(
            ledger,
            venue,
            policy=policy,
            interval=interval,
            observers=observers,
            money=None if args.no_money else MoneyChecks(),
        )
        try:
            if not args.once:
                where = ledger.settings.description
                return _run_forever(synchronizer, console, args, where, secrets)
            report = synchronizer.run_once()
        except ExchangeAuthFailed as error:
            refused = f"Bybit refused the key pair in ${KEY_ENV} / ${SECRET_ENV}"
            _error(secrets, f"{refused} (a retry cannot fix it), nothing written: {error}")
            return EXCHANGE_AUTH_FAILED
        except ExchangeUnavailable as error:
            _error(secrets, f"exchange unavailable, nothing written: {error}")
            return EXCHANGE_UNAVAILABLE
    if args.json:
        print_json(_report_document(report))
    else:
        _print_report(console, report)
    return 0


def _error(secrets: SecretMask, message: str) -> None:
    """One line on stderr, the key pair masked (Bybit's bad-signature answer quotes the key)."""
    print(secrets(one_line(f"{PROG} sync: error: {message}")), file=sys.stderr)


def _credentials() -> tuple[str, str]:
    missing = [name for name in (KEY_ENV, SECRET_ENV) if not os.environ.get(name)]
    if missing:
        raise UsageError(
            f"set {' and '.join(missing)} in the environment (the Bybit API key pair; "
            "read-only keys suffice)"
        )
    return os.environ[KEY_ENV], os.environ[SECRET_ENV]


def _venue(args: argparse.Namespace, api_key: str, api_secret: str) -> Any:
    try:
        from pybit.unified_trading import HTTP  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError("sync needs pybit: pip install -e '.[bybit]'") from None
    from posledger.venues.bybit import BybitVenue

    http = HTTP(testnet=args.testnet, api_key=api_key, api_secret=api_secret)
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        http.endpoint = endpoint.rstrip("/")
    return BybitVenue(
        http, account=args.account, category=args.category, settle_coin=settle_coin(args)
    )


def settle_coin(args: argparse.Namespace) -> str | None:
    """``--settle-coin``, else USDT on linear (Bybit needs one there) and every coin on inverse
    (where a coin would narrow the read to one: docs/bybit.md)."""
    if args.settle_coin is not None:
        return str(args.settle_coin)
    return None if args.category == "inverse" else "USDT"


# --- one round ---------------------------------------------------------------------------------


def _print_report(console: Console, report: SyncReport) -> None:
    snapshot = report.snapshot
    orders = snapshot.open_order_ids
    console.print(
        f"Synced {snapshot.venue}/{snapshot.account}/{snapshot.category} at "
        f"{when(snapshot.taken_at)} UTC: {len(snapshot.positions)} exchange positions, "
        f"{'unknown' if orders is None else len(orders)} open orders; "
        f"{counted(report.fills_recovered, 'missed fill')} recovered, "
        f"{counted(len(report.reconcile.corrections), 'correction')}, "
        f"{counted(len(report.reconcile.suspects), 'suspect')}, "
        f"{counted(len(report.conflicts), 'conflict')}.",
        soft_wrap=True,
    )
    for unknown in report.unknown_executions:
        console.print(
            f"Unknown execution type {unknown.venue_type!r}: {unknown.key} {unknown.exec_id} "
            f"({unknown.side.value} {unknown.qty}) recorded as moving size; the next snapshots "
            "confirm or correct it.",
            soft_wrap=True,
        )
    if report.money_failure:
        console.print(
            f"Money check not run (its read failed; next round tries again): "
            f"{report.money_failure}",
            soft_wrap=True,
        )
    for checked in report.money:
        if checked.check.agrees:
            verdict = "agrees with the exchange's records."
        elif checked.check.events:
            verdict = f"{checked.check.detail}."
        else:
            verdict = (
                f"{checked.check.detail}, seen {checked.seen}×: written once a fresh read "
                "confirms it."
            )
        console.print(
            f"Money of {checked.key} lifecycle {checked.lifecycle}: {verdict}", soft_wrap=True
        )
    if not report.outcomes:
        return
    made = table("symbol", "idx", "recovered", "outcome", "correction", "events", "detail")
    for outcome in report.outcomes:
        key = outcome.key
        made.add_row(
            key.symbol,
            str(key.idx),
            str(report.recovered.get(key, "")),
            outcome.outcome.value,
            outcome.correction.value if outcome.correction else "",
            ", ".join(outcome.events),
            outcome.detail,
        )
    console.print()
    console.print(made)


def _report_document(report: SyncReport) -> dict[str, object]:
    snapshot = report.snapshot
    return {
        "taken_at": snapshot.taken_at,
        "exchange_positions": [
            {"symbol": p.symbol, "idx": p.idx, "side": p.side, "size": p.size}
            for p in snapshot.positions
        ],
        "open_orders": None if snapshot.open_order_ids is None else len(snapshot.open_order_ids),
        "fills_recovered": report.fills_recovered,
        "recovered": {str(k): n for k, n in report.recovered.items()},
        "unknown_executions": [
            {"key": str(u.key), "exec_id": u.exec_id, "venue_type": u.venue_type}
            for u in report.unknown_executions
        ],
        "money_failure": report.money_failure,
        "money": [
            {
                "key": str(m.key),
                "lifecycle": m.lifecycle,
                "agrees": m.check.agrees,
                "written": bool(m.check.events),
                "seen": m.seen,
                "difference": m.check.difference,
                "detail": m.check.detail,
            }
            for m in report.money
        ],
        "outcomes": [
            {
                "key": str(o.key),
                "outcome": o.outcome.value,
                "correction": o.correction.value if o.correction else None,
                "events": list(o.events),
                "detail": o.detail,
            }
            for o in report.outcomes
        ],
    }


# --- the loop ----------------------------------------------------------------------------------


def _run_forever(
    synchronizer: Any,
    console: Console,
    args: argparse.Namespace,
    where: str,
    secrets: SecretMask,
) -> int:
    console.print(
        f"Syncing bybit/{args.account}/{args.category} ({settle_coin(args) or 'every coin'}) "
        f"into {where} every "
        f"{args.interval:g}s; Ctrl-C stops after the round in progress.",
        soft_wrap=True,
    )
    console.file.flush()
    stop = threading.Event()
    with _logging_to_stderr(secrets), _stopping_on_signals(stop):
        synchronizer.run_forever(stop)
    console.print("Stopped.")
    return 0


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (the loop ends after its round); a second SIGINT raises."""

    def request_stop(number: int, frame: FrameType | None) -> None:
        if stop.is_set() and number == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {n: signal.signal(n, request_stop) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _ExtrasFormatter(logging.Formatter):
    """``time level logger: message key=value …``: the record's structured extras appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in RECORD_FIELDS}
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


@contextmanager
def _logging_to_stderr(secrets: SecretMask) -> Iterator[None]:
    """posledger's records to stderr, masked in the record itself: any other handler (a root
    one from ``logging.basicConfig()``) sees them masked too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ExtrasFormatter())
    logger = logging.getLogger("posledger")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with masking(secrets):
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
