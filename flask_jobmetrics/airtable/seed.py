"""Seeding a ``memory://`` store from Airtable after a restart.

A memory store starts empty in every process, so its first publish of a row would
overwrite the counts Airtable already shows with this process's smaller ones. Before
that first publish the publisher reads the row once (a formula built with
``pyairtable.formulas``) and merges it in: sums are added, Start/End Time merged as
min/max, anything else only filled in where the store has nothing yet. Stores shared
between processes (SQLite, Redis) are the source of truth and are never seeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..deltas import ClientDelta, Ops
from ..schema import InvalidValue, MetricRegistry, combine
from ..stores.base import ClientRow, Store
from .fields import CLIENT_ID, RUN_ID

__all__ = ["seed_client", "seed_job"]


def _split(registry: MetricRegistry, remote: Mapping[str, Any]) -> tuple[Ops, dict[str, Any]]:
    """Remote fields -> ops merged by aggregation, and values only filled in when absent."""
    ops: Ops = {}
    fill: dict[str, Any] = {}
    for name, value in remote.items():
        if name in (RUN_ID, CLIENT_ID):
            continue
        spec = registry.by_field(name)
        try:
            if spec is not None and spec.aggregate in ("sum", "min", "max"):
                ops[name] = (spec.aggregate, spec.coerce(value))
            else:
                fill[name] = spec.coerce(value) if spec is not None else value
        except (InvalidValue, ValueError, TypeError):
            continue  # a value edited by hand in Airtable that we cannot read: ours wins
    return ops, fill


def _fill(fields: dict[str, Any], values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        fields.setdefault(name, value)


def seed_client(
    store: Store, registry: MetricRegistry, run_id: str, client_id: str, remote: Mapping[str, Any]
) -> ClientRow:
    """Merge Airtable's copy of a client row into the store."""
    ops, fill = _split(registry, remote)
    row, _ = store.merge_client(ClientDelta(run_id, client_id, ops), lambda fields: _fill(fields, fill))
    return row


def seed_job(store: Store, registry: MetricRegistry, run_id: str, remote: Mapping[str, Any]) -> None:
    """Merge Airtable's copy of a job row into the store (its aggregates are recomputed later)."""
    ops, fill = _split(registry, remote)

    def merge(fields: dict[str, Any], clients: Sequence[ClientRow]) -> None:
        for name, (aggregate, value) in ops.items():
            # the job's sums are recomputed from its (seeded) clients; keep its own if it has them
            current = fields.get(name)
            fields[name] = (
                fields.get(name, value) if aggregate == "sum" else combine(aggregate, current, value)
            )
        _fill(fields, fill)

    store.ensure_job(run_id, {})
    store.update_job(run_id, merge)
