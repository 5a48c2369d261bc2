"""Masking secrets in the record itself, and only where a secret stands as a whole token."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from posledger.cli.secrets import MASK, SecretMask, masking


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_short_keys_do_not_mangle_words() -> None:
    mask = SecretMask(["x", "y"])
    text = "sync round failed: exchange unavailable: Bybit said y is wrong (key=x&sign=y)"
    assert mask(text) == (
        f"sync round failed: exchange unavailable: Bybit said {MASK} is wrong "
        f"(key={MASK}&sign={MASK})"
    )


def test_real_keys_are_masked_wherever_they_appear() -> None:
    mask = SecretMask(["K-7f3a91", "secret-XYZ"])
    assert mask("origin_string[1700000000000K-7f3a915000category=linear]") == (
        f"origin_string[1700000000000{MASK}5000category=linear]"
    )
    assert mask("api_key=K-7f3a91, secret-XYZ.") == f"api_key={MASK}, {MASK}."


def test_every_handler_sees_the_masked_record(root_stream: io.StringIO) -> None:
    child = logging.getLogger("posledger.drivers.sync")
    with masking(SecretMask(["TOPSECRETKEY"])):
        child.warning("round failed: %s", "bad key TOPSECRETKEY", extra={"detail": "TOPSECRETKEY!"})
        try:
            raise ValueError("api_key=TOPSECRETKEY")
        except ValueError:
            child.exception("failed")
    child.warning("after: TOPSECRETKEY")
    text = root_stream.getvalue()
    assert text.count("TOPSECRETKEY") == 1 and "after: TOPSECRETKEY" in text
    assert f"round failed: bad key {MASK}" in text and f"api_key={MASK}" in text
