"""HTML for notebooks: tables in one style with every value escaped, and a PositionState shown
as a table in Jupyter.

History rows and verify reports lay out their own columns with :func:`html_table` next to their
types (:func:`~posledger.audit.history.history_html`,
:func:`~posledger.audit.verification.verify_html`), where their ``_repr_html_`` finds them. A
PositionState belongs to the core, which knows nothing of presentation: its formatter is
registered with the running IPython shell from here, when this module is imported.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from posledger.audit.format import side_value, signed_quantity, signed_size
from posledger.core.position import PositionState

TABLE_STYLE = (
    "border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px"
)
CELL_STYLE = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"


def cell(value: object) -> str:
    """A value as escaped cell text: empty for None, decimals in full, times with a space."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return html.escape(value.isoformat(sep=" "))
    if isinstance(value, Decimal):
        return html.escape(format(value, "f"))
    return html.escape(str(value))


def html_table(head: Iterable[str], rows: Iterable[tuple[str | None, Iterable[object]]]) -> str:
    """A table with a header row, then one row per (row style or None, cell values)."""
    header = "".join(f'<th style="{CELL_STYLE}">{html.escape(name)}</th>' for name in head)
    body = "".join(
        ("<tr>" if style is None else f'<tr style="{style}">')
        + "".join(f'<td style="{CELL_STYLE}">{cell(value)}</td>' for value in values)
        + "</tr>"
        for style, values in rows
    )
    return f'<table style="{TABLE_STYLE}"><tr>{header}</tr>{body}</table>'


def state_html(state: PositionState) -> str:
    """An HTML table of one PositionState (for ``_repr_html_``); every value escaped."""
    pending = ", ".join(
        f"{o.order_id} {o.side.value} {cell(o.filled)}/{cell(o.qty)}"
        + (" reduce-only" if o.reduce_only else "")
        for o in state.pending_orders
    )
    suspect = state.suspect
    rows: list[tuple[str, object]] = [
        ("key", state.key),
        ("status", state.status.value),
        ("side", side_value(state.side)),
        ("size", state.size),
        ("avg entry price", state.avg_entry_price),
        ("settle coin (PnL, fees, funding)", state.key.settle_coin),
        ("realized PnL (total)", state.realized_pnl),
        ("fees (total)", state.fees),
        ("funding (total)", state.funding),
        ("PnL adopted from exchange records", state.adopted_pnl),
        ("unexplained PnL (exchange − ledger)", state.unexplained_pnl),
        ("booked PnL (net of fees)", state.booked_pnl),
        ("lifecycle", state.lifecycle),
        (
            "lifecycle PnL / fees / funding",
            f"{cell(state.lifecycle_realized_pnl)} / {cell(state.lifecycle_fees)} / "
            f"{cell(state.lifecycle_funding)}",
        ),
        ("opened at", state.opened_at),
        ("pending orders", pending or None),
        (
            "suspect",
            f"{signed_quantity(signed_size(suspect.side, suspect.size))} seen {suspect.count}×"
            if suspect
            else None,
        ),
        ("overfills", state.overfills or None),
        ("version", state.version),
        ("updated at", state.updated_at),
    ]
    body = "".join(
        f'<tr><th style="{CELL_STYLE}">{html.escape(name)}</th>'
        f'<td style="{CELL_STYLE}">{cell(value)}</td></tr>'
        for name, value in rows
        if value is not None
    )
    return f'<table style="{TABLE_STYLE}">{body}</table>'


def _show_states_as_tables_in_notebooks() -> None:
    """Let Jupyter render a PositionState with :func:`state_html`: registered from here, so the
    domain type knows nothing of presentation."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(PositionState, state_html)


_show_states_as_tables_in_notebooks()
