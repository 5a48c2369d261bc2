"""The ``posledger`` command.

Each subcommand is one function decorated with :func:`~posledger.cli.base.subcommand`, which
declares its name, help, examples and arguments, in a module per command group: ``demo`` and
``init-db`` (:mod:`posledger.cli.demo`), the audit queries ``positions``, ``history``,
``verify`` and ``export`` (:mod:`posledger.cli.audit`), ``sync`` (:mod:`posledger.cli.sync`),
``corrections``, ``approve`` and ``reject`` (:mod:`posledger.cli.corrections`), ``money``
(:mod:`posledger.cli.money`) and ``serve`` (:mod:`posledger.cli.serve`). ``main`` builds the
parser from the registry and runs the chosen one with a rich ``Console``.

rich is an optional dependency (``pip install -e '.[cli]'``); it is imported only when a
subcommand runs, so a missing rich costs a one-line hint, not a traceback. Output degrades to
plain text when stdout is not a terminal (rich drops colours; tables keep their layout). User
mistakes (a bad URL or path, an unknown symbol, a bad option, a store not set up as its URL
says) and an unreachable store print one line and exit 2; an exchange that cannot be read
prints one line and exits 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

from posledger.cli import audit, corrections, demo, export, money, serve, sync
from posledger.cli.base import (
    EXCHANGE_UNAVAILABLE,
    PROG,
    SUBCOMMANDS,
    USAGE_ERROR,
    UsageError,
    make_console,
    one_line,
)
from posledger.core.errors import (
    ConfigurationError,
    ExchangeUnavailable,
    InvalidInput,
    StorageUnavailable,
)

__all__ = ["EXCHANGE_UNAVAILABLE", "build_parser", "main"]

INSTALL_HINT = "posledger: the command line needs rich: pip install -e '.[cli]'"

_COMMAND_MODULES = (demo, audit, export, sync, corrections, serve, money)
"""Imported for their ``@subcommand`` registrations."""
ORDER = (
    "demo",
    "init-db",
    "positions",
    "history",
    "verify",
    "export",
    "sync",
    "corrections",
    "approve",
    "reject",
    "money",
    "serve",
)
"""The order ``--help`` lists the commands in (any other after them)."""

MAIN_EPILOG = f"""\
examples:
  {PROG} demo                                     replay both incidents into ./posledger-demo.db
  {PROG} demo --db /tmp/demo.db                   the same, into another file
  {PROG} positions --db posledger-demo.db --all   every key of the demo ledger
  {PROG} history --db posledger-demo.db AGIUSDT   why AGIUSDT changed, event by event
  {PROG} verify --db sqlite:///positions.db       check every invariant; exit 1 on a problem
  {PROG} COMMAND --help                           what one command does, with examples
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (with where to read more), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="posledger: an event-sourced position ledger for trading bots.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    rank = {name: n for n, name in enumerate(ORDER)}
    for command in sorted(SUBCOMMANDS.values(), key=lambda c: rank.get(c.name, len(ORDER))):
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for item in command.arguments:
            sub.add_argument(*item.flags, **item.options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    try:
        console = make_console()
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return USAGE_ERROR
    try:
        return SUBCOMMANDS[args.command].run(args, console)
    except (UsageError, InvalidInput, ConfigurationError, StorageUnavailable) as error:
        print(one_line(f"{PROG} {args.command}: error: {error}"), file=sys.stderr)
        return USAGE_ERROR
    except ExchangeUnavailable as error:
        message = f"{PROG} {args.command}: error: exchange unavailable, nothing written: {error}"
        print(one_line(message), file=sys.stderr)
        return EXCHANGE_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    try:
        return metadata.version("posledger")
    except metadata.PackageNotFoundError:
        return "unknown"
