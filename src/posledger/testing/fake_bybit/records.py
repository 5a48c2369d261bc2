"""The records a fake Bybit account holds, each with the row Bybit's V5 API lists it as."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from posledger.testing.fake_http import (
    EPOCH,
    Row,
    coin_value,
    inverse_average,
    to_ms,
    to_text,
)

OPEN_STATUSES = ("New", "PartiallyFilled")
CATEGORIES = ("linear", "inverse", "option", "spot")

INVERSE = "inverse"
"""Bybit's coin-margined contracts (BTCUSD, the quarterly BTCUSDH26): sizes in USD contracts, the
value of a position or execution, its fees and PnL in the base coin, which is also the settle
coin (https://www.bybit.com/en/help-center/article/Profit-Loss-calculations-Inverse-Contracts)."""

_MONTHS = "FGHJKMNQUVXZ"
"""The futures month codes of Bybit's inverse quarterlies (BTCUSDH26: March 2026)."""


def settle_coin_of(category: str, symbol: str) -> str:
    if category == INVERSE:
        return symbol.partition("USD")[0]
    return "USDT" if symbol.endswith("USDT") else "USDC"


def coins_of(category: str, symbol: str) -> tuple[str, str]:
    """Base and quote coin of a symbol named the way Bybit names them (BTCUSDT, BTCPERP, BTCUSD,
    BTCUSDH26)."""
    if category == INVERSE:
        return symbol.partition("USD")[0], "USD"
    for quote, suffix in (("USDT", "USDT"), ("USDC", "USDC"), ("USDC", "PERP")):
        if symbol.endswith(suffix) and len(symbol) > len(suffix):
            return symbol.removesuffix(suffix), quote
    raise ValueError(f"{symbol}: cannot tell its base and quote coin; use add_instrument")


def value_of(category: str, qty: Decimal, price: Decimal) -> Decimal:
    """What ``qty`` at ``price`` is worth, as Bybit's ``positionValue`` and ``execValue`` write
    it: the quote coin on linear contracts, the coin on inverse ones."""
    return coin_value(qty, price) if category == INVERSE else qty * price


def average_of(category: str, held: Decimal, avg: Decimal, qty: Decimal, price: Decimal) -> Decimal:
    """The average entry of ``held`` at ``avg`` plus ``qty`` at ``price``: contract-weighted on
    linear contracts, harmonic on inverse ones."""
    if category == INVERSE:
        return inverse_average(held, avg, qty, price)
    return (held * avg + qty * price) / (held + qty)


def delivery_ms(category: str, symbol: str) -> int:
    """A quarterly inverse future's delivery (08:00 UTC on the last Friday of its month); 0 for a
    perpetual, as instruments-info writes ``deliveryTime``."""
    suffix = symbol.partition("USD")[2] if category == INVERSE else ""
    if not suffix:
        return 0
    month, year = _MONTHS.index(suffix[0]) + 1, 2000 + int(suffix[1:])
    last = datetime(year + month // 12, month % 12 + 1, 1, 8, tzinfo=UTC) - timedelta(days=1)
    return to_ms(last - timedelta(days=(last.weekday() - 4) % 7))


@dataclass(frozen=True)
class FakeInstrument:
    """One tradable symbol of a category, as /v5/market/instruments-info lists it."""

    category: str
    symbol: str
    base: str
    quote: str
    settle_coin: str
    status: str = "Trading"
    qty_step: Decimal | None = None
    tick_size: Decimal = Decimal("0.01")

    @property
    def lot(self) -> Decimal:
        """The quantity step: 1 USD contract on inverse contracts, else ``qty_step`` (0.001)."""
        if self.qty_step is not None:
            return self.qty_step
        return Decimal(1) if self.category == INVERSE else Decimal("0.001")

    def row(self) -> Row:
        lot = {
            "maxOrderQty": "1000000",
            "minOrderQty": to_text(self.lot),
            "qtyStep": to_text(self.lot),
            "postOnlyMaxOrderQty": "1000000",
            "maxMktOrderQty": "100000",
            "minNotionalValue": "5",
        }
        if self.category == "spot":
            return {
                "symbol": self.symbol,
                "baseCoin": self.base,
                "quoteCoin": self.quote,
                "innovation": "0",
                "status": self.status,
                "marginTrading": "both",
                "lotSizeFilter": {
                    "basePrecision": to_text(self.lot),
                    "quotePrecision": "0.00000001",
                    "minOrderQty": to_text(self.lot),
                    "maxOrderQty": "1000000",
                    "minOrderAmt": "1",
                    "maxOrderAmt": "2000000",
                },
                "priceFilter": {"tickSize": to_text(self.tick_size)},
            }
        delivery = delivery_ms(self.category, self.symbol)
        kind = "Futures" if delivery else "Perpetual"
        return {
            "symbol": self.symbol,
            "contractType": ("Inverse" if self.category == INVERSE else "Linear") + kind,
            "status": self.status,
            "baseCoin": self.base,
            "quoteCoin": self.quote,
            "launchTime": "1585526400000",
            "deliveryTime": str(delivery),
            "deliveryFeeRate": "",
            "priceScale": "2",
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {
                "minPrice": to_text(self.tick_size),
                "maxPrice": "1999999.80",
                "tickSize": to_text(self.tick_size),
            },
            "lotSizeFilter": lot,
            "unifiedMarginTrade": True,
            "fundingInterval": 480,
            "settleCoin": self.settle_coin,
            "copyTrading": "both",
            "upperFundingRate": "0.00375",
            "lowerFundingRate": "-0.00375",
            "isPreListing": False,
            "preListingInfo": None,
        }


@dataclass(frozen=True)
class FakePosition:
    """One leg as the exchange holds it; ``side`` is "" when the leg is flat (listed as "None" on
    an inverse contract, as Bybit's position list documents for them)."""

    category: str
    symbol: str
    idx: int
    side: str
    size: Decimal
    avg_price: Decimal
    seq: int
    updated_ms: int
    settle_coin: str

    def row(self) -> Row:
        return {
            "positionIdx": self.idx,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": self.symbol,
            "side": self.side or ("None" if self.category == INVERSE else ""),
            "size": to_text(self.size),
            "avgPrice": to_text(self.avg_price),
            "positionValue": to_text(value_of(self.category, self.size, self.avg_price)),
            "tradeMode": 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if self.size else 0,
            "leverage": "10",
            "positionBalance": "0",
            "markPrice": to_text(self.avg_price),
            "liqPrice": "",
            "bustPrice": "",
            "positionMM": "0",
            "positionIM": "0",
            "tpslMode": "Full",
            "takeProfit": "",
            "stopLoss": "",
            "trailingStop": "0",
            "unrealisedPnl": "0",
            "curRealisedPnl": "0",
            "cumRealisedPnl": "0",
            "seq": self.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "sessionAvgPrice": "",
            "createdTime": str(self.updated_ms),
            "updatedTime": str(self.updated_ms),
        }


@dataclass(frozen=True)
class FakeOrder:
    """An order; open while its status is New or PartiallyFilled."""

    category: str
    symbol: str
    order_id: str
    side: str
    qty: Decimal
    price: Decimal
    idx: int
    order_type: str
    reduce_only: bool
    status: str
    cum_exec_qty: Decimal
    created_ms: int
    updated_ms: int
    settle_coin: str

    @property
    def leaves_qty(self) -> Decimal:
        return self.qty - self.cum_exec_qty if self.is_open else Decimal(0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def row(self) -> Row:
        return {
            "orderId": self.order_id,
            "orderLinkId": "",
            "blockTradeId": "",
            "symbol": self.symbol,
            "price": to_text(self.price),
            "qty": to_text(self.qty),
            "side": self.side,
            "isLeverage": "",
            "positionIdx": self.idx,
            "orderStatus": self.status,
            "createType": "CreateByUser",
            "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": to_text(self.price) if self.cum_exec_qty else "",
            "leavesQty": to_text(self.leaves_qty),
            "leavesValue": to_text(value_of(self.category, self.leaves_qty, self.price)),
            "cumExecQty": to_text(self.cum_exec_qty),
            "cumExecValue": to_text(value_of(self.category, self.cum_exec_qty, self.price)),
            "cumExecFee": "0",
            "timeInForce": "GTC",
            "orderType": self.order_type,
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "",
            "takeProfit": "",
            "stopLoss": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": to_text(self.price),
            "reduceOnly": self.reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(self.created_ms),
            "updatedTime": str(self.updated_ms),
        }


@dataclass(frozen=True)
class FakeExecution:
    """One execution record, as /v5/execution/list reports it (it carries no positionIdx)."""

    category: str
    symbol: str
    exec_id: str
    order_id: str
    side: str
    exec_qty: Decimal
    exec_price: Decimal
    exec_fee: Decimal
    exec_ms: int
    exec_type: str
    seq: int
    leaves_qty: Decimal
    closed_size: Decimal
    order_type: str
    is_maker: bool

    @property
    def exec_time(self) -> datetime:
        """``exec_ms`` as an aware UTC datetime, as a bot's execution feed would stamp it."""
        return EPOCH + timedelta(milliseconds=self.exec_ms)

    def row(self) -> Row:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderLinkId": "",
            "side": self.side,
            "orderPrice": to_text(self.exec_price),
            "orderQty": to_text(self.exec_qty + self.leaves_qty),
            "leavesQty": to_text(self.leaves_qty),
            "createType": "CreateByUser",
            "orderType": self.order_type,
            "stopOrderType": "UNKNOWN",
            "execFee": to_text(self.exec_fee),
            "execId": self.exec_id,
            "execPrice": to_text(self.exec_price),
            "execQty": to_text(self.exec_qty),
            "execType": self.exec_type,
            "execValue": to_text(value_of(self.category, self.exec_qty, self.exec_price)),
            "execTime": str(self.exec_ms),
            "feeCurrency": "",
            "isMaker": self.is_maker,
            "feeRate": "0.00055",
            "tradeIv": "",
            "markIv": "",
            "markPrice": to_text(self.exec_price),
            "indexPrice": "",
            "underlyingPrice": "",
            "blockTradeId": "",
            "closedSize": to_text(self.closed_size),
            "seq": self.seq,
            "extraFees": "",
        }


@dataclass(frozen=True)
class FakeClosedPnl:
    """What the book booked when one execution closed part of a leg, as /v5/position/closed-pnl
    lists it: the closed size at the leg's average entry and at the exit price, the share of the
    opening fees and of the funding the closed size carried, and the closing fee. ``closedPnl``
    is the price difference less both fees and that funding, as Bybit's help centre defines
    Closed P&L (docs/money.md#bybit-closed-pnl)."""

    category: str
    symbol: str
    order_id: str
    side: str
    order_qty: Decimal
    order_price: Decimal
    order_type: str
    exec_type: str
    closed_size: Decimal
    avg_entry_price: Decimal
    avg_exit_price: Decimal
    open_fee: Decimal
    close_fee: Decimal
    funding: Decimal
    created_ms: int

    @property
    def entry_value(self) -> Decimal:
        return value_of(self.category, self.closed_size, self.avg_entry_price)

    @property
    def exit_value(self) -> Decimal:
        return value_of(self.category, self.closed_size, self.avg_exit_price)

    @property
    def trading_pnl(self) -> Decimal:
        """Exit less entry value for a long (closed by a Sell), the reverse for a short; in the
        coin on an inverse contract, where a long gains what its entry value exceeds its exit's."""
        gained = self.exit_value - self.entry_value
        if self.category == INVERSE:
            gained = -gained
        return gained if self.side == "Sell" else -gained

    @property
    def closed_pnl(self) -> Decimal:
        return self.trading_pnl - self.open_fee - self.close_fee - self.funding

    def row(self) -> Row:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "side": self.side,
            "qty": to_text(self.order_qty),
            "orderPrice": to_text(self.order_price),
            "orderType": self.order_type,
            "execType": self.exec_type,
            "closedSize": to_text(self.closed_size),
            "cumEntryValue": to_text(self.entry_value),
            "avgEntryPrice": to_text(self.avg_entry_price),
            "cumExitValue": to_text(self.exit_value),
            "avgExitPrice": to_text(self.avg_exit_price),
            "closedPnl": to_text(self.closed_pnl),
            "fillCount": "1",
            "leverage": "10",
            "openFee": to_text(self.open_fee),
            "closeFee": to_text(self.close_fee),
            "createdTime": str(self.created_ms),
            "updatedTime": str(self.created_ms),
        }
