"""BybitStream over real pybit, the fake private WebSocket and the fake REST server.

Fills pushed over the WebSocket land in the ledger; every way the stream can miss some (a reset
or closed connection, a lost message, a silent socket, a handler failure, a store that is down)
is detected as a gap and filled through REST, and nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from posledger import Ledger, PositionKey, Side
from posledger.drivers.bybit_stream import BybitStream, StreamHealth
from posledger.testing.fake_bybit import EXECUTIONS, FakeBybit
from posledger.testing.fake_bybit_ws import FakeBybitWebSocket, websocket_row
from posledger.venues.bybit import BybitVenue
from tests.conftest import T0
from tests.helpers import event_names

PYBIT = {"ping_interval": 5, "ping_timeout": 1}
AGI = PositionKey(venue="bybit", account="main", category="linear", symbol="AGIUSDT")


class RunningClock:
    """Exchange time that runs with the wall clock from a fixed origin."""

    def __init__(self) -> None:
        self.origin = T0 + timedelta(days=30)
        self.started = time.monotonic()

    def __call__(self) -> datetime:
        return self.origin + timedelta(seconds=time.monotonic() - self.started)


@pytest.fixture
def clock() -> RunningClock:
    return RunningClock()


@pytest.fixture
def fake(clock: RunningClock) -> Iterator[FakeBybit]:
    with FakeBybit(clock=clock) as server:
        yield server


@pytest.fixture
def fake_ws(fake: FakeBybit) -> Iterator[FakeBybitWebSocket]:
    with FakeBybitWebSocket(fake) as server:
        yield server


@pytest.fixture
def ledger(ledger_url: str, clock: RunningClock) -> Iterator[Ledger]:
    with Ledger.open(ledger_url, clock=clock) as opened:
        yield opened


def stream_for(
    ledger: Ledger,
    fake: FakeBybit,
    fake_ws: FakeBybitWebSocket,
    clock: RunningClock,
    pybit: dict[str, Any] | None = None,
    category: str = "linear",
    **options: Any,
) -> BybitStream:
    """A started stream whose first resync is done. pybit's ping timeout is short because its
    socket thread notices a close only when its wait for data times out."""
    venue = BybitVenue(
        fake.session(),
        account="main",
        category=category,
        settle_coin="USDT" if category == "linear" else None,
        clock=clock,
    )
    settings: dict[str, Any] = {"check_interval": timedelta(seconds=0.05), **options}
    stream = BybitStream(
        ledger,
        venue,
        lambda handler: fake_ws.websocket(handler, **{**PYBIT, **(pybit or {})}),
        clock=clock,
        **settings,
    )
    stream.start()
    assert stream.wait_for(lambda h: h.resyncs == 1 and h.gap is None)
    return stream


def settled(more: Callable[[StreamHealth], bool]) -> Callable[[StreamHealth], bool]:
    """The condition and no gap pending."""
    return lambda health: more(health) and health.gap is None


def execution_ids(ledger: Ledger, key: PositionKey) -> list[str]:
    return [e.exec_id for e in ledger.history(key) if hasattr(e, "exec_id")]


def open_short(ledger: Ledger, fake: FakeBybit, clock: RunningClock) -> str:
    """AGIUSDT short 4160 opened by an order the bot recorded; returns a reduce-only exit's id."""
    opening = fake.add_open_order("AGIUSDT", "Sell", "4160", "0.05")
    ledger.request_open(AGI, order_id=opening, side="sell", qty="4160", at=clock())
    fake.partial_fill(opening, "4160")
    exit_id = fake.add_open_order("AGIUSDT", "Buy", "4160", "0.04", reduce_only=True)
    ledger.request_exit(AGI, order_id=exit_id, qty="4160", side="buy", at=clock())
    return exit_id


def size(ledger: Ledger, key: PositionKey = AGI) -> Decimal:
    state = ledger.position(key)
    assert state is not None
    return state.size


