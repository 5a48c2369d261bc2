"""The two seed incidents replayed against a real Ledger, as data.

``run_demo()`` plays every scene (see ``posledger.demo.scenes``) in order and returns one
:class:`Chapter` per scene: its title and narrative, the commands run (with what each returned),
the events each wrote, the reconcile reports, and the open positions before and after. Nothing
here prints: ``posledger demo`` (``posledger.cli``) lays chapters out for a terminal, and the
tests read them directly.

Every time is fixed (the incidents' own dates, aware UTC) and passed explicitly; the ledger is
opened with a clock that refuses to be read, so a replay never depends on the wall clock.

The package's modules: ``chapter`` (what a chapter holds, and the recorder that fills it) and
``scenes`` (the incidents' scenes, their keys and times, and playing them).
"""

from posledger.audit.format import holding
from posledger.demo.chapter import Chapter, Command, Recorder, Written, describe
from posledger.demo.scenes import (
    AGED,
    AGED_EXITS,
    AGED_ON_BYBIT,
    AGI,
    AGI_OPENED,
    BTC,
    CALCULUS,
    CATEGORY,
    ETH,
    HNT,
    SCA,
    SCENES,
    SEED_000,
    SEED_002,
    SOL,
    VENUE,
    Scene,
    exits_complete,
    first_aged_snapshot,
    first_flat_snapshot,
    no_wall_clock,
    nov12,
    oct13,
    open_aged_shorts,
    open_eth_sol,
    partial_exit_fills,
    play,
    read_fails,
    run_demo,
    scene,
    second_aged_snapshot,
    second_flat_snapshot,
    unfilled_open,
)

__all__ = [
    "AGED",
    "AGED_EXITS",
    "AGED_ON_BYBIT",
    "AGI",
    "AGI_OPENED",
    "BTC",
    "CALCULUS",
    "CATEGORY",
    "ETH",
    "HNT",
    "SCA",
    "SCENES",
    "SEED_000",
    "SEED_002",
    "SOL",
    "VENUE",
    "Chapter",
    "Command",
    "Recorder",
    "Scene",
    "Written",
    "describe",
    "exits_complete",
    "first_aged_snapshot",
    "first_flat_snapshot",
    "holding",
    "no_wall_clock",
    "nov12",
    "oct13",
    "open_aged_shorts",
    "open_eth_sol",
    "partial_exit_fills",
    "play",
    "read_fails",
    "run_demo",
    "scene",
    "second_aged_snapshot",
    "second_flat_snapshot",
    "unfilled_open",
]
