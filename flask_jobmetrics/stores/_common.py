"""Row logic shared by every store, so each backend only supplies atomicity."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from flask_jobmetrics.deltas import ClientDelta, client_fields_after
from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.runids import RunId
from flask_jobmetrics.schema import START_TIME, STATUS
from flask_jobmetrics.status import Status
from flask_jobmetrics.stores.base import ClientRow, Finalize, JobRow, OutboxItem, decode_fields, encode_fields

__all__ = [
    "copy_row",
    "due_items",
    "fresh_run_id",
    "next_client_row",
    "dumps_fields",
    "job_start_from_client",
    "loads_fields",
    "merged_client_fields",
    "new_job_fields",
    "start_sort_key",
    "status_matches",
]


def merged_client_fields(
    current: Mapping[str, Any] | None,
    delta: ClientDelta,
    finalize: Finalize | None = None,
    refused: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """The fields of a client row after ``delta`` (a new row starts ``Running``); sums that
    would pass 2**53 are not added but appended to ``refused``."""
    fields = client_fields_after(current, delta.ops, refused)
    if finalize is not None:
        finalize(fields)
    return fields


def copy_row(row: ClientRow) -> ClientRow:
    """A row whose fields the caller may change without changing the store."""
    return replace(row, fields=dict(row.fields))


def next_client_row(old: ClientRow | None, delta: ClientDelta, finalize: Finalize | None = None) -> ClientRow:
    """A client row after ``delta``: fields merged, ``completed`` sticky, version + 1."""
    refused: list[tuple[str, Any]] = []
    return ClientRow(
        delta.run_id,
        delta.client_id,
        merged_client_fields(old.fields if old is not None else None, delta, finalize, refused),
        completed=(old.completed if old is not None else False) or delta.complete,
        version=(old.version if old is not None else 0) + 1,
        refused=tuple(refused),
    )


def fresh_run_id(earliest: str, mark: int | None, taken: Callable[[str], bool]) -> tuple[str, int]:
    """The run ID a reservation takes, and the store's new high-water mark (epoch seconds).

    The first second at or after both ``earliest`` and the one after ``mark`` (the last
    second reserved) that no job row holds (``taken``). Only rows made with an explicit run
    ID are ever stepped over, each at most once: the mark moves past them.
    """
    second = RunId.parse(earliest).epoch
    if mark is not None:
        second = max(second, mark + 1)
    run_id = str(RunId.from_epoch(second))
    while taken(run_id):
        second += 1
        run_id = str(RunId.from_epoch(second))
    return run_id, second


def new_job_fields(client_fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a job row created by its first client row."""
    fields: dict[str, Any] = {STATUS: Status.RUNNING.value}
    start = client_fields.get(START_TIME)
    if start is not None:
        fields[START_TIME] = start
    return fields


def job_start_from_client(job_fields: dict[str, Any], client_fields: Mapping[str, Any]) -> bool:
    """Keep the job's Start Time at the earliest of its clients'; True when it changed."""
    start = client_fields.get(START_TIME)
    if start is None:
        return False
    current = job_fields.get(START_TIME)
    if current is None or start < current:
        job_fields[START_TIME] = start
        return True
    return False


def start_sort_key(fields: Mapping[str, Any]) -> str | None:
    """A job's ``Start Time`` as a sortable UTC string (fixed width), None when it has none."""
    start = fields.get(START_TIME)
    if not isinstance(start, datetime):
        return None
    if start.tzinfo is not None:
        start = start.astimezone(timezone.utc).replace(tzinfo=None)
    return start.isoformat(timespec="microseconds")


def status_matches(row: JobRow, status: str | None) -> bool:
    return status is None or row.fields.get(STATUS) == status


def due_items(items: Iterable[OutboxItem], now: float, limit: int) -> list[OutboxItem]:
    """Live entries due at ``now``, oldest due first, at most ``limit``."""
    live = [item for item in items if not item.dead and item.due_at <= now]
    live.sort(key=lambda item: (item.due_at, item.kind != "job", item.run_id, item.client_id))
    return live[:limit]


def dumps_fields(fields: Mapping[str, Any]) -> str:
    """A row's fields as compact JSON (datetimes tagged); StoreError when a value cannot be."""
    try:
        return json.dumps(encode_fields(fields), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot encode the fields {dict(fields)!r}: {exc}") from exc


def loads_fields(text: str | bytes) -> dict[str, Any]:
    """The inverse of ``dumps_fields``."""
    return decode_fields(json.loads(text))
