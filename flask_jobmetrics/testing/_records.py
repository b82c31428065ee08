"""The records API: list, get, create, update, upsert and delete on one table.

Every write is all-or-nothing: ``atomic`` restores the table when a request fails.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..airtable_limits import MAX_MERGE_FIELDS, MAX_RECORDS_PER_REQUEST
from ._errors import AirtableError, invalid_request, record_not_found
from ._fields import MERGEABLE_TYPES, FieldDef
from ._model import IdFactory, Record, Table

__all__ = [
    "FailRule",
    "WriteContext",
    "atomic",
    "create",
    "delete_many",
    "delete_one",
    "update_many",
    "update_one",
]

_BATCH_SHAPE = (
    'You must provide an array of up to 10 record objects, each with an "id" ID field and a '
    '"fields" object for cell values.'
)


@dataclass(frozen=True)
class FailRule:
    """A write containing a record whose fields match ``predicate`` fails with this error."""

    predicate: Callable[[dict[str, Any]], bool]
    status: int
    error_type: str
    message: str


@dataclass
class WriteContext:
    """What a write needs besides the table."""

    ids: IdFactory
    now: Callable[[], datetime]
    fail_rules: list[FailRule]
    typecast: bool = False
    by_id: bool = False


@contextmanager
def atomic(table: Table) -> Iterator[None]:
    """Undo every change to ``table`` (records and select options) if the block raises."""
    saved = copy.deepcopy((table.fields, table.records))
    try:
        yield
    except BaseException:
        table.fields, table.records = saved
        raise


def _check_fail_rules(ctx: WriteContext, all_fields: list[dict[str, Any]]) -> None:
    for rule in ctx.fail_rules:
        if any(rule.predicate(dict(fields)) for fields in all_fields):
            raise AirtableError.of(rule.status, rule.error_type, rule.message)


def _options(ctx: WriteContext, body: Mapping[str, Any]) -> WriteContext:
    return WriteContext(
        ctx.ids, ctx.now, ctx.fail_rules, bool(body.get("typecast")), bool(body.get("returnFieldsByFieldId"))
    )


def _records_list(body: Mapping[str, Any], verb: str) -> list[dict[str, Any]]:
    records = body.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or not records:
        raise AirtableError.of(422, "INVALID_RECORDS", _BATCH_SHAPE)
    if len(records) > MAX_RECORDS_PER_REQUEST:
        message = (
            f"A maximum of {MAX_RECORDS_PER_REQUEST} records can be {verb} per request but you have "
            f"provided {len(records)}."
        )
        raise AirtableError.of(422, "INVALID_RECORDS", message if verb == "created" else _BATCH_SHAPE)
    for record in records:
        if not isinstance(record.get("fields"), dict):
            raise AirtableError.of(422, "INVALID_RECORDS", _BATCH_SHAPE)
    return records


def _apply(record: Record, cells: dict[str, Any], replace: bool) -> None:
    if replace:
        record.cells = {}
    for field_id, value in cells.items():
        if value is None:
            record.cells.pop(field_id, None)
        else:
            record.cells[field_id] = value


def _new_record(table: Table, cells: dict[str, Any], ctx: WriteContext) -> Record:
    created = ctx.now().replace(microsecond=0)
    record = Record(ctx.ids.new("rec"), created)
    _apply(record, cells, replace=False)
    table.records[record.id] = record
    return record


def create(table: Table, body: Mapping[str, Any], ctx: WriteContext) -> dict[str, Any]:
    """``POST /v0/{base}/{table}``: one record (``fields``) or a batch (``records``)."""
    ctx = _options(ctx, body)
    if "records" in body:
        items = [record["fields"] for record in _records_list(body, "created")]
    elif isinstance(body.get("fields"), dict):
        items = [body["fields"]]
    else:
        raise AirtableError.of(
            422, "INVALID_REQUEST_MISSING_FIELDS", 'Could not find field "fields" in the request body'
        )
    _check_fail_rules(ctx, items)
    with atomic(table):
        created = [
            _new_record(table, table.convert_cells(fields, ctx.typecast, ctx.ids), ctx) for fields in items
        ]
    out = [table.record_json(record, by_id=ctx.by_id) for record in created]
    return {"records": out} if "records" in body else out[0]


def _existing(table: Table, record_id: Any) -> Record:
    record = table.records.get(record_id) if isinstance(record_id, str) else None
    if record is None:
        raise AirtableError.of(
            422, "ROW_DOES_NOT_EXIST", f"Record ID {record_id} does not exist in this table"
        )
    return record


def update_one(
    table: Table, record_id: str, body: Mapping[str, Any], replace: bool, ctx: WriteContext
) -> dict[str, Any]:
    """``PATCH``/``PUT /v0/{base}/{table}/{record}``."""
    ctx = _options(ctx, body)
    record = table.records.get(record_id)
    if record is None:
        raise record_not_found()
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise AirtableError.of(
            422, "INVALID_REQUEST_MISSING_FIELDS", 'Could not find field "fields" in the request body'
        )
    _check_fail_rules(ctx, [fields])
    with atomic(table):
        _apply(record, table.convert_cells(fields, ctx.typecast, ctx.ids), replace)
    return table.record_json(record, by_id=ctx.by_id)


def update_many(table: Table, body: Mapping[str, Any], replace: bool, ctx: WriteContext) -> dict[str, Any]:
    """``PATCH``/``PUT /v0/{base}/{table}``: a batch update, or an upsert with ``performUpsert``.

    Which record each upserted record updates is decided against the table as it was before
    the request: a record never matches one created earlier in the same request, so two
    records that would create the same key are refused, and a blank merge value matches
    nothing (not even another blank).
    """
    ctx = _options(ctx, body)
    items = _records_list(body, "updated")
    upsert = body.get("performUpsert")
    merge_on = _merge_fields(table, upsert) if upsert is not None else None
    if merge_on is None and not all("id" in item for item in items):
        raise AirtableError.of(422, "INVALID_RECORDS", _BATCH_SHAPE)
    _check_fail_rules(ctx, [item["fields"] for item in items])
    touched: list[Record] = []
    created: list[str] = []
    updated: list[str] = []
    with atomic(table):
        converted = [table.convert_cells(item["fields"], ctx.typecast, ctx.ids) for item in items]
        targets = _targets(table, items, converted, merge_on)
        for cells, target in zip(converted, targets, strict=True):
            if target is None:
                target = _new_record(table, cells, ctx)
                created.append(target.id)
            else:
                _apply(target, cells, replace)
                if target.id not in created and target.id not in updated:
                    updated.append(target.id)
            touched.append(target)
    result: dict[str, Any] = {"records": [table.record_json(r, by_id=ctx.by_id) for r in touched]}
    if merge_on is not None:
        result["createdRecords"] = created
        result["updatedRecords"] = updated
    return result


def _targets(
    table: Table,
    items: list[dict[str, Any]],
    converted: list[dict[str, Any]],
    merge_on: list[FieldDef] | None,
) -> list[Record | None]:
    """The existing record each item updates (None: it creates one), before anything is applied."""
    targets: list[Record | None] = []
    creating: dict[tuple[Any, ...], int] = {}
    for index, (item, cells) in enumerate(zip(items, converted, strict=True)):
        if "id" in item or merge_on is None:
            targets.append(_existing(table, item.get("id")))
            continue
        key = _merge_key(merge_on, cells)
        found = _match(table, merge_on, key) if key is not None else None
        if found is None and key is not None:
            if key in creating:
                names = ", ".join(f.name for f in merge_on)
                raise invalid_request(
                    f"Cannot upsert: records {creating[key] + 1} and {index + 1} of the request have "
                    f"the same fieldsToMergeOn values ({names}) and would create two records"
                )
            creating[key] = index
        targets.append(found)
    return targets


def _merge_fields(table: Table, upsert: Any) -> list[FieldDef]:
    names = upsert.get("fieldsToMergeOn") if isinstance(upsert, dict) else None
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= MAX_MERGE_FIELDS
        or not all(isinstance(n, str) for n in names)
    ):
        raise invalid_request(
            f'Invalid request: "performUpsert.fieldsToMergeOn" must list 1 to {MAX_MERGE_FIELDS} '
            "field names or ids"
        )
    fields = [table.require_field(name) for name in names]
    for fdef in fields:
        if fdef.type not in MERGEABLE_TYPES:
            raise invalid_request(
                f'Invalid request: field "{fdef.name}" of type {fdef.type} cannot be used in '
                "fieldsToMergeOn (use a number, text, long text, select or date field)"
            )
    return fields


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _merge_key(merge_on: list[FieldDef], cells: dict[str, Any]) -> tuple[Any, ...] | None:
    """The record's merge values; None when one of them is blank (a blank matches nothing)."""
    missing = [f.name for f in merge_on if f.id not in cells]
    if missing:
        raise invalid_request(
            f"Invalid request: record is missing fieldsToMergeOn value(s) for {', '.join(missing)}"
        )
    key = tuple(_hashable(cells[f.id]) for f in merge_on)
    return None if any(value is None for value in key) else key


