"""The base's names for our fields (``JOBMETRICS_AIRTABLE_FIELD_NAMES``), per table.

An existing base may name a field differently (``Total Tokens Used`` for our ``Total
Tokens``) or lack it on purpose. The setting maps our field names to the base's, for both
tables at once, with ``None`` for "do not publish this field"; a value that is itself a
mapping, under one of the configured table names, applies to that table only::

    JOBMETRICS_AIRTABLE_FIELD_NAMES = {
        "Total Tokens": "Total Tokens Used",
        "Job Tracking": {"Total Tokens": None, "Leads Processed": None},
    }

Publishing, ``airtable check`` and ``airtable init`` all go through ``FieldNames``; a key
that is not one of our fields is a ``ConfigurationError`` naming it and its closest match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from ..config import PREFIX, Settings
from ..exceptions import ConfigurationError
from ..schema import MetricSpec
from ..spelling import did_you_mean
from .fields import CLIENT_KEY_FIELDS, JOB_KEY_FIELDS, field_definitions

__all__ = ["FieldNames", "Kind", "table_field_names"]

Kind = Literal["job", "client"]
KEY = PREFIX + "AIRTABLE_FIELD_NAMES"


class FieldNames:
    """Our field names -> the base's, for one table. Unmapped fields keep their name."""

    def __init__(self, mapping: Mapping[str, str | None] | None = None) -> None:
        self._to: dict[str, str | None] = dict(mapping or {})
        self._from = {theirs: ours for ours, theirs in self._to.items() if theirs is not None}

    def __repr__(self) -> str:
        return f"FieldNames({self._to!r})"

    def __bool__(self) -> bool:
        return bool(self._to)

    def base(self, ours: str) -> str | None:
        """The base's name for our field, or None when it is not published."""
        return self._to.get(ours, ours)

    def ours(self, theirs: str) -> str | None:
        """Our name for a field of the base, or None when none of ours is published there."""
        if theirs in self._from:
            return self._from[theirs]
        return None if theirs in self._to else theirs

    def to_base(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record in our names -> in the base's, without the fields that are not published."""
        return {name: value for ours, value in record.items() if (name := self.base(ours)) is not None}

    def from_base(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record read from the base -> in our names (fields no one of ours maps to keep theirs)."""
        return {name: value for theirs, value in record.items() if (name := self.ours(theirs)) is not None}

    def definitions(self, ours: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        """``field_definitions`` in the base's names, without the fields not published."""
        return {name: d for field, d in ours.items() if (name := self.base(field)) is not None}


def _checked(
    mapping: Mapping[str, Any], known: Mapping[str, Mapping[str, Any]], keys: Iterable[str], where: str
) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for ours, theirs in mapping.items():
        if ours not in known:
            raise ConfigurationError(KEY, ours, f"is not one of our fields{where}{did_you_mean(ours, known)}")
        if theirs is None and ours in keys:
            raise ConfigurationError(KEY, ours, "is a merge key of its table: it cannot be left out")
        out[ours] = theirs
    targets = [name for name in (out.get(f, f) for f in known) if name is not None]
    if doubled := sorted({name for name in targets if targets.count(name) > 1}):
        raise ConfigurationError(KEY, doubled[0], f"names two of our fields{where}")
    return out


def table_field_names(settings: Settings, specs: Iterable[MetricSpec]) -> dict[Kind, FieldNames]:
    """The validated ``JOBMETRICS_AIRTABLE_FIELD_NAMES`` for each table (``ConfigurationError``
    for a key that is not one of our fields, a left-out merge key, or one base name used twice)."""
    specs = tuple(specs)
    config = settings.airtable_field_names
    tables: dict[Kind, tuple[str, Mapping[str, Mapping[str, Any]], list[str]]] = {
        "job": (settings.airtable_job_table, field_definitions(specs, job=True), JOB_KEY_FIELDS),
        "client": (settings.airtable_client_table, field_definitions(specs, job=False), CLIENT_KEY_FIELDS),
    }
    names = {name for name, _, _ in tables.values()}
    shared = {k: v for k, v in config.items() if not isinstance(v, Mapping)}
    both = {**tables["job"][1], **tables["client"][1]}
    _checked(shared, both, (), "")
    for key, value in config.items():
        if isinstance(value, Mapping) and key not in names:
            raise ConfigurationError(
                KEY, key, f"is neither one of our fields nor a table ({' or '.join(sorted(names))})"
            )
    out: dict[Kind, FieldNames] = {}
    for kind, (table, known, keys) in tables.items():
        own = {k: v for k, v in shared.items() if k in known}
        section = config.get(table)
        if isinstance(section, Mapping):
            own.update(section)
        out[kind] = FieldNames(_checked(own, known, keys, f" in {table!r}"))
    return out
