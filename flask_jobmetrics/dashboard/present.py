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
from ..schema import CLIENTS_WITH_ERRORS
from .charts import Chart, bar_chart

__all__ = [
    "CLIENT_COLUMNS",
    "ClientRowView",
    "JobView",
    "RunRowView",
    "client_row",
    "fmt_duration",
    "fmt_number",
    "fmt_when",
    "job_view",
    "run_row",
    "status_class",
]

#: The per-client number columns of the run page: (heading, Airtable field).
CLIENT_COLUMNS = formatting.CLIENT_COLUMNS
TOKENS = "Total Tokens"
LEADS = "Leads Processed"
PROFILES_SCORED = "Profiles Successfully Scored"
POSTS_SCORED = "Posts Successfully Scored"

#: What an empty cell shows (an en dash).
EMPTY = "\u2013"

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
    status: str
    status_class: str
    start: str
    duration: str
    numbers: tuple[str, ...]
    notes: str
    #: Error Details ("" when none) and the Progress Log, shown under the table.
    error: str = ""
    progress_log: str = ""

    @property
    def has_details(self) -> bool:
        return bool(self.error or self.notes or self.progress_log)


def client_row(client: ClientRun, now: datetime) -> ClientRowView:
    return ClientRowView(
        client_id=client.client_id,
        status=client.status.value,
        status_class=status_class(client.status),
        start=fmt_when(client.start_time),
        duration=fmt_duration(client.start_time, client.end_time, client.status, now),
        numbers=tuple(fmt_number(client.metrics.get(field)) for _, field in CLIENT_COLUMNS),
        notes=client.notes,
        error=client.error or "",
        progress_log=client.progress_log,
    )


def _chart(
    chart_id: str, title: str, unit: str, clients: Sequence[ClientRun], value: Callable[[ClientRun], float]
) -> Chart:
    rows = [(c.client_id, value(c), status_class(c.status)) for c in clients]
    return bar_chart(chart_id, title, unit, rows, fmt_number)


def _tokens(client: ClientRun) -> float:
    return _as_number(client.metrics.get(TOKENS))


def _scored(client: ClientRun) -> float:
    return _as_number(client.metrics.get(PROFILES_SCORED)) + _as_number(client.metrics.get(POSTS_SCORED))


# -- the run page ------------------------------------------------------------------------------


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
    clients: tuple[ClientRowView, ...]
    totals: tuple[str, ...]
    aggregates: tuple[tuple[str, str], ...]
    charts: tuple[Chart, ...]


def _sum(clients: Iterable[ClientRun], field: str) -> float:
    return sum(_as_number(c.metrics.get(field)) for c in clients)


def job_view(job: JobRun, clients: Sequence[ClientRun], now: datetime) -> JobView:
    done = sum(1 for c in clients if c.status is not Status.RUNNING)
    failed = sum(1 for c in clients if c.status is Status.FAILED)
    metrics: Mapping[str, Any] = job.metrics
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
        scored=fmt_number(sum(_scored(c) for c in clients)),
        clients=tuple(client_row(c, now) for c in clients),
        totals=tuple(fmt_number(_sum(clients, field)) for _, field in CLIENT_COLUMNS),
        aggregates=tuple((name, fmt_number(value)) for name, value in metrics.items()),
        charts=(
            _chart("chart-tokens", "Tokens per client", "tokens", clients, _tokens),
            _chart("chart-scored", "Items scored per client", "profiles + posts", clients, _scored),
        ),
    )