def _match(table: Table, merge_on: list[FieldDef], key: tuple[Any, ...]) -> Record | None:
    found = [
        r for r in table.records.values() if tuple(_hashable(r.cells.get(f.id)) for f in merge_on) == key
    ]
    if len(found) > 1:
        names = ", ".join(f.name for f in merge_on)
        raise invalid_request(
            f"Cannot upsert: {len(found)} records match the fieldsToMergeOn values ({names}); "
            "the values must identify at most one record"
        )
    return found[0] if found else None


def delete_one(table: Table, record_id: str) -> dict[str, Any]:
    """``DELETE /v0/{base}/{table}/{record}``."""
    if table.records.pop(record_id, None) is None:
        raise record_not_found()
    return {"id": record_id, "deleted": True}


def delete_many(table: Table, record_ids: list[str]) -> dict[str, Any]:
    """``DELETE /v0/{base}/{table}?records[]=...``."""
    if not record_ids:
        raise invalid_request('Invalid request: "records[]" is required')
    if len(record_ids) > MAX_RECORDS_PER_REQUEST:
        raise AirtableError.of(
            422,
            "INVALID_RECORDS",
            f"A maximum of {MAX_RECORDS_PER_REQUEST} records can be deleted per request but you have "
            f"provided {len(record_ids)}.",
        )
    if any(record_id not in table.records for record_id in record_ids):
        raise record_not_found()
    for record_id in record_ids:
        table.records.pop(record_id, None)
    return {"records": [{"id": record_id, "deleted": True} for record_id in record_ids]}
