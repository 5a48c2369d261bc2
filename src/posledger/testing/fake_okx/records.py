"""The records a fake OKX account holds, each with the row OKX's V5 API lists it as (sizes in
contracts, numbers as strings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from posledger.testing.fake_http import EPOCH, Row, to_ms, to_text

INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")
OPEN_STATES = ("live", "partially_filled")


@dataclass(frozen=True)
class FakeInstrument:
    """One instrument as public/instruments lists it."""

    inst_id: str
    inst_type: str
    ct_val: Decimal
    ct_mult: Decimal
    settle: str
    lot_sz: Decimal = Decimal("0.01")
    tick_sz: Decimal = Decimal("0.1")

    @property
    def underlying(self) -> str:
        return "-".join(self.inst_id.split("-")[:2])

    @property
    def inverse(self) -> bool:
        """Coin-margined (``ctType`` inverse): settled in the base coin, ``ctVal`` in USD; its
        PnL, fees and funding are in the coin, its average entry a harmonic mean."""
        return self.settle != self.underlying.split("-")[1]

    @property
    def expiry_ms(self) -> str:
        """A future's delivery time (08:00 UTC of the date in its id); "" for a swap."""
        if self.inst_type != "FUTURES":
            return ""
        day = datetime.strptime(self.inst_id.split("-")[2], "%y%m%d").replace(tzinfo=UTC)
        return str(to_ms(day + timedelta(hours=8)))

    def row(self) -> Row:
        base, quote = self.underlying.split("-")
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "uly": self.underlying,
            "instFamily": self.underlying,
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": self.settle,
            "ctVal": to_text(self.ct_val),
            "ctMult": to_text(self.ct_mult),
            "ctValCcy": quote if self.inverse else base,
            "ctType": "inverse" if self.inverse else "linear",
            "optType": "",
            "stk": "",
            "listTime": "1606468572000",
            "expTime": self.expiry_ms,
            "lever": "100",
            "tickSz": to_text(self.tick_sz),
            "lotSz": to_text(self.lot_sz),
            "minSz": to_text(self.lot_sz),
            "alias": "",
            "state": "live",
            "maxLmtSz": "100000000",
            "maxMktSz": "10000",
        }


@dataclass(frozen=True)
class FakePosition:
    """One position row: ``pos`` contracts, signed in net mode; ``ccy`` the margin currency (the
    coin of a coin-margined instrument, in which its PnL and fees are)."""

    inst_id: str
    inst_type: str
    pos_side: str
    mgn_mode: str
    pos: Decimal
    avg_px: Decimal
    pos_id: str
    c_ms: int
    u_ms: int
    ccy: str = "USDT"

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "mgnMode": self.mgn_mode,
            "posId": self.pos_id,
            "posSide": self.pos_side,
            "pos": to_text(self.pos),
            "posCcy": "",
            "availPos": to_text(abs(self.pos)),
            "avgPx": to_text(self.avg_px) if self.pos else "",
            "upl": "0",
            "uplRatio": "0",
            "lever": "10",
            "liqPx": "",
            "markPx": to_text(self.avg_px),
            "imr": "0",
            "margin": "",
            "mgnRatio": "",
            "mmr": "0",
            "notionalUsd": "0",
            "ccy": self.ccy,
            "adl": "1",
            "realizedPnl": "0",
            "cTime": str(self.c_ms),
            "uTime": str(self.u_ms),
        }


@dataclass(frozen=True)
class FakeOrder:
    """An order; pending while its state is live or partially_filled."""

    inst_id: str
    inst_type: str
    ord_id: str
    side: str
    pos_side: str
    sz: Decimal
    px: Decimal
    reduce_only: bool
    state: str
    acc_fill_sz: Decimal
    c_ms: int
    u_ms: int

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "ordId": self.ord_id,
            "clOrdId": "",
            "tag": "",
            "px": to_text(self.px),
            "sz": to_text(self.sz),
            "ordType": "limit",
            "side": self.side,
            "posSide": self.pos_side,
            "tdMode": "cross",
            "accFillSz": to_text(self.acc_fill_sz),
            "fillPx": "",
            "fillSz": "0",
            "avgPx": "",
            "state": self.state,
            "lever": "10",
            "fee": "0",
            "feeCcy": "USDT",
            "reduceOnly": "true" if self.reduce_only else "false",
            "cTime": str(self.c_ms),
            "uTime": str(self.u_ms),
        }


@dataclass(frozen=True)
class FakeFill:
    """One fills-history row (``fillSz`` in contracts, ``fee`` negative when paid, in
    ``fee_ccy``: the settle currency)."""

    inst_id: str
    inst_type: str
    trade_id: str
    ord_id: str
    bill_id: str
    side: str
    pos_side: str
    fill_sz: Decimal
    fill_px: Decimal
    fee: Decimal
    ts: int
    sub_type: str
    fee_ccy: str = "USDT"

    @property
    def exec_time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.ts)

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "tradeId": self.trade_id,
            "ordId": self.ord_id,
            "clOrdId": "",
            "billId": self.bill_id,
            "subType": self.sub_type,
            "tag": "",
            "fillPx": to_text(self.fill_px),
            "fillSz": to_text(self.fill_sz),
            "fillIdxPx": "",
            "fillPnl": "0",
            "side": self.side,
            "posSide": self.pos_side,
            "execType": "M",
            "feeCcy": self.fee_ccy,
            "fee": to_text(self.fee),
            "ts": str(self.ts),
            "fillTime": str(self.ts),
        }


@dataclass(frozen=True)
class FakePositionHistory:
    """One position's record, as /api/v5/account/positions-history lists it once (part of) it
    has closed: cumulative closed contracts, price PnL, fees (opening and closing), funding and
    liquidation penalty, in OKX's signs (negative = paid) and the margin currency;
    ``realizedPnl`` is their sum (docs/money.md#okx-positions-history)."""

    inst_id: str
    inst_type: str
    pos_side: str
    pos_id: str
    c_ms: int
    u_ms: int
    ccy: str
    direction: str
    open_avg_px: Decimal
    open_max_pos: Decimal
    close_total_pos: Decimal = Decimal(0)
    close_avg_px: Decimal = Decimal(0)
    pnl: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    funding_fee: Decimal = Decimal(0)
    liq_penalty: Decimal = Decimal(0)
    type: str = "1"

    @property
    def realized_pnl(self) -> Decimal:
        return self.pnl + self.fee + self.funding_fee + self.liq_penalty

    def row(self) -> Row:
        return {
            "instType": self.inst_type,
            "instId": self.inst_id,
            "mgnMode": "cross",
            "type": self.type,
            "cTime": str(self.c_ms),
            "uTime": str(self.u_ms),
            "openAvgPx": to_text(self.open_avg_px),
            "nonSettleAvgPx": "",
            "closeAvgPx": to_text(self.close_avg_px),
            "posId": self.pos_id,
            "openMaxPos": to_text(self.open_max_pos),
            "closeTotalPos": to_text(self.close_total_pos),
            "realizedPnl": to_text(self.realized_pnl),
            "settledPnl": "",
            "pnlRatio": "0",
            "fee": to_text(self.fee),
            "fundingFee": to_text(self.funding_fee),
            "liqPenalty": to_text(self.liq_penalty),
            "pnl": to_text(self.pnl),
            "posSide": self.pos_side,
            "lever": "10",
            "direction": self.direction,
            "triggerPx": "",
            "uly": "-".join(self.inst_id.split("-")[:2]),
            "ccy": self.ccy,
        }
