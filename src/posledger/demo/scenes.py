"""The scenes of the two seed incidents, in order, and playing them into chapters.

- seed 000 (2025-11-12): two positions close on Bybit by TP/SL fills the bot never receives; a
  failed read is not a snapshot; two complete snapshots turn them into ``phantom`` corrections.
  Then an open order that never fills becomes ``unfilled_open``.
- seed 002 (2025-10-13): three aged shorts with reduce-only limit exits; one partial exit fill is
  delivered (the ledger is right, reconciliation writes nothing), two are missed and become
  ``stale_quantity`` corrections after two snapshots; then the exits complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal

import attrs

from posledger.core.errors import InvalidInput
from posledger.core.model import ExchangePosition, Fill, PositionKey, Side, Snapshot
from posledger.demo.chapter import Chapter, Recorder
from posledger.ledger import Ledger

SEED_000 = "000"
SEED_002 = "002"

VENUE = "bybit"
CATEGORY = "linear"
CALCULUS = "live-calculus"
"""Account of seed 000's bot (live_calculus_trader.py)."""
AGED = "aged-exits"
"""Account of seed 002's bot (the aged position manager's)."""


def _key(account: str, symbol: str) -> PositionKey:
    return PositionKey(venue=VENUE, account=account, category=CATEGORY, symbol=symbol)


ETH = _key(CALCULUS, "ETHUSDT")
SOL = _key(CALCULUS, "SOLUSDT")
BTC = _key(CALCULUS, "BTCUSDT")
AGI = _key(AGED, "AGIUSDT")
SCA = _key(AGED, "SCAUSDT")
HNT = _key(AGED, "HNTUSDT")


def nov12(hour: int, minute: int, second: int = 0) -> datetime:
    """A time on 2025-11-12 (seed 000), UTC."""
    return datetime(2025, 11, 12, hour, minute, second, tzinfo=UTC)


def oct13(hour: int, minute: int, second: int = 0) -> datetime:
    """A time on 2025-10-13 (seed 002), UTC."""
    return datetime(2025, 10, 13, hour, minute, second, tzinfo=UTC)


AGI_OPENED = datetime(2025, 10, 12, 19, 58, 45, tzinfo=UTC)
"""AGIUSDT was opened the evening before (seed 002: created 2025-10-12 19:58:45)."""


def _snapshot(
    account: str,
    at: datetime,
    rows: Iterable[tuple[str, Side, str, str]] = (),
    open_orders: Iterable[str] = (),
) -> Snapshot:
    """A complete read: every listed (symbol, side, size, avg price) row, every working order."""
    return Snapshot(
        venue=VENUE,
        account=account,
        category=CATEGORY,
        taken_at=at,
        positions=[
            ExchangePosition(
                symbol=symbol, idx=0, side=side, size=Decimal(size), avg_price=Decimal(avg)
            )
            for symbol, side, size, avg in rows
        ],
        open_order_ids=frozenset(open_orders),
    )


def _fill(
    exec_id: str,
    order_id: str,
    side: Side,
    qty: str,
    price: str,
    at: datetime,
    *,
    fee: str,
    leaves: str = "0",
) -> Fill:
    return Fill(
        exec_id=exec_id,
        order_id=order_id,
        side=side,
        qty=Decimal(qty),
        price=Decimal(price),
        fee=Decimal(fee),
        exec_time=at,
        leaves_qty=Decimal(leaves),
    )


def _open_with_fill(
    rec: Recorder, key: PositionKey, side: Side, qty: str, price: str, at: datetime, fee: str
) -> None:
    """The bot records its order, then the execution Bybit reports for it."""
    name = key.symbol[:3].lower()
    rec.request_open(key, f"{name}-open", side, qty, price, at)
    rec.fill(key, _fill(f"{name}-x1", f"{name}-open", side, qty, price, at, fee=fee))


def _open_symbols(ledger: Ledger) -> str:
    return ", ".join(s.key.symbol for s in ledger.open_positions()) or "none"


# --- the scenes ---------------------------------------------------------------------------


@attrs.frozen
class Scene:
    seed: str
    title: str
    narrative: str
    act: Callable[[Recorder], None]


def scene(seed: str, title: str, narrative: str) -> Callable[[Callable[[Recorder], None]], Scene]:
    def wrap(act: Callable[[Recorder], None]) -> Scene:
        return Scene(seed, title, narrative, act)

    return wrap


