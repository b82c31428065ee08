"""Rows -> models, and the job aggregates computed from client rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .deltas import client_fields_after
from .models import ClientRun, JobRun, RejectedMetric, Status
from .rules import as_time
from .schema import (
    END_TIME,
    ERROR_DETAILS,
    PROGRESS_LOG,
    START_TIME,
    STATUS,
    SYSTEM_NOTES,
)

__all__ = ["client_view", "job_view", "with_pending"]

_OWN_ATTRIBUTES = frozenset({STATUS, START_TIME, END_TIME, SYSTEM_NOTES, ERROR_DETAILS, PROGRESS_LOG})


def _metrics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are metrics: not a model attribute of their own, not internal (``_``)."""
    return {k: v for k, v in fields.items() if k not in _OWN_ATTRIBUTES and not k.startswith("_")}


#: A row's fields with this process's still-buffered ops applied (a new row is Running).
with_pending = client_fields_after


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.RUNNING


_CLIENT_RUN_FIELDS = frozenset(ClientRun.model_fields)


def _trusted(values: dict[str, Any]) -> ClientRun:
    """A ClientRun from values this module built (every field, right types), without
    pydantic's per-call work: the update path returns one per call (see benchmarks/)."""
    run = ClientRun.__new__(ClientRun)
    object.__setattr__(run, "__dict__", values)
    object.__setattr__(run, "__pydantic_fields_set__", set(_CLIENT_RUN_FIELDS))
    object.__setattr__(run, "__pydantic_extra__", None)
    object.__setattr__(run, "__pydantic_private__", None)
    return run


def client_view(
    run_id: str,
    client_id: str,
    fields: Mapping[str, Any],
    *,
    completed: bool,
    rejected: list[RejectedMetric] | None = None,
) -> ClientRun:
    return _trusted(
        {
            "run_id": run_id,
            "client_id": client_id,
            "client_run_id": f"{run_id}-{client_id}",
            "status": _status(fields.get(STATUS)),
            "start_time": as_time(fields.get(START_TIME)),
            "end_time": as_time(fields.get(END_TIME)),
            "metrics": _metrics(fields),
            "notes": fields.get(SYSTEM_NOTES) or "",
            "error": fields.get(ERROR_DETAILS) or None,
            "progress_log": fields.get(PROGRESS_LOG) or "",
            "rejected": rejected or [],
            "completed": completed,
        }
    )


def job_view(
    run_id: str,
    fields: Mapping[str, Any],
    client_ids: Iterable[str],
    aggregates: Mapping[str, Any] | None = None,
) -> JobRun:
    """A job row as a model; ``aggregates`` (live, for a running job) override stored ones."""
    merged = dict(fields)
    if aggregates is not None:
        for name, value in aggregates.items():
            if name == START_TIME:
                current = as_time(merged.get(START_TIME))
                merged[START_TIME] = value if current is None or value < current else current
            elif name != END_TIME:
                merged[name] = value
    return JobRun.model_construct(
        run_id=run_id,
        status=_status(merged.get(STATUS)),
        start_time=as_time(merged.get(START_TIME)),
        end_time=as_time(merged.get(END_TIME)),
        notes=merged.get(SYSTEM_NOTES) or "",
        metrics=_metrics(merged),
        client_ids=sorted(client_ids),
    )
