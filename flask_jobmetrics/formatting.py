"""How times, durations and numbers are shown to people (CLI tables, dashboard cells)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .status import Status

__all__ = ["CLIENT_COLUMNS", "duration", "number", "shorten", "span", "when"]

#: Longest text of a value shown in a rejection's reason or a log line.
SHOWN_LENGTH = 80

#: The per-client numbers shown in tables (heading, Airtable field), CLI and dashboard alike.
CLIENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Leads", "Leads Processed"),
    ("Profiles examined", "Profiles Examined for Scoring"),
    ("Profiles scored", "Profiles Successfully Scored"),
    ("Posts harvested", "Total Posts Harvested"),
    ("Posts examined", "Posts Examined for Scoring"),
    ("Posts scored", "Posts Successfully Scored"),
    ("Tokens", "Total Tokens"),
)


def when(value: datetime | None, empty: str = "-") -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, ``empty`` for none."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value else empty


def span(seconds: float, *, units: int = 4) -> str:
    """``45s``, ``3m 05s``, ``1h 02m 03s``, ``2d 04h 00m 00s``; at most ``units`` units.

    Under a second, tenths (``0.4s``), and under a tenth milliseconds (``35ms``, ``<1ms``), so
    a sub-second run does not read as no time at all; ``0s`` is none."""
    if 0 < seconds < 1:
        if seconds < 0.095:
            ms = round(seconds * 1000)
            return f"{ms}ms" if ms >= 1 else "<1ms"
        tenths = round(seconds, 1)
        return f"{tenths:.1f}s" if tenths < 1 else "1s"
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    first, *rest_parts = parts[:units]
    return " ".join([f"{first[0]}{first[1]}", *(f"{n:02d}{unit}" for n, unit in rest_parts)])


def duration(
    start: datetime | None,
    end: datetime | None,
    status: Status,
    now: datetime,
    *,
    empty: str = "-",
    units: int = 4,
) -> str:
    """End minus start; for a run still Running, the time since it started."""
    if start is None:
        return empty
    if end is None:
        return span((now - start).total_seconds(), units=units) if status is Status.RUNNING else empty
    return span((end - start).total_seconds(), units=units)


def number(value: Any, empty: str = "-") -> str:
    """Thousands separators; missing counts are 0; datetimes as ``when``."""
    if value is None:
        return "0"
    if isinstance(value, datetime):
        return when(value, empty)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def shorten(value: Any, limit: int = SHOWN_LENGTH, *, quote: bool = True) -> str:
    """``repr(value)`` (``str`` with ``quote=False``) cut to ``limit`` characters, for messages."""
    try:
        text = repr(value) if quote else str(value)
    except Exception:  # a broken __repr__ must not turn a rejection into a crash
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
