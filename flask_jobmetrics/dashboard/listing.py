"""The dashboard's reads of the store: a fixed number of store calls per page, whatever the
number of runs or clients.

The runs list is read from the job rows: one read of them and at most one bulk read of client
rows. A completed job's row holds its totals (its clients were closed when it completed), so
it is shown from the row alone. The running ones have no totals stored yet: their client rows
come in one ``Store.list_clients_of`` call, with this process's buffered updates applied, and
are totalled as ``MetricsService.get_job_run`` totals them.

A run page reads the job row and the run's client rows once each (``read_run``); a client
page reads the job rows and the client's row in each of them in one ``Store.get_clients_of``
call (``client_runs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..models import ClientRun, JobRun, Status
from ..rules import aggregate_clients
from ..schema import START_TIME, STATUS
from ..service import MetricsService
from ..stores.base import ClientRow, JobRow
from ..views import client_view, job_view, with_pending
from .blueprint import MAX_LIMIT, started_within

__all__ = ["ListedRun", "ReadRun", "client_runs", "list_runs", "read_run"]


@dataclass(frozen=True)
class ListedRun:
    """A job run as the runs list shows it: the run and how many of its clients are done."""

    job: JobRun
    #: Clients no longer ``Running`` (all of them once the job completed).
    clients_done: int


@dataclass(frozen=True)
class ReadRun:
    """A job run and its client runs (by client ID, case-insensitively), as the run page shows them."""

    job: JobRun
    clients: list[ClientRun]


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


def _live_fields(
    service: MetricsService, run: str, client_ids: set[str], stored: Mapping[str, ClientRow]
) -> dict[str, dict[str, Any]]:
    """Each client's fields, stored plus this process's buffered updates, by client ID."""
    return {
        c: with_pending(stored[c].fields if c in stored else None, service.buffer.pending(run, c))
        for c in sorted(client_ids)
    }


def _listed(service: MetricsService, row: JobRow, stored: Sequence[ClientRow]) -> ListedRun:
    run = row.run_id
    client_ids = set(row.client_ids) | service.buffer.clients_of(run)
    if row.completed:
        return ListedRun(job_view(run, row.fields, client_ids), len(client_ids))
    fields = _live_fields(service, run, client_ids, {c.client_id: c for c in stored}).values()
    done = sum(1 for f in fields if f.get(STATUS, Status.RUNNING.value) != Status.RUNNING.value)
    return ListedRun(job_view(run, row.fields, client_ids, aggregate_clients(service.registry, fields)), done)


def read_run(service: MetricsService, run: str) -> ReadRun | None:
    """The job run ``run`` and its client runs, from one read of its row and one of its client
    rows (none for a job without clients): what ``get_job_run`` and ``list_client_runs`` give."""
    row = service.store.get_job(run)
    client_ids = service.buffer.clients_of(run) | set(row.client_ids if row is not None else ())
    if row is None and not client_ids:
        return None
    stored = {c.client_id: c for c in service.store.list_clients(run)} if client_ids else {}
    fields = _live_fields(service, run, client_ids, stored)
    clients = [
        client_view(run, c, f, completed=c in stored and stored[c].completed) for c, f in fields.items()
    ]
    if row is not None and row.completed:
        job = job_view(run, row.fields, client_ids)
    else:  # a running job, or one only this process's buffer knows yet
        job_fields = row.fields if row is not None else {STATUS: Status.RUNNING.value}
        job = job_view(run, job_fields, client_ids, aggregate_clients(service.registry, fields.values()))
    return ReadRun(job, sorted(clients, key=lambda c: (c.client_id.casefold(), c.client_id)))


def client_runs(service: MetricsService, client_id: str, *, limit: int) -> tuple[list[ClientRun], int]:
    """``client_id``'s runs among the newest ``limit`` job runs (newest first), and how many
    job runs were looked at: one read of the job rows, one of the client's rows in them."""
    rows = service.store.list_jobs(limit=limit)
    runs = [
        r.run_id
        for r in rows
        if client_id in r.client_ids or client_id in service.buffer.clients_of(r.run_id)
    ]
    stored = service.store.get_clients_of(client_id, runs) if runs else {}
    found = []
    for run in runs:
        row, pending = stored.get(run), service.buffer.pending(run, client_id)
        if row is not None or pending is not None:
            fields = with_pending(row.fields if row is not None else None, pending)
            found.append(client_view(run, client_id, fields, completed=row is not None and row.completed))
    return found, len(rows)
