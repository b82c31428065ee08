"""The completion rules as field updates: what completing a client run or a job does to its row.

Plain functions on the fields of one row, which the service runs inside a store transaction
(``Store.merge_client(delta, finalize)``, ``Store.update_job(run, update)``). A transaction
may run its function more than once (Redis retries a script whose keys changed under it), so
each one sets the fields from what they hold and what it is given, nothing else, and returns
what it found on this run (the caller keeps the last run's). The statuses themselves are
decided in ``rules.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .journal import append_text, error_text
from .rules import add_note, client_status, job_status, job_totals_into
from .schema import END_TIME, ERROR_DETAILS, PROGRESS_LOG, STATUS, MetricRegistry
from .status import Status
from .stores.base import ClientRow

__all__ = [
    "LineOp",
    "Difference",
    "finish_client",
    "close_client",
    "aggregate_job",
    "refresh_finished_job",
    "finish_job",
]

#: The op appending one timestamped line to the Progress Log (``MetricsService._line``).
LineOp = Callable[[str, datetime], tuple[str, Any]]
#: A sum whose given total differs from what the updates added: (field, accumulated, total).
Difference = tuple[str, Any, Any]


def _add_line(fields: dict[str, Any], line: LineOp, message: str, when: datetime) -> None:
    """Append a line to the Progress Log of ``fields``."""
    fields[PROGRESS_LOG] = append_text(fields.get(PROGRESS_LOG), line(message, when)[1])


def _counts(registry: MetricRegistry, fields: Mapping[str, Any]) -> str:
    """The non-zero ``sum`` metrics of a row, for a Progress Log line."""
    sums = [spec for spec in registry.specs if spec.aggregate == "sum"]
    return ", ".join(f"{spec.name} {fields[spec.field]:,}" for spec in sums if fields.get(spec.field))


def finish_client(
    fields: dict[str, Any],
    registry: MetricRegistry,
    *,
    totals: Mapping[str, Any],
    explicit_status: str | None,
    success: bool,
    error: str | None,
    now: datetime,
    line: LineOp,
) -> list[Difference]:
    """Complete a client run's merged fields: ``totals`` replace the sums the updates added,
    the status follows ``rules.client_status``, and a Progress Log line says how it ended.
    Returns the sums whose total differed from what was added."""
    differences = []
    for name, total in totals.items():
        accumulated = fields.get(name, 0)
        if accumulated != total:
            differences.append((name, accumulated, total))
        fields[name] = total
    status = client_status(fields, explicit=explicit_status, success=success)
    fields[STATUS] = status
    counts = _counts(registry, fields)
    message = f"completed with status {status}" + (f" ({counts})" if counts else "")
    _add_line(fields, line, message + (f"; error: {error}" if error else ""), now)
    return differences


def close_client(
    fields: dict[str, Any], *, note: str, error: str | None, now: datetime, line: LineOp
) -> bool:
    """Close a client run the job outlived: a Running one becomes Failed, with ``note`` in its
    System Notes, ``error`` in its Error Details (an earlier error kept below it) and a
    Progress Log line; any other status stays. True when it was closed."""
    if fields.get(STATUS) != Status.RUNNING.value:
        return False
    fields[STATUS] = Status.FAILED.value
    add_note(fields, note)
    if error is not None:  # an earlier error stays visible below
        earlier = fields.get(ERROR_DETAILS)
        fields[ERROR_DETAILS] = error_text(f"{error}\nEarlier: {earlier}" if earlier else error)
    _add_line(fields, line, f"closed as Failed: {error or note}", now)
    return True


def aggregate_job(fields: dict[str, Any], clients: Sequence[ClientRow], registry: MetricRegistry) -> None:
    """The job's totals from all of its client runs."""
    job_totals_into(registry, fields, [c.fields for c in clients])


def refresh_finished_job(
    fields: dict[str, Any], clients: Sequence[ClientRow], registry: MetricRegistry
) -> None:
    """A completed job after late client updates: totals, and its status unless it Failed."""
    aggregate_job(fields, clients, registry)
    if fields.get(STATUS) != Status.FAILED.value:
        fields[STATUS] = job_status((c.fields for c in clients), success=True)


def finish_job(
    fields: dict[str, Any],
    clients: Sequence[ClientRow],
    registry: MetricRegistry,
    *,
    now: datetime,
    notes: str,
    success: bool,
) -> None:
    """Complete a job: totals, End Time (the latest of ``now`` and one already set), ``notes``
    in its System Notes, and its final status from its clients'."""
    aggregate_job(fields, clients, registry)
    fields[END_TIME] = max(now, fields.get(END_TIME) or now)
    if notes:
        add_note(fields, notes)
    fields[STATUS] = job_status((c.fields for c in clients), success=success)
