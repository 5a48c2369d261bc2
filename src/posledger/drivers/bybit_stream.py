"""Bybit's private WebSocket streams (position, execution, order) feeding a ledger, with gaps
found and filled through REST.

A WebSocket loses messages while it is down, and pybit reconnects without telling anyone. So a
:class:`BybitStream` treats every sign of a hole as a *gap* and fills it by reading the
executions since the stream was last known complete through the REST venue, applying them
through the ledger (``exec_id`` dedup makes the overlap with what the stream did deliver
harmless). Gaps are:

- a reconnect: every login after the first (pybit re-authenticates on each new connection);
- ``is_connected()`` false at a check (if it stays false, or the socket stays unsubscribed
  after a refused login, past ``reconnect_after``, the socket is rebuilt);
- silence past ``heartbeat``: no message and no pong (the socket is rebuilt);
- a position message whose ``seq`` belongs to no execution seen, one check later (Bybit stamps
  a position with the cross sequence of the execution that moved it: a lost execution message);
- an execution whose hedge leg is unknown (its order was not seen yet);
- a failure while handling a message, a refused login or subscription, a ledger write that
  failed (the store was down).

Callbacks never raise into pybit (a raising callback kills its socket): every failure is
logged, counted and turned into a gap. The stream is known complete up to the previous check
that saw a sign of life and had no gap pending; a resync reads from there, less ``margin``.

Position messages are not reconciled: one pushed row is not a complete snapshot (it covers one
leg, arrives in any order with the other topics, and a flat leg may never be pushed), so the
complete reads stay with :class:`~posledger.sync.Synchronizer`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import attrs

from posledger.core.errors import ExchangeUnavailable, ExecutionConflict
from posledger.core.model import Fill, PositionKey, aware_utc
from posledger.drivers.pybit_socket import MessageHandler as MessageHandler
from posledger.drivers.pybit_socket import WebSocketFactory as WebSocketFactory
from posledger.drivers.pybit_socket import is_connected, pong_token, shut
from posledger.drivers.pybit_socket import pybit_websocket as pybit_websocket
from posledger.drivers.sync import RECOVERY_MARGIN, record_recovered, unknown_executions
from posledger.ledger import Ledger
from posledger.venues.bybit import (
    BybitVenue,
    fill_from_row,
    order_leg_from_row,
    parsed,
    position_from_row,
)
from posledger.venues.common import time_from_ms

log = logging.getLogger("posledger.bybit_stream")

TOPICS = ("position", "execution", "order")
"""The private topics subscribed, each for every category (rows carry their ``category``)."""

END_STATUSES = frozenset({"Cancelled", "PartiallyFilledCanceled", "Rejected", "Deactivated"})
"""Order statuses that end an order without (full) fill. ``Filled`` is not among them: the
executions complete the order, and ending it first would make a late fill of a reduce-only
exit look like a fill of an unknown order."""

SEQ_MEMORY = 1_000
"""Execution ``seq`` values remembered per symbol, to match position messages against."""


@attrs.frozen
class StreamHealth:
    """What a stream has seen and done, for dashboards and alerts."""

    connected: bool
    logins: int
    subscribed: bool
    last_message_at: datetime | None
    last_alive_at: datetime | None
    complete_until: datetime
    gap: str | None
    gaps_detected: int
    resyncs: int
    resync_failures: int
    fills_streamed: int
    fills_recovered: int
    orders_ended: int
    callback_errors: int
    conflicts: int
    restarts: int
    unknown_executions: int
    """Executions recorded with a type posledger does not know (kind ``unknown``, logged)."""


class BybitStream:
    """Feeds ``ledger`` from one Bybit account's private streams, for ``venue``'s category.

    ``connect`` builds the pybit WebSocket (see
    :func:`~posledger.drivers.pybit_socket.pybit_websocket`); ``venue`` reads the executions a
    gap may have lost. ``since`` is where the first resync starts (default: the start, less
    ``margin``). ``hedge_mode`` False puts every execution on leg 0; otherwise an
    execution takes the leg of its order, from the order stream, and one whose order was not
    seen is left to a resync (the venue looks its leg up). ``heartbeat`` must exceed the
    WebSocket's ping interval.
    """

    def __init__(
        self,
        ledger: Ledger,
        venue: BybitVenue,
        connect: WebSocketFactory,
        *,
        clock: Callable[[], datetime] | None = None,
        since: datetime | None = None,
        hedge_mode: bool | None = None,
        heartbeat: timedelta = timedelta(seconds=60),
        check_interval: timedelta = timedelta(seconds=1),
        reconnect_after: timedelta = timedelta(seconds=30),
        margin: timedelta = RECOVERY_MARGIN,
        lookback: timedelta = timedelta(days=7),
    ) -> None:
        self.ledger = ledger
        self.venue = venue
        self.hedge_mode = hedge_mode
        self.heartbeat = heartbeat
        self.check_interval = check_interval
        self.reconnect_after = reconnect_after
        self.margin = margin
        self.lookback = lookback
        self._connect = connect
        self._clock = clock or ledger.clock
        self._since = since
        self._state = threading.Condition()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._monitor: threading.Thread | None = None
        self._ws: Any = None
        self._counts: dict[str, int] = defaultdict(int)
        self._gap: str | None = None
        self._gap_generation = 0
        self._acks = 0
        self._logins = 0
        self._checks = 0
        self._previous_check: datetime | None = None
        self._complete_until = self._now()
        self._last_message_at: datetime | None = None
        self._last_alive_at: datetime | None = None
        self._alive_since_check = False
        self._pong: object = None
        self._disconnected_since: datetime | None = None
        self._unsubscribed_since: datetime | None = None
        self._legs: dict[str, int] = {}
        self._seqs: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=SEQ_MEMORY))
        self._suspects: dict[tuple[str, int], int] = {}

    # lifecycle

    def start(self) -> BybitStream:
        """Connect, subscribe, and check every ``check_interval`` in a thread until closed. The
        first check resyncs from ``since``."""
        if self._monitor is not None:
            return self
        now = self._now()
        with self._state:
            self._complete_until = self._since or now
            self._last_alive_at = now
            self._flag("the stream started")
        self._ws = self._open_socket()
        self._stopping.clear()
        self._monitor = threading.Thread(target=self._run, name="bybit-stream", daemon=True)
        self._monitor.start()
        return self

    def close(self) -> None:
        """Stop checking, close the socket and wait for their threads."""
        self._stopping.set()
        self._wake.set()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        with self._state:
            ws, self._ws = self._ws, None
        shut(ws)

    def __enter__(self) -> BybitStream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # health

    def health(self) -> StreamHealth:
        with self._state:
            return StreamHealth(
                connected=is_connected(self._ws),
                logins=self._logins,
                subscribed=self._acks >= len(TOPICS),
                last_message_at=self._last_message_at,
                last_alive_at=self._last_alive_at,
                complete_until=self._complete_until,
                gap=self._gap,
                gaps_detected=self._counts["gaps"],
                resyncs=self._counts["resyncs"],
                resync_failures=self._counts["resync_failures"],
                fills_streamed=self._counts["fills_streamed"],
                fills_recovered=self._counts["fills_recovered"],
                orders_ended=self._counts["orders_ended"],
                callback_errors=self._counts["callback_errors"],
                conflicts=self._counts["conflicts"],
                restarts=self._counts["restarts"],
                unknown_executions=self._counts["unknown_executions"],
            )

    def wait_for(self, predicate: Callable[[StreamHealth], bool], timeout: float = 10) -> bool:
        """Wait until ``predicate(health)`` holds; re-checked after every message and check."""
        with self._state:
            return self._state.wait_for(lambda: predicate(self.health()), timeout)

    # the checks

    def check(self, now: datetime | None = None) -> StreamHealth:
        """One round of gap detection, and a resync if a gap is pending and the socket is
        subscribed again. Runs every ``check_interval`` in the stream's thread."""
        when = aware_utc(now or self._clock(), "now")
        with self._state:
            ws = self._ws
        connected = is_connected(ws)
        pong = pong_token(ws)
        with self._state:
            self._checks += 1
            if pong is not None and pong != self._pong:
                self._alive_since_check = True
            self._pong = pong
            if self._alive_since_check:
                self._last_alive_at = max(self._last_alive_at or when, self._previous_check or when)
            restart = self._judge_liveness(when, connected)
            for (symbol, seq), seen_at in list(self._suspects.items()):
                if seen_at < self._checks - 1:
                    del self._suspects[(symbol, seq)]
                    self._flag(f"position seq {seq} of {symbol} has no execution")
            live = connected and self._acks >= len(TOPICS)
            resync = self._gap is not None and live
            if self._gap is None and not self._suspects and self._alive_since_check:
                self._complete_until = max(self._complete_until, self._previous_check or when)
            self._alive_since_check = False
            self._previous_check = when
            generation = self._gap_generation
            self._state.notify_all()
        if restart:
            self._restart(restart, when)
        elif resync:
            self._resync(when, generation)
        return self.health()

    def _judge_liveness(self, now: datetime, connected: bool) -> str | None:
        """Flags the gaps that liveness shows; returns why to rebuild the socket, if it must."""
        if not connected:
            if self._disconnected_since is None:
                self._disconnected_since = now
                self._flag("the WebSocket is not connected")
            elif now - self._disconnected_since > self.reconnect_after:
                return f"not connected since {self._disconnected_since.isoformat()}"
            return None
        self._disconnected_since = None
        if self._acks >= len(TOPICS):
            self._unsubscribed_since = None
        elif self._unsubscribed_since is None:
            self._unsubscribed_since = now
        elif now - self._unsubscribed_since > self.reconnect_after:
            return f"connected but not subscribed since {self._unsubscribed_since.isoformat()}"
        if self._last_alive_at is not None and now - self._last_alive_at > self.heartbeat:
            self._flag(f"silent since {self._last_alive_at.isoformat()}")
            return f"silent since {self._last_alive_at.isoformat()}"
        return None

    def _resync(self, now: datetime, generation: int) -> None:
        """Read the executions since the stream was last known complete and apply them."""
        with self._state:
            since = max(self._complete_until - self.margin, now - self.lookback)
            checks = self._checks
        try:
            fills = self.venue.fetch_executions(since, now)
            groups: dict[PositionKey, list[Fill]] = defaultdict(list)
            for fill in fills:
                if self._covers(str(fill.symbol)):
                    groups[self._key(str(fill.symbol), fill.idx or 0)].append(fill)
            ordered = sorted(groups.items(), key=lambda item: str(item[0]))
            recovered = record_recovered(self.ledger, ordered)
        except Exception as error:
            with self._state:
                self._counts["resync_failures"] += 1
                self._state.notify_all()
            log.warning(
                "bybit stream resync failed: %s",
                error,
                extra={"since": since.isoformat(), "error": type(error).__name__},
            )
            return
        with self._state:
            for fill in fills:
                self._remember_seq(fill)
            self._counts["resyncs"] += 1
            self._counts["fills_recovered"] += sum(recovered.counts.values())
            self._counts["conflicts"] += len(recovered.conflicts)
            self._counts["unknown_executions"] += len(recovered.unknown)
            for suspect, seen_at in list(self._suspects.items()):
                if seen_at < checks:
                    del self._suspects[suspect]
            if generation == self._gap_generation:
                self._gap = None
                self._complete_until = now
            self._state.notify_all()
        log.info(
            "bybit stream resynced",
            extra={
                "since": since.isoformat(),
                "until": now.isoformat(),
                "fills_read": len(fills),
                "fills_recovered": sum(recovered.counts.values()),
                "conflicts": len(recovered.conflicts),
            },
        )

    def _restart(self, reason: str, now: datetime) -> None:
        """Replace the socket pybit could not keep alive by a new one (a gap is pending)."""
        with self._state:
            ws, self._ws = self._ws, None
            self._counts["restarts"] += 1
            self._disconnected_since = self._unsubscribed_since = None
            self._last_alive_at = now
        log.warning("bybit stream rebuilds its WebSocket: %s", reason)
        shut(ws)
        try:
            fresh = self._open_socket()
        except Exception as error:
            log.error("bybit stream could not reconnect: %s: %s", type(error).__name__, error)
            return
        with self._state:
            self._ws = fresh
            self._state.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.check()
            except Exception:
                log.exception("bybit stream check failed")
            self._wake.wait(self.check_interval.total_seconds())
            self._wake.clear()

    def _open_socket(self) -> Any:
        with self._state:
            self._acks = 0
        ws = self._connect(self._on_message)
        for topic in TOPICS:
            if not is_connected(ws):  # pybit's subscribe would wait for it forever
                shut(ws)
                raise ExchangeUnavailable("the Bybit WebSocket closed before it subscribed")
            ws.subscribe(topic, self._on_message)
        return ws

    # messages (pybit's thread)

    def _on_message(self, message: Any) -> None:
        """Every message pybit receives. Never raises: an exception here would reach pybit,
        which closes its socket for good."""
        try:
            try:
                self._dispatch(message)
            except Exception as error:
                with self._state:
                    self._counts["callback_errors"] += 1
                    self._flag(f"a message could not be handled: {type(error).__name__}")
                log.error(
                    "bybit stream could not handle a message: %s: %s",
                    type(error).__name__,
                    error,
                    extra={"ws_message": repr(message)[:500]},
                )
            with self._state:
                self._state.notify_all()
        except Exception:  # even reporting failed (a broken log handler): the socket comes first
            self._counts["callback_errors"] += 1

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, Mapping):
            raise ExchangeUnavailable(f"not a JSON object: {message!r:.200}")
        now = self._now()
        with self._state:
            self._last_message_at = self._last_alive_at = now
            self._alive_since_check = True
        if "topic" not in message:
            self._on_reply(message)
            return
        topic = str(message["topic"]).split(".", 1)[0]
        rows = [row for row in message.get("data") or [] if self._wanted(row)]
        if topic == "execution":
            self._on_executions(rows)
        elif topic == "order":
            self._on_orders(rows, now)
        elif topic == "position":
            self._on_positions(rows)

    def _on_reply(self, message: Mapping[str, Any]) -> None:
        op, success = message.get("op"), message.get("success")
        with self._state:
            if op == "auth":  # each connection logs in first: what it subscribed starts anew
                self._acks = 0
            if op == "auth" and success is True:
                self._logins += 1
                if self._logins > 1:
                    self._flag(f"reconnected (login {self._logins})")
            elif op == "subscribe" and success is True:
                self._acks += 1
            elif op in ("auth", "subscribe"):
                self._flag(f"{op} refused: {message.get('ret_msg')}")
                log.error("bybit stream %s refused: %s", op, message.get("ret_msg"))

    def _on_executions(self, rows: list[Mapping[str, Any]]) -> None:
        """Each execution on its own, so a conflicting one holds back no other, in the order
        Bybit applied them (:meth:`Fill.exchange_order`: a message's rows may not be)."""
        fills = [parsed("execution", row, fill_from_row) for row in rows]
        for fill in sorted(fills, key=Fill.exchange_order):
            idx = self._leg(fill)
            if idx is None:
                with self._state:
                    self._flag(f"leg of execution {fill.exec_id} unknown")
                continue
            key = self._key(str(fill.symbol), idx)
            try:
                batch = self.ledger.record_account_fills(key, [attrs.evolve(fill, idx=idx)])
                result = batch.fills[0]
            except ExecutionConflict as conflict:
                with self._state:
                    self._counts["conflicts"] += 1
                log.error("bybit stream: %s: execution conflicts: %s", key, conflict)
                continue
            except Exception as error:
                with self._state:
                    self._flag(f"recording execution {fill.exec_id} failed")
                log.error(
                    "bybit stream could not record an execution: %s: %s",
                    type(error).__name__,
                    error,
                    extra={"key": str(key), "exec_id": fill.exec_id},
                )
                continue
            with self._state:
                self._counts["fills_streamed"] += not result.duplicate
                if not result.duplicate:
                    self._counts["unknown_executions"] += len(unknown_executions(key, [fill]))
                self._remember_seq(fill)

    def _on_orders(self, rows: list[Mapping[str, Any]], now: datetime) -> None:
        for row in rows:
            order_id, idx = parsed("order", row, order_leg_from_row)
            with self._state:
                self._legs.pop(order_id, None)
                self._legs[order_id] = idx
                while len(self._legs) > SEQ_MEMORY:
                    del self._legs[next(iter(self._legs))]
            status = row.get("orderStatus")
            if status not in END_STATUSES:
                continue
            key = self._key(str(row["symbol"]), idx)
            at = parsed("order", row, lambda r: time_from_ms(r.get("updatedTime"))) or now
            try:
                self.ledger.record_order_end(key, order_id=order_id, status=str(status), at=at)
            except Exception as error:
                with self._state:
                    self._flag(f"recording the end of order {order_id} failed")
                log.error(
                    "bybit stream could not record an order end: %s: %s",
                    type(error).__name__,
                    error,
                    extra={"key": str(key), "order_id": order_id, "status": status},
                )
                continue
            with self._state:
                self._counts["orders_ended"] += 1

    def _on_positions(self, rows: list[Mapping[str, Any]]) -> None:
        """A position's ``seq`` is that of the execution that last moved it: one never seen is
        suspect, and a gap if it is still unseen one check later (messages of different topics
        may arrive in any order)."""
        for row in rows:
            position = parsed("position", row, position_from_row)
            seq = position.seq
            with self._state:
                if seq is not None and seq > 0 and seq not in self._seqs[position.symbol]:
                    self._suspects.setdefault((position.symbol, seq), self._checks)

    # helpers

    def _flag(self, reason: str) -> None:
        """Record a gap (the caller holds the state lock); the next check resyncs."""
        if self._gap is None:
            self._gap = reason
        self._gap_generation += 1
        self._counts["gaps"] += 1
        log.warning("bybit stream gap: %s", reason, extra={"gap": reason})
        self._wake.set()

    def _leg(self, fill: Fill) -> int | None:
        if self.hedge_mode is False:
            return 0
        with self._state:
            return self._legs.get(fill.order_id)

    def _remember_seq(self, fill: Fill) -> None:
        if fill.seq is not None and fill.symbol is not None:
            self._seqs[fill.symbol].append(fill.seq)
            for suspect in [s for s in self._suspects if s == (fill.symbol, fill.seq)]:
                del self._suspects[suspect]

    def _wanted(self, row: Any) -> bool:
        if not isinstance(row, Mapping):
            raise ExchangeUnavailable(f"a pushed row is not an object: {row!r:.200}")
        return row.get("category") == self.venue.category and self._covers(str(row.get("symbol")))

    def _covers(self, symbol: str) -> bool:
        return self.venue.symbols is None or symbol in self.venue.symbols

    def _key(self, symbol: str, idx: int) -> PositionKey:
        return PositionKey(
            venue=self.venue.venue,
            account=self.venue.account,
            category=self.venue.category,
            symbol=symbol,
            idx=idx,
        )

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "clock")
