"""``plot_position``: one key's size over time as a person would rather look at it (matplotlib,
imported on first use)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from posledger.audit.extras import notebook_module
from posledger.audit.format import counted, signed_quantity
from posledger.audit.history import HistoryRow, history_rows
from posledger.audit.source import Source
from posledger.core.errors import InvalidInput
from posledger.core.events import PositionEvent
from posledger.core.model import PositionKey, aware_utc

_LONG, _SHORT, _LEDGER = "#2e7d32", "#c62828", "#1f3b73"
_EXCHANGE, _CORRECTION, _MUTED = "#ef6c00", "#6a1b9a", "#9e9e9e"
_DIAMOND = {"marker": "D", "s": 58, "zorder": 5, "linewidths": 1.6}


def plot_position(
    source: Source | Iterable[PositionEvent] | Sequence[HistoryRow],
    key: PositionKey | None = None,
    ax: Any = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """Plot one key's size over time: the ledger's size as a step line (long above zero, short
    below), the exchange's snapshots as diamonds (hollow while suspect), every correction as a
    vertical line labelled with its kind, and fills as ticks along the bottom. Returns the axes
    (a new figure when ``ax`` is None).

    ``since`` / ``until`` zoom the time axis (a correction minutes after an open held for hours
    is otherwise a sliver at the right edge); the title still counts the whole history."""
    pyplot = notebook_module("matplotlib.pyplot", "plot_position")
    rows = _rows_of(source, key)
    own_figure = ax is None
    if own_figure:
        _, ax = pyplot.subplots(figsize=(11, 5), layout="constrained")
    axes: Any = ax  # matplotlib's stubs do not take datetimes as coordinates
    line = _Line.of(rows, since, until)
    marks = _Marks.of(rows)
    _draw_size(axes, line)
    _draw_exchange(axes, marks)
    _draw_corrections(axes, marks.corrections, line)
    _draw_fills(axes, marks.fills)
    _frame(axes, line, marks)
    _legend(axes, line, marks, own_figure)
    return axes


def _rows_of(
    source: Source | Iterable[PositionEvent] | Sequence[HistoryRow], key: PositionKey | None
) -> list[HistoryRow]:
    """The history rows to plot: given as such, or read from ``source``."""
    values = list(source) if isinstance(source, list | tuple) else None
    if values is not None and values and all(isinstance(v, HistoryRow) for v in values):
        rows: list[HistoryRow] = values
    else:
        rows = history_rows(source, key)  # type: ignore[arg-type]
    if not rows:
        raise InvalidInput(f"{key}: no events to plot")
    return rows


@attrs.frozen
class _Line:
    """The ledger's size as a step line, and the window of time on show."""

    rows: list[HistoryRow]
    times: list[datetime]
    """When the line changes, then its right end."""
    sizes: list[float]
    start: datetime
    end: datetime

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @classmethod
    def of(cls, rows: list[HistoryRow], since: datetime | None, until: datetime | None) -> _Line:
        # Events are in stream order; a late execution carries its (earlier) exchange time. The
        # ledger's line changes when the event was recorded, i.e. not before anything preceding.
        times: list[datetime] = []
        for r in rows:
            times.append(max(r.time, times[-1]) if times else r.time)
        first = min(r.time for r in rows)
        last = times[-1]
        span = last - first if last > first else timedelta(minutes=1)
        right = last + span * 0.04
        start = aware_utc(since, "since") if since is not None else first - span * 0.02
        end = aware_utc(until, "until") if until is not None else right
        if end <= start:
            raise InvalidInput(f"nothing to show between {start} and {end}")
        times.append(max(right, end))
        sizes = [float(r.signed_size_after) for r in rows]
        sizes.append(sizes[-1])
        return cls(rows, times, sizes, start, end)


@attrs.frozen
class _Marks:
    """The rows marked on the plot, by what they show."""

    snapshots: list[HistoryRow]
    """Exchange snapshots (they widen the size axis)."""
    confirmed: list[HistoryRow]
    """Exchange sizes no longer in doubt: agreeing snapshots and corrections."""
    suspect: list[HistoryRow]
    corrections: list[HistoryRow]
    fills: list[HistoryRow]

    @classmethod
    def of(cls, rows: list[HistoryRow]) -> _Marks:
        snapshots = [r for r in rows if r.event == "ExchangeSnapshot" and r.evidence is not None]
        corrections = [r for r in rows if r.event == "Reconciled"]
        return cls(
            snapshots=snapshots,
            confirmed=[r for r in snapshots if r.reason != "suspect"]
            + [r for r in corrections if r.evidence is not None],
            suspect=[r for r in snapshots if r.reason == "suspect"],
            corrections=corrections,
            fills=[r for r in rows if r.event in ("Filled", "PartiallyFilled")],
        )


def _draw_size(axes: Any, line: _Line) -> None:
    """The ledger's size: green area above zero (long), red below (short), the step line."""
    axes.axhline(0, color=_MUTED, linewidth=0.8, zorder=1)
    for part, color in (
        ([max(v, 0.0) for v in line.sizes], _LONG),
        ([min(v, 0.0) for v in line.sizes], _SHORT),
    ):
        axes.fill_between(
            line.times, part, 0, step="post", color=color, alpha=0.10, linewidth=0, zorder=1
        )
    axes.step(line.times, line.sizes, where="post", color=_LEDGER, linewidth=2.2, zorder=3)


