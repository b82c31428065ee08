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
from .schema import MAX_EXACT, STATUS, combine
from .status import Status

__all__ = ["ClientDelta", "Op", "Ops", "apply_ops", "client_fields_after", "merge_ops", "refuse_inexact_sums"]

Op = tuple[str, Any]
_NUMBERS = (int, float)
Ops = dict[str, Op]


#: What ``merge_ops`` returns in the usual case (never appended to).
_NONE_REFUSED: list[tuple[str, Any]] = []
_NO_FIELDS: Mapping[str, Any] = {}


def merge_ops(
    into: Ops, new: Mapping[str, Op], within: Mapping[str, Any] | None = None, headroom: int = 0
) -> list[tuple[str, Any]]:
    """Fold the ops of ``new`` into ``into`` (both deltas of the same row).

    ``within``: the row's fields as stored. A sum whose total with them and ``into`` would
    pass 2**53 is then left out (the store would refuse it, and with it the valid sums held
    beside it); returns those, as (field, value). A merged sum no larger than ``headroom``
    either way is within the bound whatever the row holds (``ClientRow.headroom``), so only
    larger ones are looked up in ``within``.
    """
    refused = _NONE_REFUSED
    low = -headroom
    for name, op in new.items():  # the update path: the usual ops merged inline
        old = into.get(name)
        if old is None:
            if (
                within is not None
                and op[0] == "sum"
                and not low <= op[1] <= headroom
                and _beyond(name, op[1], within)
            ):
                refused = [*refused, (name, op[1])]
                continue
            into[name] = op  # ops are tuples: shared, never changed
            continue
        agg, value = op
        old_agg, old_value = old
        if agg == "sum":  # numbers (normalized), added to a sum or to a total (set)
            total = old_value + value
            if (
                within is not None
                and not low <= total <= headroom
                # a total (set) replaces the stored value: only the bound itself applies
                and _beyond(name, total, within if old_agg != "set" else _NO_FIELDS)
            ):
                refused = [*refused, (name, value)]
                continue
            into[name] = (old_agg, total)
        elif agg == "max" and old_agg == "max":  # Last Update, End Time
            if old_value is None or (value is not None and value > old_value):
                into[name] = op
        elif agg == "min" and old_agg == "min":  # Start Time
            if old_value is None or (value is not None and value < old_value):
                into[name] = op
        elif agg == "set":
            into[name] = op
        elif agg == APPEND and old_agg == APPEND:
            into[name] = (APPEND, merge_appends(old_value, value))
        else:
            into[name] = (old_agg, combine(agg, old_value, value))
    return refused


def _beyond(name: str, total: Any, within: Mapping[str, Any]) -> bool:
    """Whether ``total`` with the stored value of ``name`` passes 2**53."""
    total += within.get(name) or 0
    return not -MAX_EXACT <= total <= MAX_EXACT


def refuse_inexact_sums(
    ops: Ops, stored: Mapping[str, Any] | None, held: Mapping[str, Op] | None
) -> list[tuple[str, Any]]:
    """Take out of ``ops`` the sums whose total with a row's ``stored`` fields and the
    ``held`` ops not stored yet would pass 2**53 (``merge_ops(within=)`` for ops held in
    several parts); returns them as (field, value)."""
    check = dict(held) if held is not None else {}
    refused = merge_ops(check, ops, stored or {})
    for name, _ in refused:
        del ops[name]
    return refused


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
