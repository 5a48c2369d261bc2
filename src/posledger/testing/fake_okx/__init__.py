"""A fake OKX V5 REST server on 127.0.0.1, for tests that drive a real ``ccxt.okx``.

It checks signatures the way OKX does (``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``,
``OK-ACCESS-TIMESTAMP`` and ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of timestamp + method +
request path with its query + body), answers in OKX's shapes (``{"code": "0", "msg": "",
"data": [...]}``, numbers as strings, sizes in contracts) and keeps an in-memory account a test
scripts: instruments (with ``ctVal``), positions (net or long/short legs, cross or isolated),
open orders (paged by ``after`` ordId), fills (paged by ``after`` billId) and the money records
of its positions (positions-history, paged by ``after`` uTime; computed from its own average
entry, fees and funding). Faults can be armed per endpoint, so a test can prove every way a
read can fail is told apart from "no position"::

    import ccxt
    from posledger.testing.fake_okx import POSITIONS, FakeOkx, HttpError

    with FakeOkx() as fake:
        exchange = ccxt.okx(fake.ccxt_config())          # keys, passphrase, urls -> the fake
        fake.add_instrument("BTC-USDT-SWAP", ct_val="0.01")
        fake.set_position("BTC-USDT-SWAP", "-3", "43000")  # net mode: short 3 contracts
        fake.inject(POSITIONS, HttpError(502))           # the next position read gets a 502

It also answers what ccxt's ``load_markets`` reads: public instruments of every type and, with
keys set, the currency li

The package's modules: ``records`` (what the book holds, as OKX lists it), ``account`` (the book
and the calls a test scripts it with), ``server`` (signatures, routes, envelopes, paging) and
``faults`` (OKX-shaped broken answers).
"""

from posledger.testing.fake_http import (
    DropConnection,
    Fault,
    HttpError,
    NotJson,
    Slow,
    TruncatedJson,
)
from posledger.testing.fake_okx.account import OkxAccount
from posledger.testing.fake_okx.faults import ErrorCode, IgnoredAfter, NoCode, NoData, RowField
from posledger.testing.fake_okx.records import (
    INST_TYPES,
    OPEN_STATES,
    FakeFill,
    FakeInstrument,
    FakeOrder,
    FakePosition,
    FakePositionHistory,
)
from posledger.testing.fake_okx.server import (
    CURRENCIES,
    FILLS,
    FILLS_SPAN,
    HISTORY_SPAN,
    INSTRUMENTS,
    OPEN_ORDERS,
    POSITIONS,
    POSITIONS_HISTORY,
    PUBLIC_ENDPOINTS,
    SERVER_TIME,
    FakeOkx,
)

__all__ = [
    "CURRENCIES",
    "FILLS",
    "FILLS_SPAN",
    "HISTORY_SPAN",
    "INSTRUMENTS",
    "INST_TYPES",
    "OPEN_ORDERS",
    "OPEN_STATES",
    "POSITIONS",
    "POSITIONS_HISTORY",
    "PUBLIC_ENDPOINTS",
    "SERVER_TIME",
    "DropConnection",
    "ErrorCode",
    "FakeFill",
    "FakeInstrument",
    "FakeOkx",
    "FakeOrder",
    "FakePosition",
    "FakePositionHistory",
    "Fault",
    "HttpError",
    "IgnoredAfter",
    "NoCode",
    "NoData",
    "NotJson",
    "OkxAccount",
    "RowField",
    "Slow",
    "TruncatedJson",
]
