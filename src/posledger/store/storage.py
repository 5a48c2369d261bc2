"""Turn a ledger URL into eventsourcing persistence settings.

``memory://`` keeps events in process (tests, notebooks); ``sqlite:///path.db`` is the embedded
default; ``postgresql://user:pass@host:port/db?schema=name`` is for production. Passwords never
appear in ``describe()`` or in errors.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from posledger.core.errors import InvalidInput


@attrs.frozen
class StorageSettings:
    """Where events live: an eventsourcing environment plus a password-free description."""

    scheme: str
    env: dict[str, str] = attrs.field(repr=False)
    description: str = ""
    timeout_s: float = 5.0


def settings_for(
    url: str,
    *,
    lock_timeout_s: float = 5.0,
    create_tables: bool = True,
    create_schema: bool = False,
) -> StorageSettings:
    """Settings for ``url``. ``create_tables=False`` is for least-privilege roles: the tables
    must exist already (``posledger init-db --db URL``, run once by a role that may create
    them). ``create_schema=True`` also creates a missing PostgreSQL schema, which only
    ``init-db`` does: anything else finds a missing schema a :class:`ConfigurationError`."""
    if (
        isinstance(lock_timeout_s, bool)
        or not isinstance(lock_timeout_s, int | float)
        or not 0 < lock_timeout_s < math.inf
    ):
        raise InvalidInput(f"timeout must be a number of seconds > 0, got {lock_timeout_s!r}")
    settings = _settings_for(url, lock_timeout_s)
    settings.env["CREATE_TABLE"] = "y" if create_tables else "n"
    if create_schema and settings.scheme == "postgresql":
        settings.env["POSLEDGER_CREATE_SCHEMA"] = "y"
    return settings


def _settings_for(url: str, lock_timeout_s: float) -> StorageSettings:
    if not isinstance(url, str) or "://" not in url:
        raise InvalidInput(
            f"not a ledger URL: {url!r}; expected memory://, sqlite:///path.db "
            "or postgresql://user@host:port/db"
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return StorageSettings(
            "memory", {"PERSISTENCE_MODULE": "eventsourcing.popo"}, "memory://", lock_timeout_s
        )
    if scheme == "sqlite":
        return _sqlite(url, lock_timeout_s)
    if scheme in ("postgresql", "postgres"):
        return _postgres(url, lock_timeout_s)
    raise InvalidInput(
        f"unknown ledger URL scheme {parts.scheme!r}: use memory://, sqlite:/// or postgresql://"
    )


def _sqlite(url: str, lock_timeout_s: float) -> StorageSettings:
    path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
    if not path:
        raise InvalidInput(f"sqlite URL needs a path: sqlite:///positions.db, got {url!r}")
    if path != ":memory:":
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise InvalidInput(f"cannot create {path}: directory {parent} does not exist")
        path = str(Path(path).expanduser())
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": str(max(1, round(lock_timeout_s))),
    }
    return StorageSettings("sqlite", env, f"sqlite:///{path}", lock_timeout_s)


SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _schema_name(name: str) -> str:
    """eventsourcing names the schema's types without quoting it, so a name that would need
    quotes (a '-', a space) fails deep inside the driver: refuse it here, saying why."""
    if not SCHEMA_NAME.fullmatch(name):
        raise InvalidInput(
            f"PostgreSQL schema name {name!r}: use letters, digits and underscores (at most 63, "
            "not starting with a digit), e.g. schema=live_bots"
        )
    return name


def _postgres(url: str, lock_timeout_s: float) -> StorageSettings:
    if importlib.util.find_spec("psycopg") is None:
        raise InvalidInput("PostgreSQL needs psycopg 3: pip install -e '.[postgres]'")
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    if not dbname or not parts.hostname:
        raise InvalidInput("postgresql URL needs a host and a database: postgresql://user@host/db")
    query = parse_qs(parts.query, keep_blank_values=True)
    env = {
        "PERSISTENCE_MODULE": "posledger.store.postgres:BoundedPostgresFactory",
        "POSLEDGER_STORAGE_TIMEOUT": str(lock_timeout_s),
        "POSTGRES_DBNAME": unquote(dbname),
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or ""),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": str(max(1, round(lock_timeout_s))),
        "POSTGRES_LOCK_TIMEOUT": str(max(1, round(lock_timeout_s))),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(max(1, round(lock_timeout_s * 2))),
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = _schema_name(query["schema"][0])
    user = f"{unquote(parts.username)}@" if parts.username else ""
    schema = f"?schema={env['POSTGRES_SCHEMA']}" if "POSTGRES_SCHEMA" in env else ""
    description = f"postgresql://{user}{parts.hostname}:{env['POSTGRES_PORT']}/{dbname}{schema}"
    return StorageSettings("postgresql", env, description, lock_timeout_s)
