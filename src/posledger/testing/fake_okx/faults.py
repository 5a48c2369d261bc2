"""Faults in OKX's envelope: an error ``code``, a body without ``code`` or ``data``, a broken
row field, and paging that ignores ``after``. The faults any API can suffer are in
:mod:`posledger.testing.fake_http`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from posledger.testing.fake_http import Fault, Reply, json_reply


@dataclass(frozen=True)
class ErrorCode(Fault):
    """An OKX error: ``code`` (50011 rate limit, 50013 system busy, 50001 unavailable ...) with
    HTTP ``status`` (429 for rate limits, else 200)."""

    code: str = "50011"
    message: str = "Too Many Requests"
    status: int = 200

    def render(self, envelope: dict[str, Any]) -> Reply:
        body = json_reply({"code": self.code, "msg": self.message, "data": []}).body
        return Reply(status=self.status, body=body)


@dataclass(frozen=True)
class NoCode(Fault):
    """A JSON body without ``code``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k != "code"})


@dataclass(frozen=True)
class NoData(Fault):
    """``code`` "0" without ``data``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k != "data"})


@dataclass(frozen=True)
class RowField(Fault):
    """Every listed row gets ``name`` set to ``value`` (or removed, for ``remove=True``)."""

    name: str
    value: Any = None
    remove: bool = False

    def render(self, envelope: dict[str, Any]) -> Reply:
        rows = []
        for row in envelope.get("data", []):
            changed = {k: v for k, v in row.items() if k != self.name}
            if not self.remove:
                changed[self.name] = self.value
            rows.append(changed)
        return json_reply({**envelope, "data": rows})


@dataclass(frozen=True)
class IgnoredAfter(Fault):
    """The server answers as if ``after`` had not been sent, so every page is the first one:
    paging would never end."""
