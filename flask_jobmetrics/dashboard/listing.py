"""The runs list, read from the job rows: whatever the number of runs, one read of the job
rows and at most one bulk read of client rows.

A completed job's row holds its totals (its clients were closed when it completed), so it is
shown from the row alone. The running ones have no totals stored yet: their client rows come
in one ``Store.list_clients_of`` call, with this process's buffered updates applied, and are
totalled as ``MetricsService.get_job_run`` totals them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..models import JobRun, Status
from ..rules import aggregate_clients
from ..schema import START_TIME, STATUS
from ..service import MetricsService
from ..stores.base import ClientRow, JobRow
from ..views import job_view, with_pending
from .blueprint import MAX_LIMIT, started_within

__all__ = ["ListedRun", "list_runs"]


@dataclass(frozen=True)
class ListedRun:
    """A job run as the runs list shows it: the run and how many of its clients are done."""

    job: JobRun
    #: Clients no longer ``Running`` (all of them once the job completed).
    clients_done: int


def list_runs(
    service: MetricsService,
    *,
    limit: int,
    status: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> list[ListedRun]:
    """The newest ``limit`` job runs (with ``status``, started from ``since`` to ``until``)."""
    if since is None and until is None:
        rows = service.store.list_jobs(limit=limit, status=status)
    else:  # the store lists newest first: read the most a page may look at, keep the dates asked
        found = service.store.list_jobs(limit=MAX_LIMIT, status=status)
        rows = [row for row in found if started_within(row.fields.get(START_TIME), since, until)][:limit]
    running = [row.run_id for row in rows if not row.completed]
    clients = service.store.list_clients_of(running) if running else {}
    return [_listed(service, row, clients.get(row.run_id, ())) for row in rows]


def _listed(service: MetricsService, row: JobRow, stored: Sequence[ClientRow]) -> ListedRun:
    run, buffer = row.run_id, service.buffer
    client_ids = set(row.client_ids) | buffer.clients_of(run)
    if row.completed:
        return ListedRun(job_view(run, row.fields, client_ids), len(client_ids))
    by_client = {c.client_id: c.fields for c in stored}
    fields: list[dict[str, Any]] = [
        with_pending(by_client.get(c), buffer.pending(run, c)) for c in sorted(client_ids)
    ]
    done = sum(1 for f in fields if f.get(STATUS, Status.RUNNING.value) != Status.RUNNING.value)
    return ListedRun(job_view(run, row.fields, client_ids, aggregate_clients(service.registry, fields)), done)
