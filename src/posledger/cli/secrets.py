"""Masking API secrets in every line the CLI prints or logs.

The mask is applied to the log record itself (a filter on each of posledger's loggers), so
every handler sees only masked text, a root handler of ``logging.basicConfig()`` included:
masking in one handler's formatter let the same record reach other handlers raw.

A secret is masked wherever it appears (Bybit's ``origin_string[…]`` glues the key between a
timestamp and the receive window), except a secret shorter than :data:`SHORT`, which no real
key is: that one is masked only where it stands as a whole token, so a key ``x`` does not turn
"exchange" into "e***change".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

MASK = "***"
SHORT = 8


class SecretMask(logging.Filter):
    """Rewrites a record's message, extras and traceback with ``secrets`` masked."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        tokens = sorted({s for s in secrets if s}, key=len, reverse=True)
        alternatives = [
            re.escape(s) if len(s) >= SHORT else f"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])"
            for s in tokens
        ]
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(MASK, text)

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