@scene(
    SEED_000,
    "The bot opens ETHUSDT and SOLUSDT",
    "Each order is recorded before it is sent, then the fill Bybit reports; each position gets "
    "a reduce-only exit (ETHUSDT a take-profit, SOLUSDT a stop-loss).",
)
def open_eth_sol(rec: Recorder) -> None:
    _open_with_fill(rec, ETH, Side.BUY, "0.5", "3420.5", nov12(8, 0), fee="0.94")
    rec.request_exit(ETH, "eth-tp", "0.5", "3480", nov12(8, 0, 5))
    _open_with_fill(rec, SOL, Side.BUY, "12", "155.2", nov12(8, 5), fee="1.02")
    rec.request_exit(SOL, "sol-sl", "12", "151.0", nov12(8, 5, 5))


@scene(
    SEED_000,
    "TP/SL fill on Bybit unseen, then a read fails",
    "Both exits fill on Bybit but the bot never receives the executions. At 10:00 the position "
    "read fails: in the incident it returned None and the bot kept both positions forever. "
    "Here a failed read raises ExchangeUnavailable: it is not a snapshot and writes nothing.",
)
def read_fails(rec: Recorder) -> None:
    rec.offstage(nov12(9, 41, 12), "ETHUSDT take-profit eth-tp fills 0.5 @ 3480")
    rec.offstage(nov12(9, 52, 40), "SOLUSDT stop-loss sol-sl fills 12 @ 151.0")
    rec.failed_read(nov12(10, 0))
    rec.check(
        nov12(10, 0),
        "open_positions()",
        f"{_open_symbols(rec.ledger)}: phantoms, every new signal on them is refused",
    )


@scene(
    SEED_000,
    "First complete snapshot: both flat, only suspect",
    "A complete read shows no position. One snapshot could still be a glitch, so each "
    "disagreement is recorded as a suspect ExchangeSnapshot and nothing is closed yet.",
)
def first_flat_snapshot(rec: Recorder) -> None:
    rec.reconcile(_snapshot(CALCULUS, nov12(10, 1)))


@scene(
    SEED_000,
    "Second snapshot confirms: phantoms closed",
    "A second, later snapshot shows the same: Reconciled(kind=phantom) and Closed(reason=phantom) "
    "are saved together, the exits go with them, and the trades are unblocked.",
)
def second_flat_snapshot(rec: Recorder) -> None:
    rec.reconcile(_snapshot(CALCULUS, nov12(10, 2)))
    rec.check(nov12(10, 2), "open_positions()", _open_symbols(rec.ledger))


