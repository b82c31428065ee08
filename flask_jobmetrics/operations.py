"""The service operations as module-level functions on ``current_app``'s extension.

``flask_jobmetrics.update_client_metrics(...)`` is ``get_state().service.update_client_metrics(...)``:
the same parameters as the ``JobMetrics`` methods and ``MetricsService``, for code that has
an app context but no handle on the extension object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .buffer import BufferStats
from .log import StructuredLogger
from .runids import RunIdLike
from .schema import MetricSpec
from .state import get_state
from .status import Status

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import ClientRun, FlushReport, Health, JobRun

__all__ = [
    "update_client_metrics",
    "complete_client_metrics",
    "log_progress",
    "update_job_aggregate_metrics",
    "complete_job_metrics",
    "start_job",
    "get_client_run",
    "get_job_run",
    "list_job_runs",
    "flush",
    "health",
    "register_metric",
    "stats",
]


def update_client_metrics(
    run_id: RunIdLike,
    client_id: str,
    metrics: Mapping[str, Any] | None,
    *,
    logger: StructuredLogger | None = None,
    idempotency_key: str | None = None,
) -> ClientRun:
    """Merge ``metrics`` into the client run (created ``Running`` on first update)."""
    return get_state().service.update_client_metrics(
        run_id, client_id, metrics, logger=logger, idempotency_key=idempotency_key
    )


def complete_client_metrics(
    run_id: RunIdLike,
    client_id: str,
    metrics: Mapping[str, Any] | None = None,
    *,
    success: bool | None = None,
    totals: bool = False,
    error: BaseException | str | None = None,
    notes: str | None = None,
    logger: StructuredLogger | None = None,
) -> ClientRun:
    """Merge ``metrics``, set ``End Time`` and the final status, and make it durable.

    ``error`` (an exception or a string) goes to ``Error Details`` and makes the run
    ``Failed`` unless ``success=True`` is given; ``notes`` is appended to ``System Notes``."""
    return get_state().service.complete_client_metrics(
        run_id, client_id, metrics, success=success, totals=totals, error=error, notes=notes, logger=logger
    )


def log_progress(run_id: RunIdLike, client_id: str, message: str) -> None:
    """Append a timestamped line to the client run's ``Progress Log``."""
    get_state().service.log_progress(run_id, client_id, message)


def update_job_aggregate_metrics(run_id: RunIdLike, *, logger: StructuredLogger | None = None) -> JobRun:
    """Recompute the job row from all of its client runs."""
    return get_state().service.update_job_aggregate_metrics(run_id, logger=logger)


def complete_job_metrics(
    run_id: RunIdLike, *, success: bool = True, notes: str = "", logger: StructuredLogger | None = None
) -> JobRun:
    """Close still-running clients as Failed, aggregate, and set the job's final status."""
    return get_state().service.complete_job_metrics(run_id, success=success, notes=notes, logger=logger)


def start_job(
    run_id: RunIdLike | None = None, *, notes: str = "", logger: StructuredLogger | None = None
) -> JobRun:
    """Create a job run (``Running``); with no ``run_id`` a unique one is reserved."""
    return get_state().service.start_job(run_id, notes=notes, logger=logger)


def get_client_run(run_id: RunIdLike, client_id: str) -> ClientRun | None:
    """The client run as stored plus this process's buffered updates, or None."""
    return get_state().service.get_client_run(run_id, client_id)


def get_job_run(run_id: RunIdLike) -> JobRun | None:
    """The job run (live aggregates while it runs), or None."""
    return get_state().service.get_job_run(run_id)


def list_job_runs(*, limit: int = 50, status: Status | str | None = None) -> list[JobRun]:
    """Job runs by start time, newest first."""
    return get_state().service.list_job_runs(limit=limit, status=status)


def flush(timeout: float | None = None) -> FlushReport:
    """Merge every buffered entry into the store, then publish what waits, until it is sent or
    ``timeout`` seconds passed. Raises StoreError if the buffer cannot reach the store (the
    entries stay buffered)."""
    return get_state().service.flush(timeout)


def health() -> Health:
    """Whether ``current_app``'s store answers, as this process last saw it (no store call)."""
    return get_state().service.health()


def register_metric(spec: MetricSpec) -> None:
    """Register a metric on ``current_app``."""
    get_state().service.registry.register(spec)


def stats() -> BufferStats:
    """This process's buffer counters for ``current_app``."""
    return get_state().service.buffer.stats()
