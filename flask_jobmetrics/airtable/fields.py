"""Store rows -> Airtable records, and the fields each table needs.

Airtable is a projection: the publisher always sends a row's full merged fields, keyed
so that ``batch_upsert`` finds the same record again (Job Tracking on ``Run ID``; Client
Run Results on ``Run ID`` in the client form plus ``Client ID``). Datetimes go as
``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings and whole numbers as ints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..schema import (
    CLIENTS_PROCESSED,
    CLIENTS_WITH_ERRORS,
    ERROR_DETAILS,
    PROGRESS_LOG,
    STATUS,
    SYSTEM_NOTES,
    MetricSpec,
)
from ..status import Status
from ..stores.base import OutboxItem, Store

__all__ = [
    "CLIENT_ID",
    "CLIENT_KEY_FIELDS",
    "JOB_KEY_FIELDS",
    "RUN_ID",
    "airtable_value",
    "client_record",
    "field_definitions",
    "job_record",
    "load_record",
]

RUN_ID = "Run ID"
CLIENT_ID = "Client ID"
JOB_KEY_FIELDS = [RUN_ID]
CLIENT_KEY_FIELDS = [RUN_ID, CLIENT_ID]


def airtable_value(value: Any) -> Any:
    """One value as Airtable's REST API takes it."""
    if isinstance(value, datetime):
        utc = value.astimezone(timezone.utc)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Status):
        return value.value
    return value


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The published fields: internal ones (``_`` first) stay in the store."""
    return {
        name: airtable_value(value)
        for name, value in fields.items()
        if value is not None and not name.startswith("_")
    }


def job_record(run_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The Job Tracking record of a job row."""
    record = _fields(fields)
    record[RUN_ID] = run_id
    return record


def client_record(run_id: str, client_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The Client Run Results record of a (run, client) row."""
    record = _fields(fields)
    record[RUN_ID] = f"{run_id}-{client_id}"
    record[CLIENT_ID] = client_id
    return record


_DATETIME_OPTIONS = {
    "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
    "timeFormat": {"name": "24hour", "format": "HH:mm"},
    "timeZone": "utc",
}


def _definition(spec: MetricSpec) -> dict[str, Any]:
    if spec.field == STATUS:
        return {"type": "singleSelect", "options": {"choices": [{"name": s.value} for s in Status]}}
    if spec.type == "datetime":
        return {"type": "dateTime", "options": _DATETIME_OPTIONS}
    if spec.type == "number":
        return {"type": "number", "options": {"precision": 0 if spec.non_negative else 2}}
    return {"type": "singleLineText"}


def field_definitions(specs: Iterable[MetricSpec], *, job: bool) -> dict[str, dict[str, Any]]:
    """Field name -> Airtable field type and options, for ``airtable init``.

    The first entry is the table's primary field (``Run ID``).
    """
    out: dict[str, dict[str, Any]] = {RUN_ID: {"type": "singleLineText"}}
    if not job:
        out[CLIENT_ID] = {"type": "singleLineText"}
    for spec in specs:
        out[spec.field] = _definition(spec)
    out[SYSTEM_NOTES] = {"type": "multilineText"}
    if not job:
        out[ERROR_DETAILS] = {"type": "multilineText"}
        out[PROGRESS_LOG] = {"type": "multilineText"}
    if job:
        out[CLIENTS_PROCESSED] = {"type": "number", "options": {"precision": 0}}
        out[CLIENTS_WITH_ERRORS] = {"type": "number", "options": {"precision": 0}}
    return out


def load_record(store: Store, item: OutboxItem) -> tuple[dict[str, Any], bool, int] | None:
    """The record to send for an outbox entry, whether its row is completed, and the row's
    version it was read at (None: the row is gone)."""
    if item.kind == "client":
        row = store.get_client(item.run_id, item.client_id)
        if row is None:
            return None
        return client_record(row.run_id, row.client_id, row.fields), row.completed, row.version
    job = store.get_job(item.run_id)
    return None if job is None else (job_record(job.run_id, job.fields), job.completed, job.version)
