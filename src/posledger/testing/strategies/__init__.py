"""Hypothesis strategies for property-testing bots built on posledger.

Everything drawn here is what an exchange could report: quantities, prices and fees are
``Decimal`` (never ``float``), times are timezone-aware UTC ``datetime``, and keys are one-way
(``idx`` 0) or a hedge-mode leg (``idx`` 1 long, ``idx`` 2 short). The building blocks are
:func:`decimals_qty`, :func:`prices`, :func:`fees`, :func:`utc_datetimes`, :func:`position_keys`
(in books too), :func:`book_names`, :func:`allocation_policies`, :func:`fills`,
:func:`exchange_positions` and :func:`snapshots`; :func:`exchange_histories` draws
a whole scripted exchange session (requests, partial and full executions, order-less
liquidations, funding, cancellations) together with the exchange's true positions after every
step, so a test can feed any part of it to a ledger (or to a bot) and compare with the truth::

    from hypothesis import given
    from posledger import Ledger
    from posledger.testing.strategies import exchange_histories

    @given(exchange_histories())
    def test_the_ledger_follows_the_exchange(history):
        with Ledger.open("memory://") as ledger:
            for step in history.steps:
                step.apply(ledger)                      # tell the ledger everything
            for key, size in history.positions().items():
                position = ledger.position(key)
                assert (position.signed_size if position else 0) == size

Skip some ``Executed`` steps and reconcile with ``history.snapshot()`` to test recovery from
missed executions; reconcile ``history.snapshot(i)`` for an earlier ``i`` to test stale reads.
The exchange model behind the histories, :class:`SimulatedExchange`, is public for stateful
tests that drive an exchange step by step themselv

The package's modules: ``values`` (numbers, times, keys, fills, exchange rows, snapshots),
``history`` (what a drawn history is: its actions and steps, and the snapshots it implies) and
``simulation`` (the :class:`SimulatedExchange` and the interpreter that draws histories with it).
"""

from posledger.testing.strategies.history import (
    ExchangeHistory,
    ExchangeStep,
    Executed,
    OrderCancelled,
    OrderPlaced,
)
from posledger.testing.strategies.simulation import (
    DEFAULT_KEYS,
    SimulatedExchange,
    WorkingOrder,
    exchange_histories,
)
from posledger.testing.strategies.values import (
    DEFAULT_SYMBOLS,
    allocation_policies,
    book_names,
    decimals_qty,
    exchange_positions,
    fees,
    fills,
    position_keys,
    prices,
    snapshots,
    utc_datetimes,
)

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_SYMBOLS",
    "ExchangeHistory",
    "ExchangeStep",
    "Executed",
    "OrderCancelled",
    "OrderPlaced",
    "SimulatedExchange",
    "WorkingOrder",
    "allocation_policies",
    "book_names",
    "decimals_qty",
    "exchange_histories",
    "exchange_positions",
    "fees",
    "fills",
    "position_keys",
    "prices",
    "snapshots",
    "utc_datetimes",
]
