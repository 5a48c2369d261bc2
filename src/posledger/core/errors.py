"""The errors posledger raises: failure is a value the caller must handle, never a default."""

from __future__ import annotations

import reprlib
from uuid import UUID

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 3
_SHORT.maxstring = _SHORT.maxother = 60
SHOWN_MAX = 120


def shown(value: object) -> str:
    """``repr(value)``, cut short: a refused value goes into an error's message, and a whole
    backfill's worth of fills there would bury the reason."""
    text = _SHORT.repr(value)
    return text if len(text) <= SHOWN_MAX else f"{text[: SHOWN_MAX - 3]}..."


class PosledgerError(Exception):
    """Base class of every error posledger raises on purpose."""


class InvalidInput(PosledgerError, ValueError):
    """A command or value was refused before anything was written."""


class ExchangeUnavailable(PosledgerError):
    """A read from the exchange failed or was incomplete; it says nothing about positions."""


class ExchangeRejected(ExchangeUnavailable):
    """The exchange answered, but with an error code (Bybit: a non-zero ``retCode``)."""

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ExchangeMalformed(ExchangeUnavailable):
    """The exchange answered, but not in the shape its API documents: a body that is not JSON,
    an envelope without its code or list, a row with a missing or malformed field, rows that
    cannot form a snapshot."""


class ExchangeTruncated(ExchangeUnavailable):
    """The exchange's answer stopped short: a JSON body cut off mid-value, or a listing whose
    pages never end (a cursor that came back). What was read is not the whole answer."""


class ExecutionConflict(PosledgerError):
    """The same ``exec_id`` arrived again with a different payload."""

    def __init__(self, exec_id: str, recorded: str, offered: str) -> None:
        super().__init__(
            f"execution {exec_id!r} was recorded as {recorded} but is now offered as {offered}"
        )
        self.exec_id = exec_id
        self.recorded = recorded
        self.offered = offered


class StorageUnavailable(PosledgerError):
    """The event store could not be reached within the configured timeout."""


class ConfigurationError(PosledgerError):
    """The store is reachable but not set up as the URL says (missing schema, database, role,
    failed authentication); retrying will not help. Not a :class:`StorageUnavailable`, which
    bots retry."""


class LedgerClosed(PosledgerError):
    """The ledger was closed: a task still using it (a fill task, a synchronizer) outlived it.
    Not a :class:`StorageUnavailable`: retrying cannot help."""


class ConcurrencyError(PosledgerError):
    """Optimistic-concurrency retries ran out: other writers kept changing the same position."""


class StoreCorrupted(PosledgerError):
    """A stored stream cannot be decoded or folded into a state: a row was deleted, forged or
    damaged behind the ledger's back. ``verify`` lists every such problem of a store.

    ``key`` is the stream's :class:`~posledger.PositionKey` when its registration could be read
    (typed ``object`` here: the model imports this module); ``version`` the damaged row's, when
    known."""

    def __init__(
        self,
        stream_id: UUID,
        detail: str,
        *,
        key: object | None = None,
        version: int | None = None,
    ) -> None:
        stream = f"stream {stream_id}" if key is None else f"stream of {key} ({stream_id})"
        at = "" if version is None else f" at v{version}"
        super().__init__(f"the stored {stream} is damaged{at}: {detail}")
        self.stream_id = stream_id
        self.key = key
        self.version = version
        self.detail = detail


class ExchangeAuthFailed(ExchangeRejected):
    """The exchange refused the credentials: an invalid or expired key, a bad signature, a key
    without the permission or not bound to this IP. Retrying cannot help: a loop stops."""
