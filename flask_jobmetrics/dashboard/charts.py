"""Horizontal bar charts laid out for an inline ``<svg>`` (plain data; the template draws it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bar", "Chart", "bar_chart"]


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart (coordinates in the SVG's user units)."""

    label: str
    value: float
    value_text: str
    y: float
    width: float
    status_class: str


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart, one row per client, laid out for an inline ``<svg>``."""

    chart_id: str
    title: str
    unit: str
    total_text: str
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_width: int
    bar_area: int
    row_height: int
    bar_height: int


_CHART_WIDTH = 560
_LABEL_WIDTH = 130
_VALUE_WIDTH = 80
_ROW = 24
_BAR = 16


def bar_chart(
    chart_id: str,
    title: str,
    unit: str,
    rows: Sequence[tuple[str, float, str]],
    fmt: Callable[[float], str],
) -> Chart:
    """Rows of (label, value, CSS status class), bars scaled to the largest value.

    A zero value gets a row but no bar (the template draws ``rect.bar`` only for values > 0).
    """
    top = max((value for _, value, _ in rows), default=0) or 1
    area = _CHART_WIDTH - _LABEL_WIDTH - _VALUE_WIDTH
    bars = tuple(
        Bar(
            label=label,
            value=value,
            value_text=fmt(value),
            y=i * _ROW,
            width=round(area * value / top, 1),
            status_class=css,
        )
        for i, (label, value, css) in enumerate(rows)
    )
    return Chart(
        chart_id=chart_id,
        title=title,
        unit=unit,
        total_text=fmt(sum(value for _, value, _ in rows)),
        bars=bars,
        width=_CHART_WIDTH,
        height=max(len(bars), 1) * _ROW,
        label_width=_LABEL_WIDTH,
        bar_area=area,
        row_height=_ROW,
        bar_height=_BAR,
    )
