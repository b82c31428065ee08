"""Charts laid out for inline ``<svg>`` (plain data; the templates draw them).

Positions across the chart are percentages, heights and text are pixels: a chart fills its
container at any width and its text keeps its size (a phone does not shrink the labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bar", "Chart", "Column", "TOP_BARS", "TrendChart", "bar_chart", "shorten", "trend_chart"]

#: Clients drawn one by one in a bar chart; the rest share one "others" bar.
TOP_BARS = 10
#: Longest label drawn before the middle is elided (the full name is in the bar's title).
LABEL_CHARS = 30

_ROW = 34  # a label line and a bar under it
_BAR = 10
_TREND_HEIGHT = 72


def shorten(label: str, width: int = LABEL_CHARS) -> str:
    """Elide the middle, keeping both ends: ``A-Very-Long-T…Holdings-031`` stays distinct."""
    if len(label) <= width:
        return label
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{label[:head]}\u2026{label[-tail:]}"


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart: a label line, then the bar."""

    #: The full name, the drawn label (middle elided when long) and the hover text.
    name: str
    label: str
    title: str
    value: float
    value_text: str
    #: The bar's width, percent of the chart's width (0 draws no bar: a zero, or the others' sum).
    percent: float
    status_class: str
    y: int


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart of the top clients and one bar for all others."""

    chart_id: str
    title: str
    unit: str
    total_text: str
    bars: tuple[Bar, ...]
    height: int
    row_height: int
    bar_height: int
    #: Clients drawn individually, and all clients.
    shown: int
    count: int


def bar_chart(
    chart_id: str,
    title: str,
    unit: str,
    rows: Sequence[tuple[str, float, str]],
    fmt: Callable[[float], str],
    *,
    top: int = TOP_BARS,
) -> Chart:
    """Rows of (label, value, CSS status class): the ``top`` largest, then "N others" summed.

    Bars are scaled to the largest value; a zero value gets a row but no bar, and so does the
    "others" row (its sum and share are written out).
    """
    ranked = sorted(rows, key=lambda row: (-row[1], row[0].casefold(), row[0]))
    peak = max((value for _, value, _ in ranked[:top]), default=0) or 1
    bars = [
        Bar(
            name=label,
            label=shorten(label),
            title=f"{label}: {fmt(value)} {unit}",
            value=value,
            value_text=fmt(value),
            percent=round(100 * value / peak, 2) if value > 0 else 0,
            status_class=css,
            y=i * _ROW,
        )
        for i, (label, value, css) in enumerate(ranked[:top])
    ]
    rest = ranked[top:]
    if rest:  # a sum of many is no bar next to single clients: its value and share, no bar
        label = f"{len(rest)} other client{'s' if len(rest) != 1 else ''}"
        value = sum(value for _, value, _ in rest)
        whole = sum(value for _, value, _ in rows) or 1
        share = f"{fmt(value)} ({100 * value / whole:.0f} %)"
        bars.append(
            Bar(label, label, f"{label}: {share} {unit}", value, share, 0, "others", len(bars) * _ROW)
        )
    return Chart(
        chart_id=chart_id,
        title=title,
        unit=unit,
        total_text=fmt(sum(value for _, value, _ in rows)),
        bars=tuple(bars),
        height=max(len(bars), 1) * _ROW,
        row_height=_ROW,
        bar_height=_BAR,
        shown=min(len(rows), top),
        count=len(rows),
    )


@dataclass(frozen=True)
class Column:
    """One run in a trend chart (oldest on the left)."""

    title: str
    href: str
    value: float
    #: Left edge and width, percent of the chart's width; top edge and height in pixels.
    x: float
    width: float
    y: float
    height: float
    status_class: str


@dataclass(frozen=True)
class TrendChart:
    """A small column chart: one column per run, scaled to the largest value."""

    chart_id: str
    title: str
    latest_text: str
    peak_text: str
    columns: tuple[Column, ...]
    height: int


def trend_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float, str, str]],
    fmt: Callable[[float], str],
) -> TrendChart:
    """Points of (label, value, CSS status class, link), oldest first."""
    peak = max((value for _, value, _, _ in points), default=0)
    step = 100 / max(len(points), 1)
    gap = min(step * 0.2, 1.0)
    columns = []
    for i, (label, value, css, href) in enumerate(points):
        height = round((_TREND_HEIGHT - 2) * value / peak, 1) if peak > 0 and value > 0 else 0
        height = max(height, 1.5) if value > 0 else 0
        columns.append(
            Column(
                title=f"{label}: {fmt(value)}",
                href=href,
                value=value,
                x=round(i * step + gap / 2, 3),
                width=round(step - gap, 3),
                y=round(_TREND_HEIGHT - height, 1),
                height=height,
                status_class=css,
            )
        )
    return TrendChart(
        chart_id=chart_id,
        title=title,
        latest_text=fmt(points[-1][1]) if points else "\u2013",
        peak_text=fmt(peak),
        columns=tuple(columns),
        height=_TREND_HEIGHT,
    )
