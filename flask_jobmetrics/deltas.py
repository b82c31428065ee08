"""The delta vocabulary: what a change to a row is, shared by the buffer, the request
context, the views and the stores.

A delta is a mapping of Airtable field name to an *op*, ``(aggregate, value)`` where
aggregate is ``sum``/``min``/``max``/``last``, ``set`` (replace, used by ``totals=True``) or
``append`` (text added in timestamp order to a bounded field; its value is ``(limit, text)``,
see ``journal``). Values are canonical (see ``schema``): numbers, aware UTC datetimes, strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .journal import APPEND, append_text, merge_appends
from .models import Status
from .schema import MAX_EXACT, STATUS, combine

__all__ = ["ClientDelta", "Op", "Ops", "apply_ops", "client_fields_after", "merge_ops"]

Op = tuple[str, Any]
_NUMBERS = (int, float)
Ops = dict[str, Op]


def merge_ops(into: Ops, new: Mapping[str, Op]) -> None:
    """Fold the ops of ``new`` into ``into`` (both deltas of the same row)."""
    for name, (agg, value) in new.items():
        old = into.get(name)
        if old is None or agg == "set":
            into[name] = (agg, value)
        elif agg == APPEND and old[0] == APPEND:
            into[name] = (APPEND, merge_appends(old[1], value))
        else:
            old_agg, old_value = old
            into[name] = (old_agg, combine(agg, old_value, value))


def apply_ops(fields: dict[str, Any], ops: Mapping[str, Op]) -> list[tuple[str, Any]]:
    """Merge ``ops`` into a row's ``fields`` in place; returns the (field, value) of sums
    refused because they would pass 2**53 (those fields keep their value)."""
    refused: list[tuple[str, Any]] = []
    for name, (agg, value) in ops.items():
        if agg == "set":
            fields[name] = value
            continue
        if agg == APPEND:
            fields[name] = append_text(fields.get(name), value)
            continue
        merged = combine(agg, fields.get(name), value)
        if agg == "sum" and type(merged) in _NUMBERS and not -MAX_EXACT <= merged <= MAX_EXACT:
            refused.append((name, value))
        else:
            fields[name] = merged
    return refused


def client_fields_after(
    current: Mapping[str, Any] | None,
    ops: Mapping[str, Op] | None,
    refused: list[tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """A client row's fields with ``ops`` merged in (a row not stored yet starts ``Running``);
    sums refused by ``apply_ops`` are appended to ``refused``."""
    fields = dict(current) if current is not None else {STATUS: Status.RUNNING.value}
    if ops:
        refused_now = apply_ops(fields, ops)
        if refused is not None:
            refused.extend(refused_now)
    return fields


@dataclass(slots=True)
class ClientDelta:
    """Changes to one (run, client) row, as buffered and as merged."""

    run_id: str
    client_id: str
    ops: Ops = field(default_factory=dict)
    #: Set the row's completed flag.
    complete: bool = False
    #: Applied once: a delta whose key was applied in the last 24 h changes nothing.
    idempotency_key: str | None = None
