"""A stored stream that cannot be decoded or folded, as :class:`~posledger.StoreCorrupted`.

A deleted row leaves a version gap ``evolve`` refuses; a damaged blob fails the mapper
(``MapperDeserialisationError``) or posledger's own JSON parsing; a forged field makes an event
``evolve`` cannot apply. All of them are the store's problem, not the caller's, so a read names
the stream instead of surfacing a traceback from deep inside decoding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from posledger.core.errors import PosledgerError, StoreCorrupted
from posledger.core.events import KeyRegistered
from posledger.core.model import PositionKey
from posledger.core.position import key_of

DAMAGE = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError)
"""What decoding or folding a damaged row raises (eventsourcing's ``MapperDeserialisationError``
and ``json.JSONDecodeError`` are ``ValueError`` s)."""


def corrupted(
    stream: uuid.UUID | str,
    error: Exception,
    key: PositionKey | None = None,
    version: int | None = None,
    *,
    what: str = "event",
) -> StoreCorrupted:
    """The :class:`StoreCorrupted` for ``error``, raised reading ``stream`` (as stored: a UUID or
    its text) at ``version`` of its ``what`` (event or snapshot); ``evolve``'s own prefix (the
    key) is not repeated."""
    stream_id = stream if isinstance(stream, uuid.UUID) else uuid.UUID(str(stream))
    detail = str(error) or type(error).__name__
    if key is not None:
        detail = detail.removeprefix(f"{key}: ")
    if what != "event":
        detail = f"its {what} cannot be read: {detail}"
    return StoreCorrupted(stream_id, detail, key=key, version=version)


@contextmanager
def reading_stream(
    stream: uuid.UUID, key: PositionKey | None = None, *, app: Any = None
) -> Iterator[None]:
    """Around reading one stream where a caller's mistake may also be raised: posledger's own
    errors (a refused input, an unreachable store) pass as they are. A ``key`` not given is
    read from the stream's registration in ``app``'s store, if that much of it can be read."""
    try:
        yield
    except PosledgerError:
        raise
    except DAMAGE as error:
        if key is None and app is not None:
            key = registered_key(app, stream)
        raise corrupted(stream, error, key) from error


def registered_key(app: Any, stream: uuid.UUID) -> PositionKey | None:
    """The key a stream registered in its first event, or None when that cannot be read."""
    try:
        first = next(iter(app.events.get(stream, lte=1)), None)
        return key_of(first) if isinstance(first, KeyRegistered) else None
    except DAMAGE:
        return None
