"""Models -> what the dashboard templates show: formatted cells, progress and chart geometry.

Everything here is plain data; the templates only lay it out (and Jinja escapes every value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import formatting
from ..models import ClientRun, JobRun, Status
from ..schema import CLIENTS_WITH_ERRORS, ERROR_DETAILS
from .charts import Chart, bar_chart, shorten

__all__ = [
    "CLIENT_COLUMNS",
    "ERROR_FIELD",
    "NAME_CHARS",
    "PAGE_SIZE",
    "ClientRowView",
    "JobView",
    "RunRowView",
    "StatusCount",
    "by_attention",
    "client_row",
    "error_of",
    "fmt_duration",
    "fmt_number",
    "fmt_when",
    "job_view",
    "reason_of",
    "run_row",
    "scored",
    "status_class",
]

#: The per-client number columns of the run page: (heading, Airtable field).
CLIENT_COLUMNS = formatting.CLIENT_COLUMNS
TOKENS = "Total Tokens"
LEADS = "Leads Processed"
PROFILES_SCORED = "Profiles Successfully Scored"
POSTS_SCORED = "Posts Successfully Scored"

#: The field a client run's failure reason is kept in (``ClientRun.error``).
ERROR_FIELD = ERROR_DETAILS
#: Client rows on one page of the run page's table.
PAGE_SIZE = 100

#: Longest client ID the run table shows whole; longer ones lose their middle (in full on hover
#: and focus), as the charts' labels do, so that names sharing a long prefix stay apart.
NAME_CHARS = 26

#: What an empty cell shows (an en dash).
EMPTY = "\u2013"

#: The run page lists clients needing attention first: failed, running, with errors, the rest.
_ATTENTION = {Status.FAILED: 0, Status.RUNNING: 1, Status.COMPLETED_WITH_ERRORS: 2}

_STATUS_CLASSES = {
    Status.RUNNING: "running",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.NO_LEADS: "no-leads",
    Status.COMPLETED_WITH_ERRORS: "with-errors",
}


def status_class(status: Status) -> str:
    """The CSS modifier of a status badge: ``running``, ``completed``, ``failed``..."""
    return _STATUS_CLASSES.get(status, "running")


# -- cells -------------------------------------------------------------------------------------


def fmt_when(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, an en dash for none."""
    return formatting.when(value, EMPTY)


def fmt_duration(start: datetime | None, end: datetime | None, status: Status, now: datetime) -> str:
    """End minus start (two units: ``1h 02m``); for a run still Running, the time since it started."""
    return formatting.duration(start, end, status, now, empty=EMPTY, units=2)


def by_attention(clients: Iterable[ClientRun]) -> list[ClientRun]:
    """Failed clients first, then running ones, then the rest; by client ID within each."""
    return sorted(clients, key=lambda c: (_ATTENTION.get(c.status, 3), c.client_id.casefold(), c.client_id))


def error_of(client: ClientRun) -> str:
    """The client run's failure reason (its ``Error Details``), or ''."""
    return client.error or ""


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return value


def fmt_number(value: Any) -> str:
    """Thousands separators; missing counts are 0; other values as text."""
    return formatting.number(value, EMPTY)


# -- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRowView:
    """One line of the runs list."""

    run_id: str
    status: str
    status_class: str
    start: str
    duration: str
    clients_done: int
    clients_total: int
    failed: str
    leads: str
    tokens: str
    notes: str


def run_row(job: JobRun, clients_done: int, now: datetime) -> RunRowView:
    return RunRowView(
        run_id=job.run_id,
        status=job.status.value,
        status_class=status_class(job.status),
        start=fmt_when(job.start_time),
        duration=fmt_duration(job.start_time, job.end_time, job.status, now),
        clients_done=clients_done,
        clients_total=len(job.client_ids),
        failed=fmt_number(job.metrics.get(CLIENTS_WITH_ERRORS)),
        leads=fmt_number(job.metrics.get(LEADS)),
        tokens=fmt_number(job.metrics.get(TOKENS)),
        notes=job.notes.splitlines()[0] if job.notes else "",
    )


@dataclass(frozen=True)
class ClientRowView:
    """One line of a run's client table."""

    client_id: str
    #: The client ID as the table shows it: middle elided past NAME_CHARS ('' when whole).
    short_id: str
    status: str
    status_class: str
    start: str
    start_title: str
    duration: str
    numbers: tuple[str, ...]
    notes: str
    error: str
    #: Why it failed, shown under its status: the error, else a Failed run's latest note.
    reason: str
    #: The Progress Log, shown with the Error Details and notes under the table.
    progress_log: str = ""

    @property
    def has_details(self) -> bool:
        """An error or notes to read (every client has a Progress Log: the service writes one)."""
        return bool(self.error or self.notes)


