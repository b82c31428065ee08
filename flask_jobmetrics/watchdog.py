"""The watchdog's pass: close the jobs that stopped updating (``MetricsService.close_stalled``).

A ``Running`` job with no update for ``stale_after`` seconds (of its own row and its client
rows) is closed: its running clients become ``Failed`` (Error Details: stalled, since when),
the job is completed by the usual rules with a note, and the events hear ``run_stalled``. A
job this process still has buffered updates of is left for the next pass.

The pass reuses the service's own steps (close one client run, complete a job), so it
depends on what it needs of the service (``Service``), not on ``service.py``; the service
runs it in a ``leased.LeasedTask``, one process of a store at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from .buffer import MetricsBuffer
from .events import RunEvents
from .formatting import span
from .log import StructuredLogger
from .rules import last_activity
from .service_hooks import Clock
from .status import Status
from .stores.base import ClientRow, Store

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import JobRun

__all__ = ["WATCHDOG_LEASE", "Service", "close_stalled"]

#: The lease of the watchdog (one process at a time runs it).
WATCHDOG_LEASE = "jobmetrics-watchdog"
#: ``list_jobs`` needs a limit: the watchdog looks at every running job.
_ALL_JOBS = 1_000_000


class Service(Protocol):
    """What the watchdog's pass needs of the service (``service.MetricsService``)."""

    store: Store
    buffer: MetricsBuffer
    clock: Clock
    events: RunEvents | None
    logger: StructuredLogger

    def _close_client(
        self,
        run: str,
        client: str,
        now: datetime,
        log: StructuredLogger,
        note: str,
        error: str,
        *,
        stalled: bool,
    ) -> bool:
        """Close a client run still Running as Failed; True when it was."""

    def complete_job_metrics(self, run_id: str, *, notes: str, logger: StructuredLogger) -> JobRun:
        """Complete the job by the usual rules."""


def close_stalled(service: Service, seconds: float) -> list[str]:
    """Close every ``Running`` job of ``service`` with no update for ``seconds``; returns the
    run IDs closed."""
    if seconds <= 0:
        raise ValueError(f"stale_after must be seconds > 0, got {seconds!r}")
    store = service.store
    now = service.clock()
    cutoff = now - timedelta(seconds=seconds)
    closed = []
    for job in store.list_jobs(limit=_ALL_JOBS, status=Status.RUNNING.value):
        if service.buffer.clients_of(job.run_id):  # this process has updates of it on the way
            continue
        clients = store.list_clients(job.run_id)
        times = [t for t in map(last_activity, [job.fields, *(c.fields for c in clients)]) if t]
        last = max(times, default=None)
        if last is None or last > cutoff:
            continue
        _close_stalled(service, job.run_id, clients, last, now)
        closed.append(job.run_id)
    return closed


def _close_stalled(
    service: Service, run: str, clients: Sequence[ClientRow], last: datetime, now: datetime
) -> None:
    log = service.logger.bind(run_id=run)
    stalled = []
    for row in clients:
        if row.completed:
            continue
        since = last_activity(row.fields) or last
        quiet = span((now - since).total_seconds())
        error = f"stalled: no update since {since:%Y-%m-%d %H:%M:%S} UTC ({quiet})"
        note = f"Closed by the watchdog: {error}."
        if service._close_client(run, row.client_id, now, log, note, error, stalled=True):
            stalled.append(row.client_id)
    note = (
        f"Closed by the watchdog at {now:%Y-%m-%d %H:%M:%S} UTC: no update since {last:%Y-%m-%d %H:%M:%S} UTC"
    )
    if stalled:
        note += f"; {len(stalled)} running client run(s) closed as Failed"
    service.complete_job_metrics(run, notes=note + ".", logger=log)
    log.warning("job stalled and was closed: no update since %s UTC", f"{last:%Y-%m-%d %H:%M:%S}")
    if service.events is not None:
        try:
            service.events.run_stalled(run, stalled)
        except Exception as exc:  # the closing stands
            service.logger.warning("a run-stalled listener failed for %s: %r", run, exc)