def _draw_exchange(axes: Any, marks: _Marks) -> None:
    """The exchange's sizes as diamonds: filled when confirmed, hollow with the count of
    confirmations while suspect."""
    if marks.confirmed:
        axes.scatter(
            [r.evidence.taken_at for r in marks.confirmed if r.evidence],
            [float(r.evidence.signed_size) for r in marks.confirmed if r.evidence],
            color=_EXCHANGE,
            edgecolors=_EXCHANGE,
            **_DIAMOND,
        )
    for r in marks.suspect:
        assert r.evidence is not None
        at = (r.evidence.taken_at, float(r.evidence.signed_size))
        axes.scatter([at[0]], [at[1]], facecolors="white", edgecolors=_EXCHANGE, **_DIAMOND)
        axes.annotate(
            f"{r.evidence.confirmations}",
            at,
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=_EXCHANGE,
        )


def _draw_corrections(axes: Any, corrections: list[HistoryRow], line: _Line) -> None:
    """A dashed line per correction in the window, labelled with its kind and before → after;
    labels alternate between two heights and turn left near the right edge."""
    label_y = 0.97
    for r in corrections:
        if not line.start <= r.time <= line.end:
            continue
        axes.axvline(r.time, color=_CORRECTION, linestyle="--", linewidth=1.3, zorder=2)
        before, after = signed_quantity(r.signed_size_before), signed_quantity(r.signed_size_after)
        near_end = r.time > line.start + line.span * 0.8
        axes.annotate(
            f"{r.reason}\n{before} → {after}",
            (r.time, label_y),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if near_end else 4, 0),
            textcoords="offset points",
            ha="right" if near_end else "left",
            va="top",
            fontsize=8.5,
            color=_CORRECTION,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": _CORRECTION, "lw": 0.8},
            zorder=6,
        )
        label_y = 0.80 if label_y > 0.9 else 0.97


def _draw_fills(axes: Any, fills: list[HistoryRow]) -> None:
    """Fills as ticks along the bottom: green buys, red sells, grey absorbed ones."""
    transform = axes.get_xaxis_transform()
    marks = (
        ([r.time for r in fills if r.side == "buy" and not r.absorbed], _LONG),
        ([r.time for r in fills if r.side == "sell" and not r.absorbed], _SHORT),
        ([r.time for r in fills if r.absorbed], _MUTED),
    )
    for ticks, color in marks:
        if ticks:
            axes.plot(
                ticks,
                [0.025] * len(ticks),
                linestyle="none",
                marker="|",
                markersize=11,
                markeredgewidth=1.6,
                color=color,
                transform=transform,
                zorder=4,
            )


def _frame(axes: Any, line: _Line, marks: _Marks) -> None:
    """Limits (room above for correction labels), a date axis, a light grid, labels, title."""
    low, high = min(min(line.sizes), 0.0), max(max(line.sizes), 0.0)
    for r in marks.snapshots:
        if r.evidence is not None:
            low = min(low, float(r.evidence.signed_size))
            high = max(high, float(r.evidence.signed_size))
    pad = (high - low) * 0.12 or 1.0
    axes.set_ylim(low - pad * 1.6, high + pad * 3.0 if marks.corrections else high + pad)
    axes.set_xlim(line.start, line.end)
    mdates = importlib.import_module("matplotlib.dates")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.grid(True, axis="y", color="#e0e0e0", linewidth=0.8)
    axes.set_axisbelow(True)
    for spine in ("top", "right"):
        axes.spines[spine].set_visible(False)
    axes.set_xlabel("time (UTC)")
    axes.set_ylabel("position size  (+ long / − short)")
    key, last = line.rows[-1].key, line.rows[-1]
    axes.set_title(
        f"{key.symbol} #{key.idx}   {key.venue} / {key.account} / {key.category}"
        f"{f'   book {key.book}' if key.book else ''}\n"
        f"now {last.status} {signed_quantity(last.signed_size_after)} after "
        f"{counted(len(line.rows), 'event')}, {counted(len(marks.fills), 'fill')}, "
        f"{counted(len(marks.corrections), 'correction')}",
        loc="left",
        fontsize=11,
    )


def _legend(axes: Any, line: _Line, marks: _Marks, own_figure: bool) -> None:
    """A legend of what is drawn: beside the plot in its own figure, inside someone else's."""
    line_2d = importlib.import_module("matplotlib.lines").Line2D
    patch = importlib.import_module("matplotlib.patches").Patch
    handles: list[Any] = [line_2d([], [], color=_LEDGER, linewidth=2.2, label="ledger size")]
    if any(v > 0 for v in line.sizes):
        handles.append(patch(facecolor=_LONG, alpha=0.25, label="long"))
    if any(v < 0 for v in line.sizes):
        handles.append(patch(facecolor=_SHORT, alpha=0.25, label="short"))
    diamond = {"linestyle": "none", "marker": "D"}
    if marks.confirmed:
        handles.append(line_2d([], [], color=_EXCHANGE, label="exchange", **diamond))
    if marks.suspect:
        handles.append(
            line_2d(
                [],
                [],
                markerfacecolor="white",
                markeredgecolor=_EXCHANGE,
                label="exchange, suspect (n = confirmations)",
                **diamond,
            )
        )
    if marks.corrections:
        handles.append(
            line_2d([], [], color=_CORRECTION, linestyle="--", label="correction (Reconciled)")
        )
    if marks.fills:
        handles.append(
            line_2d(
                [],
                [],
                linestyle="none",
                marker="|",
                markersize=10,
                markeredgewidth=1.6,
                color=_MUTED,
                label="fills (green buy, red sell)",
            )
        )
    if own_figure:  # room to the right of the plot
        axes.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9
        )
    else:  # someone else's layout: stay inside the axes
        axes.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)