def reason_of(client: ClientRun) -> str:
    """The error, or for a Failed client run the last line of its notes; '' otherwise."""
    error = error_of(client)
    if error or client.status is not Status.FAILED:
        return error
    lines = client.notes.strip().splitlines()
    return lines[-1] if lines else ""


def _short_id(client_id: str) -> str:
    short = shorten(client_id, NAME_CHARS)
    return short if short != client_id else ""


def client_row(client: ClientRun, now: datetime, day: datetime | None = None) -> ClientRowView:
    """The client's table row; its start shows the time alone when it is on ``day``'s date."""
    start = fmt_when(client.start_time)
    same_day = day is not None and client.start_time is not None and start[:10] == fmt_when(day)[:10]
    return ClientRowView(
        start_title=start,
        client_id=client.client_id,
        short_id=_short_id(client.client_id),
        error=error_of(client),
        reason=reason_of(client),
        status=client.status.value,
        status_class=status_class(client.status),
        start=start[11:] if same_day else start,
        duration=fmt_duration(client.start_time, client.end_time, client.status, now),
        numbers=tuple(fmt_number(client.metrics.get(field)) for _, field in CLIENT_COLUMNS),
        notes=client.notes,
        progress_log=client.progress_log,
    )


def _chart(
    chart_id: str, title: str, unit: str, clients: Sequence[ClientRun], value: Callable[[ClientRun], float]
) -> Chart:
    rows = [(c.client_id, value(c), status_class(c.status)) for c in clients]
    return bar_chart(chart_id, title, unit, rows, fmt_number)


def _tokens(client: ClientRun) -> float:
    return _as_number(client.metrics.get(TOKENS))


def scored(client: ClientRun) -> float:
    """Profiles scored + posts scored."""
    return _as_number(client.metrics.get(PROFILES_SCORED)) + _as_number(client.metrics.get(POSTS_SCORED))


# -- the run page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusCount:
    """One status filter of the run page's table: how many clients have it."""

    status: str
    status_class: str
    count: int


@dataclass(frozen=True)
class JobView:
    """Everything the run page shows."""

    run_id: str
    status: str
    status_class: str
    running: bool
    start: str
    end: str
    duration: str
    notes: str
    clients_done: int
    clients_total: int
    clients_failed: int
    leads: str
    tokens: str
    scored: str
    #: The clients of the requested page, failed and running first.
    clients: tuple[ClientRowView, ...]
    page: int
    pages: int
    first: int
    status_counts: tuple[StatusCount, ...]
    has_error: bool
    totals: tuple[str, ...]
    aggregates: tuple[tuple[str, str], ...]
    charts: tuple[Chart, ...]


def _sum(clients: Iterable[ClientRun], field: str) -> float:
    return sum(_as_number(c.metrics.get(field)) for c in clients)


def job_view(job: JobRun, clients: Sequence[ClientRun], now: datetime, page: int = 1) -> JobView:
    """The run page; ``page`` (from 1, clamped) picks PAGE_SIZE clients in attention order."""
    done = sum(1 for c in clients if c.status is not Status.RUNNING)
    failed = sum(1 for c in clients if c.status is Status.FAILED)
    metrics: Mapping[str, Any] = job.metrics
    pages = max(1, -(-len(clients) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    first = (page - 1) * PAGE_SIZE
    shown = by_attention(clients)[first : first + PAGE_SIZE]
    counts = {s: sum(1 for c in clients if c.status is s) for s in Status}
    return JobView(
        run_id=job.run_id,
        status=job.status.value,
        status_class=status_class(job.status),
        running=job.status is Status.RUNNING,
        start=fmt_when(job.start_time),
        end=fmt_when(job.end_time),
        duration=fmt_duration(job.start_time, job.end_time, job.status, now),
        notes=job.notes,
        clients_done=done,
        clients_total=len(clients),
        clients_failed=failed,
        leads=fmt_number(metrics.get(LEADS)),
        tokens=fmt_number(metrics.get(TOKENS)),
        scored=fmt_number(sum(scored(c) for c in clients)),
        clients=tuple(client_row(c, now, job.start_time) for c in shown),
        page=page,
        pages=pages,
        first=first,
        status_counts=tuple(StatusCount(s.value, status_class(s), n) for s, n in counts.items() if n),
        has_error=any(error_of(c) for c in clients),
        totals=tuple(fmt_number(_sum(clients, field)) for _, field in CLIENT_COLUMNS),
        aggregates=tuple((name, fmt_number(value)) for name, value in metrics.items()),
        charts=(
            _chart("chart-tokens", "Tokens per client", "tokens", clients, _tokens),
            _chart("chart-scored", "Items scored per client", "profiles + posts", clients, scored),
        ),
    )
