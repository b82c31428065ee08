"""The Airtable base's tables and fields: read them, check them, create what is missing.

``check`` compares a base with the fields the publisher writes (``field_definitions``):
missing tables and fields are problems (writes would fail or lose data), a field of another
type than the one we create is a warning, and a single-select ``Status`` without some of
our choices is a problem (Airtable refuses a record whose choice does not exist). ``init``
creates missing tables and fields through the metadata API; it cannot change an existing
field's type or options (Airtable's API only renames fields), so missing choices are
reported for a human to add. Every call goes through one ``make_api``, the way the
publisher builds its client (no pyairtable retries: a retried POST would create twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, cast

import requests
from pyairtable import Api
from pyairtable.models.schema import SingleSelectFieldSchema

from ..config import AIRTABLE_OFF, Settings
from ..exceptions import JobMetricsError
from ..schema import STATUS, MetricSpec
from .fields import field_definitions
from .names import table_field_names

__all__ = [
    "AirtableSchemaError",
    "FieldInfo",
    "SchemaReport",
    "TypeMismatch",
    "check",
    "init",
    "make_api",
    "read_tables",
    "tables_for",
]

#: Table name -> field name -> ``{"type": ..., "options"?: ...}`` as the metadata API takes it.
TableDefinitions = Mapping[str, Mapping[str, Mapping[str, Any]]]
#: Called before every request, to pace them (e.g. a shared token bucket); may sleep.
Pace = Callable[[], None]

_HINTS = {
    401: " (check JOBMETRICS_AIRTABLE_API_KEY)",
    403: (
        " (check JOBMETRICS_AIRTABLE_BASE_ID, that the token can access the base and has the"
        " schema.bases:read and schema.bases:write scopes)"
    ),
    404: " (check JOBMETRICS_AIRTABLE_ENDPOINT_URL and JOBMETRICS_AIRTABLE_BASE_ID)",
    429: " (the base is rate limited for 30 s; try again later)",
}


class AirtableSchemaError(JobMetricsError, RuntimeError):
    """The metadata API refused (401/403/404/...) or could not be reached.

    ``done`` lists what ``init`` had already created before the failure.
    """

    def __init__(self, message: str, done: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.done = list(done)


def make_api(settings: Settings) -> Api:
    """The ``pyairtable.Api`` for ``settings``: its timeout and endpoint, no retries."""
    if not settings.airtable_api_key:
        raise AirtableSchemaError(AIRTABLE_OFF)
    return Api(
        settings.airtable_api_key,
        timeout=cast("tuple[int, int]", settings.airtable_timeout),  # requests takes floats too
        retry_strategy=None,
        endpoint_url=settings.airtable_endpoint_url,
    )


def tables_for(settings: Settings, specs: Iterable[MetricSpec]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """The configured table names -> the fields we write to each, in the base's names
    (``JOBMETRICS_AIRTABLE_FIELD_NAMES``: renamed, and those not published left out)."""
    specs = tuple(specs)
    names = table_field_names(settings, specs)
    return {
        settings.airtable_job_table: names["job"].definitions(field_definitions(specs, job=True)),
        settings.airtable_client_table: names["client"].definitions(field_definitions(specs, job=False)),
    }


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldInfo:
    """One existing field: its type, and its choices when it is a single select."""

    type: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _Table:
    id: str
    fields: dict[str, FieldInfo]


def _error_detail(response: requests.Response | None) -> str:
    """``HTTP 403 TYPE: message`` from Airtable's error body."""
    if response is None:
        return "no response"
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {status}: {' '.join(response.text.split())[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"HTTP {status} {error.get('type', '')}: {error.get('message', '')}"
    if isinstance(error, str):
        return f"HTTP {status} {error}"
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return f"HTTP {status} {errors[0].get('error', '')}: {errors[0].get('message', '')}"
    return f"HTTP {status}: {str(body)[:200]}"


def _failure(action: str, exc: Exception, done: Sequence[str] = ()) -> AirtableSchemaError:
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        detail = _error_detail(exc.response) + _HINTS.get(status, "")
        return AirtableSchemaError(f"Airtable refused to {action}: {detail}", done)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return AirtableSchemaError(f"Airtable unreachable ({action}): {type(exc).__name__}: {exc}", done)
    return AirtableSchemaError(f"could not {action}: {type(exc).__name__}: {exc}", done)


def _read(api: Api, base_id: str) -> dict[str, _Table]:
    try:
        schema = api.base(base_id).schema(force=True)
    except (requests.RequestException, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise _failure(f"read the schema of base {base_id}", exc) from exc
    tables: dict[str, _Table] = {}
    for table in schema.tables:
        fields: dict[str, FieldInfo] = {}
        for fdef in table.fields:
            choices = None
            if isinstance(fdef, SingleSelectFieldSchema):
                choices = tuple(choice.name for choice in fdef.options.choices)
            kind = fdef.type  # a str enum for known types, a plain str for the others
            fields[fdef.name] = FieldInfo(str(kind.value if isinstance(kind, Enum) else kind), choices)
        tables[table.name] = _Table(table.id, fields)
    return tables


def read_tables(api: Api, base_id: str) -> dict[str, dict[str, str]]:
    """Table name -> {field name: field type}, from the metadata API (``schema.bases:read``)."""
    return {
        name: {f: info.type for f, info in table.fields.items()}
        for name, table in _read(api, base_id).items()
    }


# -- check --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeMismatch:
    """A field we write that exists with another type (a warning: writes may be refused)."""

    table: str
    field: str
    actual: str
    expected: str


def _warning(mismatch: TypeMismatch) -> str:
    return (
        f'{mismatch.table}: field "{mismatch.field}" is {mismatch.actual}, we write {mismatch.expected}'
        " (warning: Airtable may refuse some values)"
    )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


@dataclass(frozen=True)
class SchemaReport:
    """What ``check`` found. ``ok``: every table, field and Status choice is present."""

    base_id: str
    #: The tables checked, in order, with the number of fields we write to each.
    tables: Mapping[str, int]
    missing_tables: tuple[str, ...] = ()
    #: Table -> (field name, the type we would create), for tables that exist.
    missing_fields: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    wrong_types: tuple[TypeMismatch, ...] = ()
    #: Table -> the Status choices its single-select field lacks.
    missing_choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing is missing (type differences are only warnings)."""
        return not (
            self.missing_tables or any(self.missing_fields.values()) or any(self.missing_choices.values())
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per field of another type than the one we write."""
        return tuple(_warning(w) for w in self.wrong_types)

    def lines(self) -> list[str]:
        """The report for humans: one line per table or problem, then a verdict."""
        out = [f"Airtable base {self.base_id}:"]
        wrong = {(w.table, w.field): w for w in self.wrong_types}
        for table, count in self.tables.items():
            if table in self.missing_tables:
                out.append(f"  {table}: table missing ({count} fields to create)")
                continue
            missing = self.missing_fields.get(table, ())
            choices = self.missing_choices.get(table, ())
            mismatches = [w for (t, _), w in wrong.items() if t == table]
            if not (missing or choices or mismatches):
                out.append(f"  {table}: ok ({count} fields)")
                continue
            out += [f'  {table}: field "{name}" missing ({kind})' for name, kind in missing]
            if choices:
                out.append(f'  {table}: field "{STATUS}" lacks the choices {_quoted(choices)}')
            out += [f"  {_warning(w)}" for w in mismatches]
        out.append(self._verdict())
        return out

    def _verdict(self) -> str:
        if self.ok:
            suffix = f" ({len(self.wrong_types)} warning(s))" if self.wrong_types else ""
            return f"OK: every table and field is present{suffix}."
        parts = []
        if self.missing_tables:
            parts.append(f"{len(self.missing_tables)} table(s)")
        if fields := sum(len(f) for f in self.missing_fields.values()):
            parts.append(f"{fields} field(s)")
        creatable = bool(parts)
        if choices := sum(len(c) for c in self.missing_choices.values()):
            parts.append(f"{choices} Status choice(s)")
        advice = []
        if creatable:
            advice.append("`flask jobmetrics airtable init` creates the tables and fields")
        if choices:
            advice.append(f'add the choices to "{STATUS}" in Airtable (the API cannot)')
        advice_text = "; ".join(advice)
        return f"Missing: {', '.join(parts)}. {advice_text[:1].upper()}{advice_text[1:]}."


def _wanted_choices(definition: Mapping[str, Any]) -> tuple[str, ...]:
    options = definition.get("options") or {}
    return tuple(choice["name"] for choice in options.get("choices", []))


def _compare(base_id: str, existing: Mapping[str, _Table], tables: TableDefinitions) -> SchemaReport:
    missing_tables: list[str] = []
    missing_fields: dict[str, tuple[tuple[str, str], ...]] = {}
    wrong: list[TypeMismatch] = []
    missing_choices: dict[str, tuple[str, ...]] = {}
    for table, definitions in tables.items():
        found = existing.get(table)
        if found is None:
            missing_tables.append(table)
            continue
        absent: list[tuple[str, str]] = []
        for name, definition in definitions.items():
            info = found.fields.get(name)
            expected = str(definition["type"])
            if info is None:
                absent.append((name, expected))
            elif info.type != expected:
                wrong.append(TypeMismatch(table, name, info.type, expected))
            elif info.choices is not None:
                lacking = tuple(c for c in _wanted_choices(definition) if c not in info.choices)
                if lacking:
                    missing_choices[table] = lacking
        if absent:
            missing_fields[table] = tuple(absent)
    return SchemaReport(
        base_id,
        {table: len(definitions) for table, definitions in tables.items()},
        tuple(missing_tables),
        missing_fields,
        tuple(wrong),
        missing_choices,
    )


def _no_pace() -> None:
    pass


def check(api: Api, base_id: str, tables: TableDefinitions, *, pace: Pace = _no_pace) -> SchemaReport:
    """Compare the base with ``tables`` (table name -> ``field_definitions(...)``); one request."""
    pace()
    return _compare(base_id, _read(api, base_id), tables)


# -- init ---------------------------------------------------------------------------------


def _field_payload(name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": name, "type": definition["type"]}
    if definition.get("options"):
        payload["options"] = definition["options"]
    return payload


def init(
    api: Api,
    base_id: str,
    tables: TableDefinitions,
    *,
    dry_run: bool = False,
    pace: Pace = _no_pace,
) -> list[str]:
    """Create the missing tables (first field primary) and fields; returns what it did.

    With ``dry_run`` it only reads the schema and says what it would do. Missing Status
    choices cannot be added through Airtable's API: they are reported, not added. A
    second run finds nothing to do. ``pace`` is called before every request.
    """
    pace()
    existing = _read(api, base_id)
    report = _compare(base_id, existing, tables)
    verb = "Would create" if dry_run else "Created"
    done: list[str] = []
    base = api.base(base_id)
    for table in report.missing_tables:
        payload = [_field_payload(name, d) for name, d in tables[table].items()]
        if not dry_run:
            pace()
            try:  # one POST; base.create_table would also re-read the whole schema
                api.post(base.urls.tables, json={"name": table, "fields": payload})
            except (requests.RequestException, ValueError) as exc:
                raise _failure(f'create table "{table}"', exc, done) from exc
        done.append(
            f'{verb} table "{table}" with {len(payload)} fields ({_quoted(f["name"] for f in payload)})'
        )
    for table, absent in report.missing_fields.items():
        target = api.table(base_id, existing[table].id)
        for name, kind in absent:
            definition = tables[table][name]
            if not dry_run:
                pace()
                try:
                    target.create_field(name, kind, options=definition.get("options") or None)
                except (requests.RequestException, ValueError) as exc:
                    raise _failure(f'create field "{name}" in "{table}"', exc, done) from exc
            done.append(f'{verb} field "{name}" ({kind}) in "{table}"')
    for table, lacking in report.missing_choices.items():
        done.append(
            f'Cannot add the choices {_quoted(lacking)} to "{STATUS}" in "{table}":'
            " Airtable's API does not change a field's options; add them in Airtable"
        )
    return done
