"""The emulator's data: bases, tables, fields and records, plus id generation."""

from __future__ import annotations

import random
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._errors import AirtableError, unknown_field
from ._fields import (
    FieldDef,
    check_create_options,
    coerce_value,
    format_datetime,
    is_empty,
    normalize_options,
    parse_datetime,
)

__all__ = ["Base", "FieldSpec", "FieldSpecs", "IdFactory", "Record", "Table", "build_field"]

#: A field given to ``add_table``: ``{"name", "type", "options"?, "description"?}``.
FieldSpec = Mapping[str, Any]
#: ``{name: type}`` or a list of ``FieldSpec``.
FieldSpecs = Mapping[str, str] | Iterable[FieldSpec]

_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    """Airtable-style ids: a 3-letter prefix and 14 alphanumerics, unique per instance."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._used: set[str] = set()

    def new(self, prefix: str) -> str:
        while True:
            candidate = prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(14))
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate


@dataclass
class Record:
    id: str
    created_time: datetime
    #: Field id -> stored value; empty cells are absent.
    cells: dict[str, Any] = field(default_factory=dict)


def build_field(spec: FieldSpec, ids: IdFactory, strict: bool = False) -> FieldDef:
    """A ``FieldDef`` from a field spec as the metadata API takes it.

    ``strict`` (the metadata API) refuses a type created without the options it needs;
    otherwise (the data helpers) Airtable's defaults fill them in.
    """
    name = spec.get("name")
    field_type = spec.get("type")
    if not isinstance(name, str) or not name.strip():
        raise AirtableError.of(422, "INVALID_REQUEST_UNKNOWN", "A field needs a non-empty name")
    if not isinstance(field_type, str):
        raise AirtableError.of(422, "INVALID_FIELD_TYPE", f"Field {name!r} needs a type")
    if strict:
        check_create_options(name, field_type, spec.get("options"))
    options = normalize_options(field_type, spec.get("options"), ids.new)
    return FieldDef(ids.new("fld"), name, field_type, options, spec.get("description"))


def field_specs(fields: FieldSpecs) -> list[FieldSpec]:
    """Either accepted form of field specs, as a list of dicts."""
    if isinstance(fields, Mapping):
        return [{"name": name, "type": kind} for name, kind in fields.items()]
    return list(fields)


@dataclass
class Table:
    id: str
    name: str
    fields: list[FieldDef]
    view_id: str
    description: str | None = None
    records: dict[str, Record] = field(default_factory=dict)

    def get_field(self, key: str) -> FieldDef | None:
        """The field named ``key``, or whose id is ``key``."""
        for fdef in self.fields:
            if fdef.name == key or fdef.id == key:
                return fdef
        return None

    def require_field(self, key: str) -> FieldDef:
        fdef = self.get_field(key)
        if fdef is None:
            raise unknown_field(key)
        return fdef

    def add_field(self, spec: FieldSpec, ids: IdFactory, strict: bool = False) -> FieldDef:
        """Add a field; names are unique regardless of case, as in Airtable."""
        new = build_field(spec, ids, strict)
        folded = new.name.casefold()
        if any(fdef.name.casefold() == folded for fdef in self.fields):
            raise AirtableError.of(
                422, "DUPLICATE_OR_EMPTY_FIELD_NAME", f'Field name "{new.name}" is already used'
            )
        self.fields.append(new)
        return new

    def convert_cells(self, given: Any, typecast: bool, ids: IdFactory) -> dict[str, Any]:
        """Validate a request's ``fields`` object; return field id -> stored value."""
        if not isinstance(given, dict):
            raise AirtableError.of(
                422, "INVALID_REQUEST_UNKNOWN", 'Invalid request: "fields" must be an object'
            )
        cells: dict[str, Any] = {}
        for key, value in given.items():
            fdef = self.require_field(key)
            cells[fdef.id] = coerce_value(fdef, value, typecast, ids.new)
        return cells

    def cell(self, record: Record, key: str) -> Any:
        """A record's value for a formula: dateTime cells become datetimes."""
        fdef = self.require_field(key)
        value = record.cells.get(fdef.id)
        if fdef.type in ("date", "dateTime") and isinstance(value, str):
            return parse_datetime(value)
        return value

    def record_json(
        self, record: Record, only: set[str] | None = None, by_id: bool = False
    ) -> dict[str, Any]:
        """The record as the API returns it; ``only`` is a set of field ids to keep."""
        fields: dict[str, Any] = {}
        for fdef in self.fields:
            value = record.cells.get(fdef.id)
            if (only is not None and fdef.id not in only) or is_empty(value):
                continue
            fields[fdef.id if by_id else fdef.name] = list(value) if isinstance(value, list) else value
        return {"id": record.id, "createdTime": format_datetime(record.created_time), "fields": fields}

    def schema(self) -> dict[str, Any]:
        """The table as the metadata API returns it."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "primaryFieldId": self.fields[0].id,
            "fields": [fdef.schema() for fdef in self.fields],
            "views": [
                {
                    "id": self.view_id,
                    "name": "Grid view",
                    "type": "grid",
                    "visibleFieldIds": [f.id for f in self.fields],
                }
            ],
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class Base:
    id: str
    name: str
    tables: list[Table] = field(default_factory=list)

    def table(self, key: str) -> Table | None:
        """The table whose id or name is ``key``."""
        for table in self.tables:
            if table.id == key or table.name == key:
                return table
        return None

    def add_table(
        self,
        name: str,
        fields: FieldSpecs,
        ids: IdFactory,
        description: str | None = None,
        strict: bool = False,
    ) -> Table:
        if not name.strip():
            raise AirtableError.of(422, "INVALID_REQUEST_UNKNOWN", "A table needs a non-empty name")
        if self.table(name) is not None:
            raise AirtableError.of(422, "DUPLICATE_TABLE_NAME", f'Table name "{name}" is already used')
        specs = field_specs(fields)
        if not specs:
            raise AirtableError.of(422, "INVALID_REQUEST_UNKNOWN", "A table needs at least one field")
        table = Table(ids.new("tbl"), name, [], ids.new("viw"), description)
        for spec in specs:
            table.add_field(spec, ids, strict)
        self.tables.append(table)
        return table