@scene(
    SEED_000,
    "A failed open: BTCUSDT's order never fills",
    "The bot sends a BTCUSDT limit order that Bybit never works (the incident's 'fails to "
    "open'). Within the 60 s grace nothing is judged; after it, the order is absent from the "
    "snapshot's open orders, and two snapshots end it as unfilled_open.",
)
def unfilled_open(rec: Recorder) -> None:
    rec.request_open(BTC, "btc-open", Side.BUY, "0.01", "104250", nov12(10, 5))
    for second in (30, 90, 150):
        at = nov12(10, 5 + second // 60, second % 60)
        rec.reconcile(_snapshot(CALCULUS, at))


@scene(
    SEED_002,
    "Three aged shorts, each with a reduce-only limit exit",
    "AGIUSDT short 4160, SCAUSDT short 2136.9 and HNTUSDT short 60 are opened with their fills; "
    "at 18:20 the aged-position manager places a reduce-only limit exit for each full size.",
)
def open_aged_shorts(rec: Recorder) -> None:
    _open_with_fill(rec, AGI, Side.SELL, "4160", "0.04701", AGI_OPENED, fee="0.11")
    _open_with_fill(rec, SCA, Side.SELL, "2136.9", "0.09412", oct13(0, 50, 7), fee="0.11")
    _open_with_fill(rec, HNT, Side.SELL, "60", "2.512", oct13(13, 8, 35), fee="0.08")
    rec.request_exit(AGI, "agi-exit", "4160", "0.04784", oct13(18, 20))
    rec.request_exit(SCA, "sca-exit", "2136.9", "0.09476", oct13(18, 20))
    rec.request_exit(HNT, "hnt-exit", "60", "2.561", oct13(18, 20))


@scene(
    SEED_002,
    "Partial exit fills: one delivered, two missed",
    "The exits fill partly. SCAUSDT's 100.9 reaches the bot and is recorded as PartiallyFilled: "
    "2136.9 - 100.9 = 2036.0, exactly. AGIUSDT's 1000 and HNTUSDT's 0.12 never arrive.",
)
def partial_exit_fills(rec: Recorder) -> None:
    rec.fill(
        SCA,
        _fill(
            "sca-x2",
            "sca-exit",
            Side.BUY,
            "100.9",
            "0.09476",
            oct13(18, 47, 3),
            fee="0.004",
            leaves="2036.0",
        ),
    )
    left = Decimal("2136.9") - Decimal("100.9")
    held = rec.ledger.position(SCA)
    assert held is not None
    rec.check(
        oct13(18, 47, 3),
        "Decimal('2136.9') - Decimal('100.9')",
        f"{left!r}; position(SCAUSDT).size == {held.size!r}: {held.size == Decimal('2036.0')}",
    )
    rec.offstage(oct13(19, 2, 18), "AGIUSDT exit agi-exit fills 1000 @ 0.04784")
    rec.offstage(oct13(19, 11, 51), "HNTUSDT exit hnt-exit fills 0.12 @ 2.561")


AGED_ON_BYBIT = (
    ("AGIUSDT", Side.SELL, "3160", "0.04701"),
    ("SCAUSDT", Side.SELL, "2036.0", "0.09412"),
    ("HNTUSDT", Side.SELL, "59.88", "2.512"),
)
AGED_EXITS = ("agi-exit", "sca-exit", "hnt-exit")


@scene(
    SEED_002,
    "19:24:49: the snapshot disagrees on two keys",
    "Bybit shows AGIUSDT 3160, SCAUSDT 2036.0, HNTUSDT 59.88. SCAUSDT agrees, so nothing is "
    "written for it; AGIUSDT and HNTUSDT become suspect, where the incident only logged a warning.",
)
def first_aged_snapshot(rec: Recorder) -> None:
    rec.reconcile(_snapshot(AGED, oct13(19, 24, 49), AGED_ON_BYBIT, AGED_EXITS))


@scene(
    SEED_002,
    "Second snapshot confirms: stale_quantity",
    "The same sizes a minute later: Reconciled(kind=stale_quantity) corrects AGIUSDT 4160 -> "
    "3160 and HNTUSDT 60 -> 59.88, with the evidence. (With a venue, the Synchronizer would first "
    "recover the missed fills from Bybit's history; Ledger.reconcile alone corrects directly.)",
)
def second_aged_snapshot(rec: Recorder) -> None:
    rec.reconcile(_snapshot(AGED, oct13(19, 25, 49), AGED_ON_BYBIT, AGED_EXITS))


@scene(
    SEED_002,
    "The exits complete",
    "By 19:50 the exits have filled the rest, and these fills are delivered: each lifecycle "
    "ends with Closed(reason=filled), and the next snapshot agrees without writing anything. "
    "Realized PnL counts only the fills the ledger saw: a correction realizes nothing.",
)
def exits_complete(rec: Recorder) -> None:
    rec.fill(
        AGI, _fill("agi-x2", "agi-exit", Side.BUY, "3160", "0.04809", oct13(19, 31, 4), fee="0.08")
    )
    rec.fill(
        SCA,
        _fill("sca-x3", "sca-exit", Side.BUY, "2036.0", "0.09527", oct13(19, 33, 26), fee="0.11"),
    )
    rec.fill(
        HNT, _fill("hnt-x2", "hnt-exit", Side.BUY, "59.88", "2.561", oct13(19, 38, 9), fee="0.08")
    )
    rec.reconcile(_snapshot(AGED, oct13(19, 50)))


SCENES: tuple[Scene, ...] = (
    open_eth_sol,
    read_fails,
    first_flat_snapshot,
    second_flat_snapshot,
    unfilled_open,
    open_aged_shorts,
    partial_exit_fills,
    first_aged_snapshot,
    second_aged_snapshot,
    exits_complete,
)


# --- running it --------------------------------------------------------------------------------


def play(ledger: Ledger, scenes: Iterable[Scene] = SCENES) -> list[Chapter]:
    """Play ``scenes`` in order against ``ledger``, which must be empty."""
    if ledger.keys():
        raise InvalidInput("the demo needs an empty ledger")
    rec = Recorder(ledger)
    chapters = []
    for number, item in enumerate(scenes, 1):
        before = tuple(ledger.open_positions())
        item.act(rec)
        commands, events, reports = rec.take()
        chapters.append(
            Chapter(
                number=number,
                seed=item.seed,
                title=item.title,
                narrative=item.narrative,
                commands=commands,
                events=events,
                reports=reports,
                open_before=before,
                open_after=tuple(ledger.open_positions()),
            )
        )
    return chapters


def no_wall_clock() -> datetime:
    raise AssertionError("the demo passes every time explicitly; it never reads the clock")


def run_demo(url: str = "memory://") -> list[Chapter]:
    """Open a fresh ledger at ``url``, play every scene, close it, and return the chapters."""
    with Ledger.open(url, clock=no_wall_clock) as ledger:
        return play(ledger)
