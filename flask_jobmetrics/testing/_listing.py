"""Reading records: list (GET or ``POST .../listRecords``) with paging, and get one."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..airtable_limits import MAX_PAGE_SIZE
from ._errors import AirtableError, invalid_request, record_not_found
from ._formula import FormulaSyntaxError, Node, field_names, parse_formula
from ._formula_eval import EvalContext, matches
from ._model import IdFactory, Record, Table

__all__ = ["ListParams", "Lister", "get_record"]

MAX_OPEN_ITERATORS = 1000
_SORT_KEY = re.compile(r"sort\[(\d+)\]\[(field|direction)\]")
_BAD_FORMULA = "The formula for filtering records is invalid: "


@dataclass
class ListParams:
    """The options of a list request, from a query string or a JSON body."""

    page_size: int = MAX_PAGE_SIZE
    max_records: int | None = None
    offset: str | None = None
    fields: list[str] | None = None
    sort: list[dict[str, str]] = field(default_factory=list)
    formula: str | None = None
    by_id: bool = False

    @classmethod
    def from_query(cls, args: Mapping[str, list[str]]) -> ListParams:
        """From query arguments (each name to all of its values)."""
        sorts: dict[int, dict[str, str]] = {}
        for name, values in args.items():
            if (found := _SORT_KEY.fullmatch(name)) is not None:
                sorts.setdefault(int(found.group(1)), {})[found.group(2)] = values[-1]

        def last(name: str) -> str | None:
            values = args.get(name)
            return values[-1] if values else None

        fields = args.get("fields[]") or args.get("fields")
        return cls.build(
            page_size=last("pageSize"),
            max_records=last("maxRecords"),
            offset=last("offset"),
            fields=list(fields) if fields else None,
            sort=[sorts[i] for i in sorted(sorts)],
            formula=last("filterByFormula"),
            by_id=(last("returnFieldsByFieldId") or "").lower() in ("1", "true"),
        )

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ListParams:
        """From the JSON body of ``POST .../listRecords``."""
        sort = body.get("sort") or []
        fields = body.get("fields")
        if not isinstance(sort, list) or not all(isinstance(s, dict) for s in sort):
            raise invalid_request()
        if fields is not None and not isinstance(fields, list):
            raise invalid_request()
        return cls.build(
            page_size=body.get("pageSize"),
            max_records=body.get("maxRecords"),
            offset=body.get("offset"),
            fields=fields,
            sort=sort,
            formula=body.get("filterByFormula"),
            by_id=bool(body.get("returnFieldsByFieldId")),
        )

    @classmethod
    def build(
        cls,
        *,
        page_size: Any,
        max_records: Any,
        offset: Any,
        fields: Any,
        sort: Any,
        formula: Any,
        by_id: bool,
    ) -> ListParams:
        size = _positive_int(page_size, MAX_PAGE_SIZE)
        if size > MAX_PAGE_SIZE:
            raise invalid_request()
        return cls(
            page_size=size,
            max_records=_positive_int(max_records, None),
            offset=str(offset) if offset else None,
            fields=[str(f) for f in fields] if fields else None,
            sort=sort,
            formula=str(formula) if formula else None,
            by_id=by_id,
        )


def _positive_int(value: Any, default: int | None) -> Any:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise invalid_request() from None
    if number < 1:
        raise invalid_request()
    return number


def _compile_formula(table: Table, text: str) -> Node:
    try:
        node = parse_formula(text)
    except FormulaSyntaxError as exc:
        raise AirtableError.of(
            422,
            "INVALID_FILTER_BY_FORMULA",
            f"{_BAD_FORMULA}Invalid formula. Please check your formula text. ({exc})",
        ) from None
    unknown = sorted(name for name in field_names(node) if table.get_field(name) is None)
    if unknown:
        raise AirtableError.of(
            422, "INVALID_FILTER_BY_FORMULA", f"{_BAD_FORMULA}Unknown field names: {', '.join(unknown)}"
        )
    return node


def _cell_sort_key(field_id: str) -> Callable[[Record], tuple[int, float, str]]:
    """Sort key of one field: blanks first, then numbers, then text (case-insensitive)."""
    return lambda record: _sort_key(record.cells.get(field_id))


def _sort_key(value: Any) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (bool, int, float)):
        return (1, float(value), "")
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return (2, 0.0, str(value).casefold())


@dataclass
class _Iterator:
    table_id: str
    remaining: list[str]
    fields: set[str] | None
    left: int | None


class Lister:
    """Runs list requests; keeps the iterators that ``offset`` values point to."""

    def __init__(self, ids: IdFactory) -> None:
        self._ids = ids
        self._iterators: dict[str, _Iterator] = {}

    def list(self, table: Table, params: ListParams) -> dict[str, Any]:
        if params.offset is not None:
            iterator = self._iterators.pop(params.offset, None)
            if iterator is None or iterator.table_id != table.id:
                raise AirtableError.of(
                    422,
                    "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                    "The offset is not valid, or the iterator has expired",
                )
        else:
            iterator = self._start(table, params)
        records = [table.records[rid] for rid in iterator.remaining if rid in table.records]
        take = params.page_size if iterator.left is None else min(params.page_size, iterator.left)
        page, rest = records[:take], records[take:]
        out: dict[str, Any] = {"records": [table.record_json(r, iterator.fields, params.by_id) for r in page]}
        left = None if iterator.left is None else iterator.left - len(page)
        if rest and (left is None or left > 0):
            token = f"{self._ids.new('itr')}/{rest[0].id}"
            self._iterators[token] = _Iterator(table.id, [r.id for r in rest], iterator.fields, left)
            if len(self._iterators) > MAX_OPEN_ITERATORS:  # forget the oldest abandoned listing
                self._iterators.pop(next(iter(self._iterators)))
            out["offset"] = token
        return out

    def _start(self, table: Table, params: ListParams) -> _Iterator:
        only = {table.require_field(name).id for name in params.fields} if params.fields else None
        records = list(table.records.values())
        if params.formula:
            node = _compile_formula(table, params.formula)
            records = [r for r in records if matches(node, _context(table, r))]
        for spec in reversed(params.sort):
            fdef = table.require_field(str(spec.get("field", "")))
            direction = str(spec.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise invalid_request()
            records.sort(key=_cell_sort_key(fdef.id), reverse=direction == "desc")
        return _Iterator(table.id, [r.id for r in records], only, params.max_records)


def _context(table: Table, record: Record) -> EvalContext:
    return EvalContext(lambda name: table.cell(record, name), record.id, record.created_time)


def get_record(table: Table, record_id: str, by_id: bool = False) -> dict[str, Any]:
    """``GET /v0/{base}/{table}/{record}``."""
    record = table.records.get(record_id)
    if record is None:
        raise record_not_found()
    return table.record_json(record, by_id=by_id)
