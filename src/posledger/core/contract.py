"""Contract types: which keys are inverse (coin-margined), their average-cost arithmetic, and
the settle coin of a key's money. The position rules are the same for linear and inverse
(docs/design.md#inverse); only what a contract costs and what closing it realizes differ.

A position keeps one running ``cost``: the quote value paid (Σ price × qty) on a linear
contract, the coin value (Σ qty / price) on an inverse one, where a contract is worth a fixed
amount of USD. The average entry is then the contract-weighted mean (arithmetic for linear,
harmonic for inverse), and closing ``qty`` at ``price`` realizes, long side positive:

- linear: ``price × qty − removed cost`` (in the quote/settle coin)
- inverse: ``removed cost − qty / price`` (in the coin)
"""

from __future__ import annotations

from decimal import Context, Decimal

INVERSE = "inverse"
"""The category of inverse (coin-margined) contracts, on every venue: Bybit's own name, and the
one posledger gives OKX's coin-margined swaps and futures."""

COIN = Context(prec=60)
"""Inverse costs are sums of quotients (1/30000 never ends): 60 digits carried through a
lifecycle keep its realized PnL exact to the 28 significant digits it is stored with."""


class Inverse:
    """Sizes in USD contracts, PnL in the coin: cost is the coin value, Σ qty / price."""

    def cost(self, price: Decimal, qty: Decimal) -> Decimal:
        return COIN.divide(qty, price)

    def plus(self, cost: Decimal, more: Decimal) -> Decimal:
        return COIN.add(cost, more)

    def share(self, cost: Decimal, part: Decimal, whole: Decimal) -> Decimal:
        return COIN.divide(COIN.multiply(cost, part), whole)

    def average(self, cost: Decimal, size: Decimal) -> Decimal:
        return size / cost + _UNITS  # 100 / 0.005 is 2.0E+4: written as 20000, like linear's

    def pnl(self, removed: Decimal, price: Decimal, qty: Decimal) -> Decimal:
        return +COIN.subtract(removed, COIN.divide(qty, price))


_UNITS = Decimal(0)

COIN_COST = Inverse()
"""The inverse arithmetic (linear's is written out where it is used: replays fold every fill)."""


def settle_coin(venue: str, category: str, symbol: str) -> str | None:
    """The coin a key's PnL, fees and funding are in, read from the exchange's symbol naming
    (docs/design.md#inverse); None where the name follows no documented pattern. Money figures of
    different settle coins are never added together."""
    inverse = category == INVERSE
    if venue == "okx":
        parts = symbol.split("-")
        if inverse:
            return parts[0]
        return parts[1] if len(parts) > 2 and parts[1].isalnum() else None
    if venue != "bybit":
        return None
    if inverse:
        base, usd, _ = symbol.partition("USD")
        return base if usd and base else None
    if "USDT" in symbol:
        return "USDT"
    if symbol.endswith("PERP") or "USDC" in symbol or "-" in symbol:
        return "USDC"
    return None
