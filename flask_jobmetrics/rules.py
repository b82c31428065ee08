"""The rules of completion and aggregation, as pure functions of row fields.

They run inside store transactions (and may run more than once there: the Redis store
retries a transaction when another writer got in first), so they only read their inputs
and change the ``fields`` they are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .journal import append_op, append_text
from .schema import (
    CLIENTS_PROCESSED,
    CLIENTS_WITH_ERRORS,
    END_TIME,
    LAST_UPDATE,
    START_TIME,
    STATUS,
    SYSTEM_NOTES,
    WORK_FIELDS,
    MetricRegistry,
)
from .status import Status

__all__ = [
    "add_note",
    "aggregate_clients",
    "as_time",
    "client_status",
    "job_status",
    "job_totals_into",
    "last_activity",
]


def client_status(fields: Mapping[str, Any], *, explicit: str | None, success: bool) -> str:
    """A completed client's status: the explicit one; else Failed when not ``success``; else
    No Leads To Score when no lead or post was examined or processed; else Completed."""
    if explicit is not None:
        return explicit
    if not success:
        return Status.FAILED.value
    if not any(fields.get(name) for name in WORK_FIELDS):
        return Status.NO_LEADS.value
    return Status.COMPLETED.value


def job_status(clients: Iterable[Mapping[str, Any]], *, success: bool) -> str:
    """A completed job's status: Failed, Completed with Errors (a client failed) or Completed."""
    if not success:
        return Status.FAILED.value
    if any(fields.get(STATUS) == Status.FAILED.value for fields in clients):
        return Status.COMPLETED_WITH_ERRORS.value
    return Status.COMPLETED.value


def add_note(fields: dict[str, Any], note: str) -> None:
    """Append ``note`` as a line of ``System Notes``, as the store's merge appends a buffered
    note (``journal.append_text``: lines in time order, bounded: the oldest lines give way)."""
    _, value = append_op(note)
    fields[SYSTEM_NOTES] = append_text(fields.get(SYSTEM_NOTES), value)


def as_time(value: Any) -> datetime | None:
    """``value`` if it is a datetime, else None."""
    return value if isinstance(value, datetime) else None


def last_activity(fields: Mapping[str, Any]) -> datetime | None:
    """When a row last changed as far as its fields tell: its latest update, start or end."""
    times = [as_time(fields.get(name)) for name in (LAST_UPDATE, START_TIME, END_TIME)]
    return max((t for t in times if t is not None), default=None)


def aggregate_clients(registry: MetricRegistry, clients: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The job aggregates of its client rows' fields.

    Every ``sum`` metric summed (0 when no client has it), earliest ``Start Time``, latest
    ``End Time``, ``Clients Processed`` and ``Clients With Errors`` (status ``Failed``).
    """
    sums = [spec.field for spec in registry.specs if spec.aggregate == "sum"]
    out: dict[str, Any] = dict.fromkeys(sums, 0)
    processed = failed = 0
    start: datetime | None = None
    end: datetime | None = None
    for fields in clients:
        processed += 1
        failed += fields.get(STATUS) == Status.FAILED.value
        for name in sums:
            value = fields.get(name)
            if value is not None:
                out[name] += value
        client_start, client_end = as_time(fields.get(START_TIME)), as_time(fields.get(END_TIME))
        if client_start is not None and (start is None or client_start < start):
            start = client_start
        if client_end is not None and (end is None or client_end > end):
            end = client_end
    out[CLIENTS_PROCESSED] = processed
    out[CLIENTS_WITH_ERRORS] = failed
    if start is not None:
        out[START_TIME] = start
    if end is not None:
        out[END_TIME] = end
    return out


def job_totals_into(
    registry: MetricRegistry, fields: dict[str, Any], clients: Iterable[Mapping[str, Any]]
) -> None:
    """Set a job row's aggregates from its clients' fields; its own times only widen."""
    aggregates = aggregate_clients(registry, clients)
    end = aggregates.pop(END_TIME, None)
    if end is not None and (fields.get(END_TIME) is None or end > fields[END_TIME]):
        fields[END_TIME] = end
    start = aggregates.pop(START_TIME, None)
    if start is not None and (fields.get(START_TIME) is None or start < fields[START_TIME]):
        fields[START_TIME] = start
    fields.update(aggregates)
