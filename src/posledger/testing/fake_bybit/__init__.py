"""A fake Bybit V5 REST server on 127.0.0.1, for tests that drive a real pybit session.

It checks HMAC signatures the way Bybit does, answers in Bybit's shapes (numbers as strings,
``retCode``/``retMsg``/``result``/``retExtInfo``/``time``, ``nextPageCursor`` paging), and keeps
an in-memory exchange that a test scripts: positions (one-way and hedge legs), open orders,
order history, executions, and the closed-pnl records its closes book (computed from its own
average entry, fees and funding). Faults can be armed per endpoint, so a test can prove that
every way a read can fail is told apart from "no position"::

    from pybit.unified_trading import HTTP
    from posledger.testing.fake_bybit import POSITIONS, FakeBybit, HttpError

    with FakeBybit() as fake:
        session = HTTP(api_key=fake.api_key, api_secret=fake.api_secret, testnet=False)
        session.endpoint = fake.url                     # or: session = fake.session()
        fake.set_position("AGIUSDT", "Sell", "4160", "0.25")
        fake.inject(POSITIONS, HttpError(502))          # the next position read gets a 502

ccxt works against it too (``ccxt.bybit`` and ``ccxt.async_support.bybit``): it also answers
what ``load_markets`` reads, instruments-info (every category and status, paged; every symbol
the book names is listed, with its settle coin) and the coin list::

    exchange = ccxt.bybit(fake.ccxt_config())           # keys, and urls["api"] -> the fake

The package's modules: ``records`` (what the book holds, as Bybit lists it), ``account`` (the
book and the rules a test scripts it by), ``params`` (how a request's parameters are read),
``server`` (signatures, routes, envelopes) and ``faults`` (Bybit-shaped broken answers).
"""

from posledger.testing.fake_bybit.account import BybitAccount, Listener
from posledger.testing.fake_bybit.faults import (
    NoList,
    NoRetCode,
    NotYetBooked,
    RetCode,
    RowField,
    StuckCursor,
)
from posledger.testing.fake_bybit.params import WEEK_MS
from posledger.testing.fake_bybit.records import (
    CATEGORIES,
    OPEN_STATUSES,
    FakeClosedPnl,
    FakeExecution,
    FakeInstrument,
    FakeOrder,
    FakePosition,
)
from posledger.testing.fake_bybit.server import (
    CLOSED_PNL,
    COIN_INFO,
    EXECUTIONS,
    INSTRUMENTS,
    OPEN_ORDERS,
    ORDER_HISTORY,
    POSITIONS,
    PUBLIC_ENDPOINTS,
    SERVER_TIME,
    FakeBybit,
)
from posledger.testing.fake_http import (
    DropConnection,
    Fault,
    HttpError,
    NotJson,
    Number,
    RecordedRequest,
    Reply,
    Row,
    Slow,
    TruncatedJson,
    json_reply,
    to_ms,
)

__all__ = [
    "CATEGORIES",
    "CLOSED_PNL",
    "COIN_INFO",
    "EXECUTIONS",
    "INSTRUMENTS",
    "OPEN_ORDERS",
    "OPEN_STATUSES",
    "ORDER_HISTORY",
    "POSITIONS",
    "PUBLIC_ENDPOINTS",
    "SERVER_TIME",
    "WEEK_MS",
    "BybitAccount",
    "DropConnection",
    "FakeBybit",
    "FakeClosedPnl",
    "FakeExecution",
    "FakeInstrument",
    "FakeOrder",
    "FakePosition",
    "Fault",
    "HttpError",
    "Listener",
    "NoList",
    "NoRetCode",
    "NotJson",
    "NotYetBooked",
    "Number",
    "RecordedRequest",
    "Reply",
    "RetCode",
    "Row",
    "RowField",
    "Slow",
    "StuckCursor",
    "TruncatedJson",
    "json_reply",
    "to_ms",
]
