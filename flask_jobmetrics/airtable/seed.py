"""Seeding a ``memory://`` store from Airtable after a restart.

A memory store starts empty in every process, so its first publish of a row would
overwrite the counts Airtable already shows with this process's smaller ones. Before the
first publish of a run's rows the publisher reads that run's rows of the table with one
paged list request (100 records a page, a formula built with ``pyairtable.formulas``), and
merges each row in just before its own first publish: sums are added, Start/End Time
merged as min/max, anything else only filled in where the store has nothing yet. Only our
fields are taken (a formula field of the base is never copied, so never written back).
Stores shared between processes (SQLite, Redis) are the source of truth and are never
seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from pyairtable.formulas import EQ, FIND, Field, match

from ..airtable_limits import MAX_PAGE_SIZE
from ..deltas import ClientDelta, Ops
from ..log import StructuredLogger
from ..rules import job_totals_into
from ..schema import InvalidValue, MetricRegistry, combine
from ..stores.base import ClientRow, OutboxItem, Store
from .fields import CLIENT_ID, RUN_ID, field_definitions
from .names import Kind
from .targets import Target

__all__ = ["ReadBack", "run_formula", "seed_client", "seed_job"]

PAGE_SIZE = MAX_PAGE_SIZE


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


def run_formula(target: Target, run_id: str) -> str:
    """The formula matching every row of ``run_id`` in the target's table: the job row by
    its ``Run ID``, the client rows by a ``Run ID`` starting with ``<run>-``."""
    run_field = target.names.base(RUN_ID) or RUN_ID
    if target.kind == "job":
        return str(match({run_field: run_id}))
    return str(EQ(FIND(f"{run_id}-", Field(run_field)), 1))


class ReadBack:
    """What Airtable already holds of each run, read once per table and process, merged
    into the (memory) store just before each row's first publish."""

    def __init__(
        self,
        store: Store,
        registry: MetricRegistry,
        targets: Mapping[Kind, Target],
        *,
        pace: Callable[[], None],
        log: StructuredLogger,
    ) -> None:
        self.store = store
        self.registry = registry
        self.targets = targets
        self.pace = pace
        self.log = log
        #: (kind, run) -> the rows read and not merged yet, by client ID ("" for the job row).
        self._unmerged: dict[tuple[Kind, str], dict[str, dict[str, Any]]] = {}

    def ready(self, item: OutboxItem) -> bool:
        """Merge Airtable's copy of the item's row into the store if it was not yet; False
        when Airtable could not be read (try again on the next pass: nothing is sent).

        Before a job row, every client row Airtable holds of the run is merged, and the
        job's totals recomputed from them: the job then counts the clients of every life.
        """
        clients = self._rows("client", item.run_id)
        rows = clients if item.kind == "client" else self._rows("job", item.run_id)
        if clients is None or rows is None:
            return False
        if item.kind == "client":
            remote = rows.pop(item.client_id, None)
            if remote:
                seed_client(self.store, self.registry, item.run_id, item.client_id, remote)
            return True
        merged = bool(clients)
        for client_id in list(clients):
            seed_client(self.store, self.registry, item.run_id, client_id, clients.pop(client_id))
        if remote := rows.pop("", None):
            seed_job(self.store, self.registry, item.run_id, remote)
            merged = True
        if merged:
            registry = self.registry
            self.store.update_job(
                item.run_id, lambda fields, rows: job_totals_into(registry, fields, [r.fields for r in rows])
            )
        return True

    def _rows(self, kind: Kind, run_id: str) -> dict[str, dict[str, Any]] | None:
        """The rows of the run read from the kind's table and not merged yet (read once)."""
        rows = self._unmerged.get((kind, run_id))
        if rows is None:
            rows = self._read(self.targets[kind], run_id)
            if rows is not None:
                self._unmerged[(kind, run_id)] = rows
        return rows

    def _read(self, target: Target, run_id: str) -> dict[str, dict[str, Any]] | None:
        ours = set(field_definitions(self.registry.specs, job=target.kind == "job"))
        rows: dict[str, dict[str, Any]] = {}
        pages = target.table.iterate(formula=run_formula(target, run_id), page_size=PAGE_SIZE)
        try:
            while True:
                self.pace()  # every page is a request against the base's limit
                page = next(pages, None)
                if page is None:
                    break
                for record in page:
                    fields = {k: v for k, v in target.remote(record["fields"]).items() if k in ours}
                    rows[_client_of(target, run_id, fields)] = fields
        except (requests.RequestException, ValueError) as exc:
            self.log.warning(
                "could not read run %s from Airtable table %r before publishing: %s", run_id, target.name, exc
            )
            return None
        return rows


def _client_of(target: Target, run_id: str, fields: Mapping[str, Any]) -> str:
    if target.kind == "job":
        return ""
    client = fields.get(CLIENT_ID)
    if isinstance(client, str) and client:
        return client
    return str(fields.get(RUN_ID, ""))[len(run_id) + 1 :]