def test_fills_pushed_over_the_websocket_land_in_the_ledger(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        reads = len(fake.requests(EXECUTIONS))
        exit_id = open_short(ledger, fake, clock)
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(lambda h: h.fills_streamed == 2)
        assert size(ledger) == Decimal(3160)
        assert event_names(ledger, AGI)[-1] == "PartiallyFilled"
        assert "Reconciled" not in event_names(ledger, AGI)
        health = stream.health()
        assert (health.logins, health.resyncs, health.gaps_detected) == (1, 1, 1)
        assert len(fake.requests(EXECUTIONS)) == reads  # no REST read was needed


def test_streamed_executions_land_in_the_book_of_their_order(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    """Two books trade AGIUSDT: each execution pushed goes to its order's book, a cancel to
    the cancelled order's book, and a trade made by hand on the exchange to the unassigned
    book (docs/books.md#routing)."""
    alpha, beta = AGI.in_book("alpha"), AGI.in_book("beta")
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        buy = fake.add_open_order("AGIUSDT", "Buy", "1000", "0.05")
        ledger.request_open(alpha, order_id=buy, side="buy", qty="1000", at=clock())
        sell = fake.add_open_order("AGIUSDT", "Sell", "400", "0.06")
        ledger.request_open(beta, order_id=sell, side="sell", qty="400", at=clock())
        fake.partial_fill(buy, "600")
        fake.partial_fill(sell, "300")
        fake.partial_fill(buy, "400")
        fake.cancel_order(sell)
        by_hand = fake.add_open_order("AGIUSDT", "Sell", "50", "0.055", order_type="Market")
        fake.partial_fill(by_hand, "50")
        assert stream.wait_for(lambda h: h.fills_streamed == 4 and h.orders_ended == 1)
    books = {state.key.book: state for state in ledger.books(AGI)}
    assert {book: state.signed_size for book, state in books.items()} == {
        "": Decimal(-50),
        "alpha": Decimal(1000),
        "beta": Decimal(-300),
    }
    assert books["beta"].pending_orders == ()
    assert event_names(ledger, beta)[-2:] == ["PartiallyFilled", "OrderEnded"]
    assert "Allocated" not in event_names(ledger, alpha) + event_names(ledger, beta)
    assert event_names(ledger, AGI)[-2:] == ["Allocated", "Filled"]


def test_an_inverse_account_streams_coin_pnl_with_the_harmonic_average(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    """The worked example of docs/design.md#inverse, pushed over the WebSocket on BTCUSD."""
    btc = PositionKey(venue="bybit", account="main", category="inverse", symbol="BTCUSD")
    with stream_for(ledger, fake, fake_ws, clock, category="inverse") as stream:
        for n, (side, price) in enumerate((("Buy", "20000"), ("Buy", "30000"), ("Sell", "25000"))):
            qty = "200" if side == "Sell" else "100"
            order = fake.add_open_order("BTCUSD", side, qty, price, category="inverse")
            ledger.request_open(btc, order_id=order, side=side.lower(), qty=qty, at=clock())
            fake.partial_fill(order, qty)
            assert stream.wait_for(lambda h, done=n + 1: h.fills_streamed == done)
            if n == 1:
                held = ledger.position(btc)
                assert held is not None and held.avg_entry_price == Decimal(24000)
    state = ledger.position(btc)
    assert state is not None and state.size == 0
    assert state.realized_pnl == Decimal("0.0003333333333333333333333333333")


def test_executions_of_one_message_are_recorded_in_seq_order(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    """One message carries two fills of one millisecond crossing zero, out of seq order: the
    long closes at 102 (seq n), then the short opens at 98 (seq n+1)."""
    eth = PositionKey(venue="bybit", account="main", category="linear", symbol="ETHUSDT")
    with stream_for(ledger, fake, fake_ws, clock, hedge_mode=False) as stream:
        fake.add_execution("ETHUSDT", "Buy", "1", "100", exec_id="opening")
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.drop(2, topic="execution")
        at = clock()
        closing = fake.add_execution("ETHUSDT", "Sell", "1", "102", exec_id="z-closing", at=at)
        flipping = fake.add_execution("ETHUSDT", "Sell", "1", "98", exec_id="a-flipping", at=at)
        fake_ws.push("execution", [websocket_row(flipping), websocket_row(closing)])
        assert stream.wait_for(lambda h: h.fills_streamed == 3)
    assert execution_ids(ledger, eth) == ["opening", "z-closing", "a-flipping"]
    position = ledger.position(eth)
    assert position is not None and position.last_closed is not None
    assert (position.side, position.avg_entry_price) == (Side.SELL, Decimal(98))
    assert position.last_closed.realized_pnl == Decimal(2)


def test_an_order_ended_without_fill_is_recorded(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock, hedge_mode=False) as stream:
        exit_id = open_short(ledger, fake, clock)
        fake.partial_fill(exit_id, "160")
        fake.cancel_order(exit_id)
        assert stream.wait_for(lambda h: h.orders_ended == 1)
        state = ledger.position(AGI)
        assert state is not None and state.pending_orders == ()
        assert event_names(ledger, AGI)[-2:] == ["PartiallyFilled", "OrderEnded"]
        assert size(ledger) == Decimal(4000)


def test_fills_during_an_outage_are_recovered_through_rest_and_counted_once(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        with fake_ws.outage():
            missed = fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(settled(lambda h: h.logins == 2 and h.resyncs == 2))
        assert size(ledger) == Decimal(3160)
        fake.partial_fill(exit_id, "160")
        assert stream.wait_for(lambda h: h.fills_streamed == 2)
        ids = execution_ids(ledger, AGI)
        assert len(ids) == len(set(ids)) == 3 and missed.exec_id in ids
        assert size(ledger) == Decimal(3000)
        assert stream.health().fills_recovered == 1


def test_a_connection_the_server_closes_is_a_gap_too(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        exit_id = open_short(ledger, fake, clock)
        fake_ws.disconnect(clean=True)
        assert stream.wait_for(settled(lambda h: h.logins == 2 and h.resyncs >= 2))
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(lambda h: h.fills_streamed + h.fills_recovered == 2)
        assert size(ledger) == Decimal(3160)


def test_a_lost_execution_message_is_found_by_the_next_position_seq(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.drop(1, topic="execution")
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(settled(lambda h: h.fills_recovered == 1))
        assert size(ledger) == Decimal(3160)
        assert stream.health().logins == 1
        ids = execution_ids(ledger, AGI)
        assert len(ids) == len(set(ids)) == 2


def test_a_hedge_execution_whose_order_was_not_seen_takes_its_leg_from_rest(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    long_leg = PositionKey(
        venue="bybit", account="main", category="linear", symbol="ETHUSDT", idx=1
    )
    fake.set_hedge_mode("ETHUSDT")
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        fake_ws.drop(2, topic="order")
        order_id = fake.add_open_order("ETHUSDT", "Buy", "2", "3000", idx=1)
        fake.partial_fill(order_id, "2")
        assert stream.wait_for(settled(lambda h: h.fills_recovered == 1))
        state = ledger.position(long_leg)
        assert state is not None and (state.side, state.size) == (Side.BUY, Decimal(2))
        assert stream.health().fills_streamed == 0


def test_a_silent_connection_is_replaced_and_its_gap_filled(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    pybit = {"ping_interval": 1, "ping_timeout": 0.5}
    with stream_for(ledger, fake, fake_ws, clock, pybit=pybit) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.silence()
        fake.partial_fill(exit_id, "1000")  # pushed to nobody: the only client is silent
        assert stream.wait_for(settled(lambda h: h.logins >= 2 and h.fills_recovered == 1), 30)
        assert size(ledger) == Decimal(3160)


def test_silence_past_the_heartbeat_rebuilds_the_socket(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    pybit = {"ping_interval": 0}  # no pings: pybit itself would never notice
    with stream_for(
        ledger, fake, fake_ws, clock, pybit=pybit, heartbeat=timedelta(seconds=1)
    ) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.silence()
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(settled(lambda h: h.restarts >= 1 and h.fills_recovered == 1), 30)
        assert size(ledger) == Decimal(3160)


def test_a_refused_login_gets_a_new_socket(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock, reconnect_after=timedelta(seconds=0.5)) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.refuse_auth(1)
        fake_ws.disconnect()  # pybit logs in again, is refused, and stays unsubscribed
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(settled(lambda h: h.restarts == 1 and h.subscribed), 30)
        assert stream.wait_for(settled(lambda h: h.fills_streamed + h.fills_recovered == 2))
        assert size(ledger) == Decimal(3160)


def test_a_message_that_cannot_be_handled_does_not_kill_the_socket(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock) as stream:
        row = {"category": "linear", "symbol": "AGIUSDT", "execType": "MovePosition"}
        fake_ws.push("execution", [row])
        assert stream.wait_for(settled(lambda h: h.callback_errors == 1 and h.resyncs == 2))
        exit_id = open_short(ledger, fake, clock)
        fake.partial_fill(exit_id, "1000")
        assert stream.wait_for(lambda h: h.fills_streamed == 2)
        health = stream.health()
        assert (health.logins, health.connected) == (1, True)
        assert size(ledger) == Decimal(3160)


def test_a_message_with_an_unknown_exec_type_keeps_its_other_rows(
    ledger: Ledger, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    with stream_for(ledger, fake, fake_ws, clock, hedge_mode=False) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        fake_ws.drop(2, topic="execution")  # the two executions come back as one message below
        novel = fake.add_execution("AGIUSDT", "Buy", "500", "0.04", exec_type="Novel")
        trade = fake.add_execution("AGIUSDT", "Buy", "1000", "0.04", order_id=exit_id)
        fake_ws.push("execution", [websocket_row(novel), websocket_row(trade)])
        assert stream.wait_for(settled(lambda h: h.fills_streamed == 3))
        health = stream.health()  # no gap: nothing resynced after the first resync
        assert (health.callback_errors, health.resyncs, health.unknown_executions) == (0, 1, 1)
        assert execution_ids(ledger, AGI)[-2:] == [novel.exec_id, trade.exec_id]
        assert size(ledger) == Decimal(2660)


def test_a_store_that_is_down_does_not_kill_the_socket(
    tmp_path: Path, fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{path}", clock=clock, timeout=0.5)
    with ledger, stream_for(ledger, fake, fake_ws, clock) as stream:
        exit_id = open_short(ledger, fake, clock)
        assert stream.wait_for(lambda h: h.fills_streamed == 1)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            fake.partial_fill(exit_id, "1000")
            assert stream.wait_for(lambda h: h.resync_failures >= 1)
            assert stream.health().gap is not None
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert stream.wait_for(settled(lambda h: h.fills_recovered == 1))
        health = stream.health()
        assert (health.logins, health.connected, health.callback_errors) == (1, True, 0)
        assert size(ledger) == Decimal(3160)


def test_closing_leaves_no_thread_behind(
    fake: FakeBybit, fake_ws: FakeBybitWebSocket, clock: RunningClock
) -> None:
    before = set(threading.enumerate())
    with Ledger.open("memory://", clock=clock) as ledger:
        stream = stream_for(ledger, fake, fake_ws, clock)
        fake_ws.disconnect()
        assert stream.wait_for(settled(lambda h: h.logins == 2 and h.resyncs == 2))
        stream.close()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert [t.name for t in left if "process_request_thread" not in t.name] == []
    assert not stream.health().connected


# the fake private WebSocket speaks Bybit's protocol


def login(fake: FakeBybit, *, secret: str | None = None, expires_in_ms: int = 1000) -> str:
    expires = int(time.time() * 1000) + expires_in_ms
    signature = hmac.new(
        (secret or fake.api_secret).encode(), f"GET/realtime{expires}".encode(), hashlib.sha256
    ).hexdigest()
    return json.dumps({"op": "auth", "req_id": "r1", "args": [fake.api_key, expires, signature]})


def exchange(connection: Any, request: dict[str, Any] | str) -> dict[str, Any]:
    connection.send(request if isinstance(request, str) else json.dumps(request))
    reply: dict[str, Any] = json.loads(connection.recv(timeout=10))
    return reply


def test_the_fake_checks_logins_like_bybit(fake: FakeBybit, fake_ws: FakeBybitWebSocket) -> None:
    cases = {
        "right": login(fake),
        "wrong secret": login(fake, secret="not-the-secret"),
        "expired": login(fake, expires_in_ms=-1000),
    }
    answers = {}
    for name, request in cases.items():
        with connect(fake_ws.url) as connection:
            answers[name] = exchange(connection, request)
    assert answers["right"]["success"] is True and answers["right"]["op"] == "auth"
    assert answers["wrong secret"]["success"] is False
    assert answers["expired"]["success"] is False
    assert answers["right"]["req_id"] == "r1" and answers["right"]["conn_id"]


def test_the_fake_answers_pings_and_pushes_only_what_was_subscribed(
    fake: FakeBybit, fake_ws: FakeBybitWebSocket
) -> None:
    with connect(fake_ws.url) as connection:
        refused = exchange(connection, {"op": "subscribe", "args": ["execution"]})
        assert refused["success"] is False  # not logged in yet
        exchange(connection, login(fake))
        pong = exchange(connection, {"op": "ping", "req_id": "p"})
        assert (pong["op"], pong["req_id"]) == ("pong", "p")
        assert exchange(connection, {"op": "subscribe", "args": ["execution.linear"]})["success"]
        order_id = fake.add_open_order("AGIUSDT", "Sell", "4160", "0.05")
        execution = fake.partial_fill(order_id, "1000")
        pushed = json.loads(connection.recv(timeout=10))
    assert pushed["topic"] == "execution.linear" and pushed["creationTime"] == execution.exec_ms
    (row,) = pushed["data"]
    assert (row["category"], row["execId"], row["execQty"]) == ("linear", execution.exec_id, "1000")
