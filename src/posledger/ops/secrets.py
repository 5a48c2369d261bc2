"""Masking secrets in text: API keys and secrets wherever they appear, and the password of any
URL (``scheme://user:password@host``). The CLI masks its log records with it
(:mod:`posledger.cli.secrets`), the webhook notifier every alert it sends.

A secret is masked wherever it appears (Bybit's ``origin_string[…]`` glues the key between a
timestamp and the receive window), except a secret shorter than :data:`SHORT`, which no real
key is: that one is masked only where it stands as a whole token, so a key ``x`` does not turn
"exchange" into "e***change".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
SHORT = 8
URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):[^/\s@]+@")


class Secrets:
    """A mask for ``secrets``: call it on any text before it leaves the process."""

    def __init__(self, secrets: Iterable[str]) -> None:
        tokens = sorted({s for s in secrets if s}, key=len, reverse=True)
        alternatives = [
            re.escape(s) if len(s) >= SHORT else f"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])"
            for s in tokens
        ]
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, text: str) -> str:
        masked = URL_PASSWORD.sub(rf"\1:{MASK}@", text)
        return masked if self._pattern is None else self._pattern.sub(MASK, masked)
