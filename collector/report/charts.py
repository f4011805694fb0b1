"""Charts as inline SVG, drawn with matplotlib (Agg backend, no pyplot global state).

Output is deterministic (same data, same bytes): fixed ``svg.hashsalt``, no date or
creator metadata, text kept as ``<text>`` (``svg.fonttype: none``) so it stays
searchable and small. Element ids get a per-chart prefix, because several SVGs live in
one HTML document and matplotlib's ids (``axes_1``, clip paths) would collide.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
SEVERITY_COLORS = {
    "low": "#7f9fbf",
    "medium": "#e0a030",
    "high": "#e05a2b",
    "critical": "#a0151c",
    "integrity": "#6a3d9a",
}
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_ID = re.compile(r'\bid="([^"]+)"')


def _svg(fig: Figure, chart_id: str, title: str) -> str:
    buffer = io.StringIO()
    salted: dict[Any, Any] = {**_RC, "svg.hashsalt": chart_id}
    with matplotlib.rc_context(salted):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    ids = set(_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{chart_id}-{old}"
        text = text.replace(f'id="{old}"', f'id="{new}"')
        text = text.replace(f"url(#{old})", f"url(#{new})")
        text = text.replace(f'href="#{old}"', f'href="#{new}"')
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return text.replace(
        "<svg ", f'<svg class="chart" role="img" aria-label="{label}" data-chart="{chart_id}" ', 1
    )


def _figure(height: float = 3.0) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(10, height), dpi=96, layout="constrained")


def _day_ticks(ax: Axes, days: Sequence[datetime]) -> None:
    step = max(1, len(days) // 12)
    positions = list(range(0, len(days), step))
    ax.set_xticks(positions)
    ax.set_xticklabels([days[i].strftime("%m-%d") for i in positions])
    ax.set_xlim(-0.6, len(days) - 0.4)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _empty(ax: Axes, message: str) -> None:
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#666666",
    )


def stacked_days(
    chart_id: str,
    title: str,
    days: Sequence[datetime],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    colors: Mapping[str, str] | None = None,
) -> str:
    """One bar per day, stacked by series (sources, severities...)."""
    with matplotlib.rc_context(_RC):
        fig = _figure()
        ax = fig.add_subplot()
        bottom = [0.0] * len(days)
        xs = list(range(len(days)))
        for number, (name, values) in enumerate(series.items()):
            color = (colors or {}).get(name, PALETTE[number % len(PALETTE)])
            ax.bar(xs, values, bottom=bottom, label=name, color=color, width=0.85)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        if not any(bottom):
            _empty(ax, "none in the period")
        elif len(series) > 1:
            ax.legend(loc="upper left", fontsize=8, ncols=min(len(series), 4), framealpha=0.8)
        ax.set_title(title, loc="left")
        ax.set_ylabel(ylabel)
        _day_ticks(ax, days)
        return _svg(fig, chart_id, title)


def day_line(
    chart_id: str,
    title: str,
    days: Sequence[datetime],
    values: Sequence[float],
    *,
    ylabel: str,
    color: str = PALETTE[3],
) -> str:
    """One value per day as bars with a line over them (trends)."""
    with matplotlib.rc_context(_RC):
        fig = _figure(2.6)
        ax = fig.add_subplot()
        xs = list(range(len(days)))
        ax.bar(xs, values, color=color, alpha=0.35, width=0.85)
        ax.plot(xs, values, color=color, linewidth=1.4)
        if not any(values):
            _empty(ax, "none in the period")
        ax.set_title(title, loc="left")
        ax.set_ylabel(ylabel)
        _day_ticks(ax, days)
        return _svg(fig, chart_id, title)


def hbars(
    chart_id: str, title: str, labels: Sequence[str], values: Sequence[float], *, xlabel: str
) -> str:
    """Horizontal bars, largest first (top-N lists)."""
    with matplotlib.rc_context(_RC):
        fig = _figure(max(1.6, 0.32 * len(labels) + 0.9))
        ax = fig.add_subplot()
        ys = list(range(len(labels)))
        ax.barh(ys, values, color=PALETTE[0])
        ax.set_yticks(ys)
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        for y, value in zip(ys, values, strict=True):
            ax.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
        if not labels:
            _empty(ax, "none in the period")
        ax.set_title(title, loc="left")
        ax.set_xlabel(xlabel)
        return _svg(fig, chart_id, title)
