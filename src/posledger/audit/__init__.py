"""Audit: history, time travel, fast bulk replay, verification, DataFrames, plots.

Answers "what did we hold, when, and why did it change?" from the stored events alone:

- :func:`history_rows` explains one key event by event (sizes before/after, the evidence of every
  correction); :func:`state_at` time-travels to a version or a business time.
- :func:`replay_all` / :func:`replay` rebuild every key from the event log read in bulk pages
  (``select_notifications``), not one aggregate read per key, with memory bounded by the number
  of keys: a store of millions of events replays in a notebook.
- :func:`verify` replays everything and checks the ledger's invariants (sizes recomputed
  independently of ``evolve``, executions applied once with their markers, well-formed
  lifecycles, snapshot-based loads, the read-model table) and reports problems by key.
- :func:`money_rows` lists every money check that found a difference (docs/design.md#money),
  :func:`plot_unexplained` plots the unexplained part over time per settle coin.
- :func:`book_pnl` gives an account's books side by side with the account's total
  (docs/books.md); a book's history explains each ``Allocated`` share it took.
- :func:`to_dataframe` and :func:`plot_position` (pandas / matplotlib, imported lazily:
  ``pip install -e '.[notebook]'``), and HTML renderings for notebooks
  (:func:`state_html`, :func:`history_html`).

Sources: a :class:`~posledger.Ledger`, a ledger URL (``sqlite:///…``, ``postgresql://…``; a
``memory://`` store lives inside its Ledger, so pass the Ledger), or a ``LedgerApplication``.

Import everything from here; the modules behind it follow the concerns above: ``source``
(opening a source, reading the log in pages), ``replays``, ``history``, ``verification`` (its
checks in ``stream_checks``, ``execution_checks``, ``ledger_check`` and ``readmodel_check``),
``money``, ``books``, ``frames``, ``plot``, ``html`` and ``format`` (text shared with the CLI
and the demo).
"""

from posledger.audit.books import BOOK_PNL_COLUMNS, BookPnl, BookPnlRows, book_pnl
from posledger.audit.findings import Check, Flag, Problem
from posledger.audit.frames import (
    HISTORY_COLUMNS,
    PROBLEM_COLUMNS,
    STATE_COLUMNS,
    history_record,
    state_record,
    to_dataframe,
)
from posledger.audit.history import (
    Evidence,
    HistoryRow,
    HistoryRows,
    evidence_text,
    history_html,
    history_rows,
    history_stream,
)
from posledger.audit.html import state_html
from posledger.audit.money import (
    MONEY_COLUMNS,
    MoneyRow,
    money_record,
    money_rows,
    plot_unexplained,
    unexplained_by_coin,
)
from posledger.audit.plot import plot_position
from posledger.audit.replays import replay, replay_all, replay_events, state_at
from posledger.audit.source import PAGE_SIZE, Progress, Source
from posledger.audit.verification import VerifyReport, verify, verify_html
from posledger.store.readmodel import TABLE as READ_MODEL_TABLE

# In the order of the concerns above, which the API reference follows (members_order: __all__).
__all__ = [  # noqa: RUF022
    "Source",
    "Progress",
    "PAGE_SIZE",
    "replay_events",
    "replay",
    "replay_all",
    "state_at",
    "Evidence",
    "HistoryRow",
    "HistoryRows",
    "history_rows",
    "history_stream",
    "Check",
    "Problem",
    "Flag",
    "VerifyReport",
    "verify",
    "READ_MODEL_TABLE",
    "HISTORY_COLUMNS",
    "STATE_COLUMNS",
    "PROBLEM_COLUMNS",
    "history_record",
    "state_record",
    "to_dataframe",
    "plot_position",
    "MoneyRow",
    "money_rows",
    "MONEY_COLUMNS",
    "money_record",
    "unexplained_by_coin",
    "plot_unexplained",
    "BookPnl",
    "BookPnlRows",
    "book_pnl",
    "BOOK_PNL_COLUMNS",
    "state_html",
    "evidence_text",
    "history_html",
    "verify_html",
]
