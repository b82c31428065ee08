"""flask_jobmetrics: exact job and per-client metrics for Flask, published to Airtable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .context import bind_run, current_run
from .exceptions import (
    ConfigurationError,
    InvalidClientIdError,
    InvalidMetricError,
    InvalidRunIdError,
    JobMetricsError,
    NotInitializedError,
    StoreError,
    StoreUnavailableError,
    UnknownRunError,
)
from .extension import JobMetrics
from .log import StructuredLogger
from .model_loading import MODEL_LOCK as _MODEL_LOCK
from .operations import (
    complete_client_metrics,
    complete_job_metrics,
    flush,
    get_client_run,
    get_job_run,
    health,
    list_job_runs,
    log_progress,
    register_metric,
    start_job,
    stats,
    update_client_metrics,
    update_job_aggregate_metrics,
)
from .runids import RunId, base_run_id, client_id_of, client_run_id, generate_run_id
from .schema import MetricSpec
from .status import Status
from .validation import idempotency_key

if TYPE_CHECKING:
    from .models import ClientRun, FlushReport, Health, JobRun, RejectedMetric

__version__ = "0.1.0.dev0"

__all__ = [
    "ClientRun",
    "ConfigurationError",
    "FlushReport",
    "Health",
    "InvalidClientIdError",
    "InvalidMetricError",
    "InvalidRunIdError",
    "JobMetrics",
    "JobMetricsError",
    "JobRun",
    "MetricSpec",
    "NotInitializedError",
    "RejectedMetric",
    "RunId",
    "Status",
    "StoreError",
    "StoreUnavailableError",
    "StructuredLogger",
    "UnknownRunError",
    "__version__",
    "base_run_id",
    "bind_run",
    "client_id_of",
    "client_run_id",
    "complete_client_metrics",
    "log_progress",
    "complete_job_metrics",
    "current_run",
    "flush",
    "generate_run_id",
    "get_client_run",
    "get_job_run",
    "health",
    "idempotency_key",
    "list_job_runs",
    "register_metric",
    "start_job",
    "stats",
    "update_client_metrics",
    "update_job_aggregate_metrics",
]

#: The model classes, imported from ``flask_jobmetrics.models`` (which loads pydantic) when
#: one of these names is first read: ``import flask_jobmetrics`` does not load pydantic.
_MODELS = frozenset({"ClientRun", "FlushReport", "Health", "JobRun", "RejectedMetric"})


if not TYPE_CHECKING:  # to type checkers the names are the imports above, and a typo an error

    def __getattr__(name: str) -> Any:
        if name in _MODELS:
            with _MODEL_LOCK:
                from . import models

            value = getattr(models, name)
            globals()[name] = value  # read once: from then on an ordinary module attribute
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(globals()) | _MODELS)
