"""Masking API secrets in every line the CLI prints or logs.

The mask is applied to the log record itself (a filter on each of posledger's loggers), so
every handler sees only masked text, a root handler of ``logging.basicConfig()`` included:
masking in one handler's formatter let the same record reach other handlers raw. What is
masked, and how, is :class:`posledger.ops.secrets.Secrets`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from posledger.ops.secrets import MASK as MASK
from posledger.ops.secrets import Secrets


class SecretMask(logging.Filter):
    """Rewrites a record's message, extras and traceback with ``secrets`` masked."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._mask = Secrets(secrets)

    def __call__(self, text: str) -> str:
        return self._mask(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in RECORD_FIELDS and isinstance(value, str):
                setattr(record, name, self(value))
        return True


RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
"""A LogRecord's own attributes; any other is an ``extra`` a caller passed."""


def posledger_loggers() -> list[logging.Logger]:
    """The ``posledger`` logger and every one below it created so far."""
    names = [n for n in logging.Logger.manager.loggerDict if n.startswith("posledger.")]
    return [logging.getLogger("posledger"), *map(logging.getLogger, names)]


@contextmanager
def masking(mask: SecretMask) -> Iterator[None]:
    """Install ``mask`` on posledger's loggers (a logger's filters see only its own records, so
    each gets it) for the duration."""
    loggers = posledger_loggers()
    for logger in loggers:
        logger.addFilter(mask)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(mask)
