"""Routing of one API request to the records and metadata operations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import _records as records
from ._control import RequestKind
from ._errors import AirtableError, invalid_request, model_not_found, not_found_route
from ._listing import Lister, ListParams, get_record
from ._model import Base, IdFactory, Table

__all__ = ["ALL_SCOPES", "Route", "Store", "classify", "dispatch", "required_scope"]

#: The token scopes the emulator knows (Airtable's "Scopes" reference); a token has all of
#: them unless it is given fewer.
ALL_SCOPES = frozenset({"data.records:read", "data.records:write", "schema.bases:read", "schema.bases:write"})


@dataclass
class Store:
    """All the emulator's data."""

    ids: IdFactory
    now: Callable[[], datetime]
    bases: dict[str, Base] = field(default_factory=dict)
    fail_rules: list[records.FailRule] = field(default_factory=list)
    lister: Lister = field(init=False)

    #: The user every token belongs to (``GET /v0/meta/whoami``).
    user_id: str = "usrFakeAirtable00"

    def __post_init__(self) -> None:
        self.lister = Lister(self.ids)

    def base(self, base_id: str) -> Base:
        base = self.bases.get(base_id)
        if base is None:
            raise model_not_found()
        return base

    def table(self, base_id: str, key: str) -> Table:
        table = self.base(base_id).table(key)
        if table is None:
            raise model_not_found()
        return table

    def write_context(self) -> records.WriteContext:
        return records.WriteContext(self.ids, self.now, self.fail_rules)


@dataclass(frozen=True)
class Route:
    """What a request addresses, known before it is handled."""

    segments: list[str]
    base_id: str | None
    kind: RequestKind


def classify(method: str, segments: list[str]) -> Route:
    """Find the base and the kind of request from the path after ``/v0/``."""
    if segments[:1] == ["meta"]:
        base_id = segments[2] if len(segments) > 2 and segments[1] == "bases" else None
        return Route(segments, base_id, "meta")
    base_id = segments[0] if segments and segments[0] else None
    reading = method == "GET" or (method == "POST" and segments[2:] == ["listRecords"])
    return Route(segments, base_id, "read" if reading else "write")


def required_scope(method: str, route: Route) -> str | None:
    """The scope a token needs for the request (None: any valid token may ask)."""
    if route.kind == "read":
        return "data.records:read"
    if route.kind == "write":
        return "data.records:write"
    if route.segments[1:] == ["whoami"]:
        return None
    return "schema.bases:read" if method == "GET" else "schema.bases:write"


def _meta(store: Store, method: str, parts: list[str], body: Any) -> Any:
    if parts == ["whoami"] and method == "GET":  # a personal access token: no "scopes" in the answer
        return {"id": store.user_id}
    if parts == ["bases"] and method == "GET":
        return {
            "bases": [{"id": b.id, "name": b.name, "permissionLevel": "create"} for b in store.bases.values()]
        }
    if len(parts) == 3 and parts[0] == "bases" and parts[2] == "tables":
        base = store.base(parts[1])
        if method == "GET":
            return {"tables": [table.schema() for table in base.tables]}
        if method == "POST":
            payload = _object(body)
            fields = payload.get("fields")
            name = payload.get("name")
            if not isinstance(fields, list) or not isinstance(name, str):
                raise invalid_request('Invalid request: a table needs "name" and a list of "fields"')
            return base.add_table(name, fields, store.ids, payload.get("description"), strict=True).schema()
    if (
        len(parts) == 5
        and parts[0] == "bases"
        and parts[2] == "tables"
        and parts[4] == "fields"
        and method == "POST"
    ):
        table = store.table(parts[1], parts[3])
        return table.add_field(_object(body), store.ids, strict=True).schema()
    raise not_found_route()


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AirtableError.of(
            422, "INVALID_REQUEST_UNKNOWN", "Invalid request: the body must be a JSON object"
        )
    return body


def _table_level(store: Store, table: Table, method: str, query: dict[str, list[str]], body: Any) -> Any:
    if method == "GET":
        return store.lister.list(table, ListParams.from_query(query))
    if method == "POST":
        return records.create(table, _object(body), store.write_context())
    if method in ("PATCH", "PUT"):
        return records.update_many(table, _object(body), method == "PUT", store.write_context())
    if method == "DELETE":
        return records.delete_many(table, query.get("records[]") or query.get("records") or [])
    raise not_found_route()


def _record_level(
    store: Store, table: Table, record_id: str, method: str, query: dict[str, list[str]], body: Any
) -> Any:
    if record_id == "listRecords" and method == "POST":
        return store.lister.list(table, ListParams.from_json(_object(body) if body is not None else {}))
    if method == "GET":
        by_id = (query.get("returnFieldsByFieldId") or [""])[-1].lower() in ("1", "true")
        return get_record(table, record_id, by_id)
    if method in ("PATCH", "PUT"):
        return records.update_one(table, record_id, _object(body), method == "PUT", store.write_context())
    if method == "DELETE":
        return records.delete_one(table, record_id)
    raise not_found_route()


def dispatch(store: Store, method: str, route: Route, query: dict[str, list[str]], body: Any) -> Any:
    """Handle one authenticated, admitted request; raises ``AirtableError``."""
    parts = route.segments
    if route.kind == "meta":
        return _meta(store, method, parts[1:], body)
    if len(parts) not in (2, 3) or not all(parts):
        raise not_found_route()
    table = store.table(parts[0], parts[1])
    if len(parts) == 2:
        return _table_level(store, table, method, query, body)
    return _record_level(store, table, parts[2], method, query, body)
