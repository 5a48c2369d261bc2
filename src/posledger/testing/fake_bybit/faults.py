"""Faults in Bybit's envelope: a failure answered as HTTP 200 (``retCode``), or a successful
answer missing or breaking what a client reads (``retCode``, ``list``, a row's field, the cursor).
The faults any API can suffer are in :mod:`posledger.testing.fake_http`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from posledger.testing.fake_bybit.params import cursor
from posledger.testing.fake_http import Fault, Reply, json_reply


@dataclass(frozen=True)
class RetCode(Fault):
    """HTTP 200 with a non-zero ``retCode`` (10006 rate limit, 10002 timestamp, 10016 ...).

    The rate-limit reset header is sent ``reset_after_ms`` ahead: pybit sleeps until then
    before retrying a 10006 (and two seconds when the header is missing)."""

    code: int = 10006
    message: str = "Too many visits!"
    reset_after_ms: int = 100

    def render(self, envelope: dict[str, Any]) -> Reply:
        reset = int(time.time() * 1000) + self.reset_after_ms
        headers = (("X-Bapi-Limit-Status", "0"), ("X-Bapi-Limit-Reset-Timestamp", str(reset)))
        failed = {**envelope, "retCode": self.code, "retMsg": self.message, "result": {}}
        return json_reply(failed, headers)


@dataclass(frozen=True)
class NoRetCode(Fault):
    """A JSON body without ``retCode``/``retMsg``: pybit returns it as if it had succeeded."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        return json_reply({k: v for k, v in envelope.items() if k not in ("retCode", "retMsg")})


@dataclass(frozen=True)
class NoList(Fault):
    """A successful envelope whose ``result`` lacks ``list``."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        result = {k: v for k, v in envelope["result"].items() if k != "list"}
        return json_reply({**envelope, "result": result})


@dataclass(frozen=True)
class NotYetBooked(Fault):
    """A successful, complete reply listing nothing (no cursor): the exchange has not booked
    the rows yet, as its records lag its fills."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        result = {**envelope["result"], "list": [], "nextPageCursor": ""}
        return json_reply({**envelope, "result": result})


@dataclass(frozen=True)
class RowField(Fault):
    """Every listed row gets ``name`` set to ``value`` (or removed, for ``remove=True``): a
    malformed number ("1,5", a JSON float), an unknown side, a missing field."""

    name: str
    value: Any = None
    remove: bool = False

    def render(self, envelope: dict[str, Any]) -> Reply:
        rows = []
        for row in envelope["result"].get("list", []):
            changed = {k: v for k, v in row.items() if k != self.name}
            if not self.remove:
                changed[self.name] = self.value
            rows.append(changed)
        return json_reply({**envelope, "result": {**envelope["result"], "list": rows}})


@dataclass(frozen=True)
class StuckCursor(Fault):
    """``nextPageCursor`` always points back at the first page: paging would never end."""

    def render(self, envelope: dict[str, Any]) -> Reply:
        result = {**envelope["result"], "nextPageCursor": cursor(0)}
        return json_reply({**envelope, "result": result})
