"""Across runs: the trend charts of the runs list and the history of one client (plain data)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from .. import formatting
from ..models import ClientRun, JobRun, Status
from ..schema import CLIENTS_WITH_ERRORS
from .charts import TrendChart, trend_chart
from .present import (
    LEADS,
    POSTS_SCORED,
    PROFILES_SCORED,
    TOKENS,
    error_of,
    fmt_duration,
    fmt_number,
    fmt_when,
    scored,
    status_class,
)

__all__ = ["ClientHistory", "ClientHistoryRow", "client_history", "run_trends"]


def _seconds(start: datetime | None, end: datetime | None, status: Status, now: datetime) -> float:
    if start is None:
        return 0
    stop = end if end is not None else (now if status is Status.RUNNING else start)
    return max((stop - start).total_seconds(), 0)


def _number(value: object) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _span(seconds: float) -> str:
    return formatting.span(seconds, units=2)


def run_trends(jobs: Sequence[JobRun], now: datetime, href: Callable[[str], str]) -> tuple[TrendChart, ...]:
    """Tokens, items scored, failed clients and duration per run; ``jobs`` newest first."""
    oldest_first = list(reversed(jobs))

    def points(value: Callable[[JobRun], float]) -> list[tuple[str, float, str, str]]:
        return [(j.run_id, value(j), status_class(j.status), href(j.run_id)) for j in oldest_first]

    def items(job: JobRun) -> float:
        return _number(job.metrics.get(PROFILES_SCORED)) + _number(job.metrics.get(POSTS_SCORED))

    return (
        trend_chart("trend-tokens", "Tokens", points(lambda j: _number(j.metrics.get(TOKENS))), fmt_number),
        trend_chart("trend-scored", "Items scored", points(items), fmt_number),
        trend_chart(
            "trend-failed",
            "Clients failed",
            points(lambda j: _number(j.metrics.get(CLIENTS_WITH_ERRORS))),
            fmt_number,
        ),
        trend_chart(
            "trend-duration",
            "Duration",
            points(lambda j: _seconds(j.start_time, j.end_time, j.status, now)),
            _span,
        ),
    )


@dataclass(frozen=True)
class ClientHistoryRow:
    """One run of the client, as its page lists it."""

    run_id: str
    client_run_id: str
    status: str
    status_class: str
    start: str
    duration: str
    leads: str
    scored: str
    tokens: str
    error: str
    notes: str
    progress_log: str

    @property
    def has_details(self) -> bool:
        return bool(self.error or self.notes or self.progress_log)


@dataclass(frozen=True)
class ClientHistory:
    """Everything the client page shows."""

    client_id: str
    rows: tuple[ClientHistoryRow, ...]
    failed: int
    tokens: str
    scored: str
    has_error: bool
    charts: tuple[TrendChart, ...]


def client_history(
    client_id: str, runs: Sequence[ClientRun], now: datetime, href: Callable[[str], str]
) -> ClientHistory:
    """The client's runs, newest first (as given), with trends of tokens, items and duration."""
    rows = tuple(
        ClientHistoryRow(
            run_id=c.run_id,
            client_run_id=c.client_run_id,
            status=c.status.value,
            status_class=status_class(c.status),
            start=fmt_when(c.start_time),
            duration=fmt_duration(c.start_time, c.end_time, c.status, now),
            leads=fmt_number(c.metrics.get(LEADS)),
            scored=fmt_number(scored(c)),
            tokens=fmt_number(c.metrics.get(TOKENS)),
            error=error_of(c),
            notes=c.notes,
            progress_log=c.progress_log,
        )
        for c in runs
    )
    oldest_first = list(reversed(runs))

    def points(value: Callable[[ClientRun], float]) -> list[tuple[str, float, str, str]]:
        return [(c.run_id, value(c), status_class(c.status), href(c.run_id)) for c in oldest_first]

    return ClientHistory(
        client_id=client_id,
        rows=rows,
        failed=sum(1 for c in runs if c.status is Status.FAILED),
        tokens=fmt_number(sum(_number(c.metrics.get(TOKENS)) for c in runs)),
        scored=fmt_number(sum(scored(c) for c in runs)),
        has_error=any(r.error for r in rows),
        charts=(
            trend_chart(
                "client-tokens", "Tokens", points(lambda c: _number(c.metrics.get(TOKENS))), fmt_number
            ),
            trend_chart("client-scored", "Items scored", points(scored), fmt_number),
            trend_chart(
                "client-duration",
                "Duration",
                points(lambda c: _seconds(c.start_time, c.end_time, c.status, now)),
                _span,
            ),
        ),
    )
