"""The errors posledger raises: failure is a value the caller must handle, never a default."""

from __future__ import annotations


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


class ConcurrencyError(PosledgerError):
    """Optimistic-concurrency retries ran out: other writers kept changing the same position."""
