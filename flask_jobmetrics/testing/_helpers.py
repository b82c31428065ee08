"""``FakeAirtable``'s data helpers: build and inspect bases directly, without HTTP.

They are not rate limited and not logged; an unknown base or table raises ``KeyError`` and
an invalid definition or record ``ValueError`` (with Airtable's status and body).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..airtable_limits import MAX_RECORDS_PER_REQUEST
from . import _records as recops
from ._dispatch import Store
from ._errors import AirtableError
from ._fields import normalize_options
from ._model import Base, FieldSpecs, Table

__all__ = ["DataHelpers"]


class DataHelpers:
    """The direct data methods of ``FakeAirtable`` (a mixin over its lock and store)."""

    _lock: threading.RLock
    _store: Store

    @contextmanager
    def _data(self) -> Iterator[None]:
        """Hold the lock; report Airtable errors as ``ValueError``."""
        with self._lock:
            try:
                yield
            except AirtableError as exc:
                raise ValueError(f"{exc.status}: {exc.body}") from None

    def _table(self, base_id: str, table: str) -> Table:
        base = self._store.bases.get(base_id)
        found = base.table(table) if base is not None else None
        if found is None:
            raise KeyError(f"no table {table!r} in base {base_id!r}")
        return found

    def add_base(self, base_id: str, name: str = "Test") -> str:
        """Create an empty base; returns its id."""
        with self._data():
            if base_id in self._store.bases:
                raise ValueError(f"base {base_id!r} already exists")
            self._store.bases[base_id] = Base(base_id, name)
        return base_id

    def add_table(
        self, base_id: str, table_name: str, fields: FieldSpecs, description: str | None = None
    ) -> str:
        """Create a table; returns its ``tbl...`` id. The first field is the primary field.

        ``fields`` is ``{"Name": "singleLineText", ...}`` or a list of field specs as the
        metadata API takes them: ``{"name", "type", "options"?, "description"?}``.
        """
        with self._data():
            base = self._store.bases.get(base_id)
            if base is None:
                raise KeyError(f"no base {base_id!r}")
            return base.add_table(table_name, fields, self._store.ids, description).id

    def table_id(self, base_id: str, table: str) -> str:
        """The ``tbl...`` id of a table given by name (or id)."""
        with self._data():
            return self._table(base_id, table).id

    def add_field(
        self, base_id: str, table: str, name: str, field_type: str, options: Mapping[str, Any] | None = None
    ) -> str:
        """Add a field to a table; returns its ``fld...`` id."""
        spec: dict[str, Any] = {"name": name, "type": field_type}
        if options is not None:
            spec["options"] = dict(options)
        with self._data():
            return self._table(base_id, table).add_field(spec, self._store.ids).id

    def set_field_type(
        self, base_id: str, table: str, field: str, field_type: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """Change a field's type (and options); stored values are kept as they are."""
        with self._data():
            fdef = self._table(base_id, table).require_field(field)
            fdef.type = field_type
            fdef.options = normalize_options(
                field_type, dict(options) if options else None, self._store.ids.new
            )

    def remove_field(self, base_id: str, table: str, field: str) -> None:
        """Delete a field and its values, as if someone deleted the column in Airtable."""
        with self._data():
            target = self._table(base_id, table)
            fdef = target.require_field(field)
            if fdef is target.fields[0]:
                raise ValueError("the primary field cannot be removed")
            target.fields.remove(fdef)
            for record in target.records.values():
                record.cells.pop(fdef.id, None)

    def add_records(
        self, base_id: str, table: str, rows: Iterable[Mapping[str, Any]], typecast: bool = False
    ) -> list[dict[str, Any]]:
        """Insert records directly (validated like the API, but any number at once)."""
        with self._data():
            target = self._table(base_id, table)
            created: list[dict[str, Any]] = []
            for chunk in _chunks([dict(row) for row in rows], MAX_RECORDS_PER_REQUEST):
                body = {"records": [{"fields": row} for row in chunk], "typecast": typecast}
                context = recops.WriteContext(self._store.ids, self._store.now, [])
                created += recops.create(target, body, context)["records"]
            return created

    def records(self, base_id: str, table: str) -> list[dict[str, Any]]:
        """Every record of a table as the API returns it (``id``, ``createdTime``, ``fields``)."""
        with self._data():
            target = self._table(base_id, table)
            return [target.record_json(record) for record in target.records.values()]

    def schema(self, base_id: str) -> dict[str, Any]:
        """What ``GET /v0/meta/bases/{base_id}/tables`` returns."""
        with self._data():
            base = self._store.bases.get(base_id)
            if base is None:
                raise KeyError(f"no base {base_id!r}")
            return {"tables": [table.schema() for table in base.tables]}


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
