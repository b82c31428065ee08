"""The store protocol: the source of truth between the buffers and Airtable.

A store merges *deltas* (``ClientDelta``, see ``flask_jobmetrics.deltas``) into rows
atomically.

Every change to a row bumps its ``version`` and queues the row in the store's outbox
for the Airtable publisher; the outbox holds one entry per row, so changes coalesce. A
change to a completed row makes its entry due at once (unless it is backing off after an
error), so a running row the publisher postponed goes out as soon as it completes; a change
to a dead-lettered row makes it live again (its new content gets a try).

``flask_jobmetrics.stores.load_store(url)`` opens the store a URL names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, runtime_checkable

from ..deltas import ClientDelta, Op, Ops
from ..exceptions import StoreError
from ..schema import MAX_EXACT

__all__ = [
    "ClientRow",
    "Finalize",
    "IDEMPOTENCY_TTL",
    "JobRow",
    "JobUpdate",
    "OutboxItem",
    "Store",
    "decode_fields",
    "encode_fields",
    # The delta vocabulary the protocol speaks (defined in flask_jobmetrics.deltas).
    "ClientDelta",
    "Op",
    "Ops",
]

#: Called inside the store's transaction with the row's merged fields, to change them.
Finalize = Callable[[dict[str, Any]], None]
#: Called inside the store's transaction with the job's fields and its client rows.
JobUpdate = Callable[[dict[str, Any], Sequence["ClientRow"]], None]

#: Seconds an applied idempotency key (or delivery token) is remembered.
IDEMPOTENCY_TTL = 24 * 3600.0
#: Delivery tokens are kept among the idempotency keys under this prefix (random, so they
#: never meet a key a caller chose).
TOKEN_PREFIX = "delivery:"


_DT_TAG = "$dt"


def encode_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields -> JSON-able values (datetimes tagged as ``{"$dt": ISO}``)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            value = {_DT_TAG: value.astimezone(timezone.utc).isoformat()}
        out[name] = value
    return out


def decode_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``encode_fields``."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and _DT_TAG in value:
            value = datetime.fromisoformat(value[_DT_TAG])
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A (run, client) row as stored. ``fields`` holds every field, Status included."""

    run_id: str
    client_id: str
    fields: Mapping[str, Any]
    completed: bool = False
    version: int = 0
    #: Set on rows a merge returns: whether the row's job had already completed (so its
    #: totals must be recomputed). Not stored; False on rows read back.
    job_completed: bool = field(default=False, compare=False)
    #: Set on rows a merge returns: the (field, value) of sums not added because the total
    #: would pass 2**53. Not stored.
    refused: tuple[tuple[str, Any], ...] = field(default=(), compare=False)
    #: How far a sum may go either way with every number of ``fields`` still within 2**53
    #: once added to it: the update path checks a sum exactly only past this.
    headroom: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        top: int | float = 0
        for value in self.fields.values():
            kind = type(value)
            if kind is int or kind is float:
                top = max(top, abs(value))
        # (a number a custom normalizer let through past every bound leaves no headroom)
        headroom = max(0, MAX_EXACT - math.ceil(top)) if math.isfinite(top) else 0
        object.__setattr__(self, "headroom", headroom)


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job row as stored, with the IDs of its client rows (sorted)."""

    run_id: str
    fields: Mapping[str, Any]
    completed: bool = False
    version: int = 0
    client_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A row waiting to be published. ``client_id`` is ``""`` for a job row."""

    kind: Literal["job", "client"]
    run_id: str
    client_id: str
    version: int
    attempts: int = 0
    due_at: float = 0.0
    last_error: str | None = None
    dead: bool = False


@runtime_checkable
class Store(Protocol):
    """What the service needs from a store. Every method is atomic and thread-safe.

    Rows created by a merge get ``Status`` ``Running`` unless the delta sets one; the
    job row of a new client row is created too (``Running``, ``Start Time`` the client's).
    A job's ``Start Time`` is kept at the earliest of its own and its clients' starts.
    Failures of the backend raise ``StoreError``.
    """

    url: str
    #: Whether the rows outlive this process (False: a restart starts empty).
    durable: bool
    #: Whether other processes see the same rows (False: each process has its own).
    shared: bool
    #: Whether changed rows are queued in the outbox (False when no one publishes them).
    outbox: bool

    @property
    def error(self) -> StoreError | None:
        """Why the store could not be opened yet (a ``DeferredStore``); None once it is open."""

    # -- client rows
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        """Merge several deltas in one transaction; returns the rows in order.

        A delta whose idempotency key was already applied changes nothing (its row is
        returned as it is). With a ``token`` (a delivery of the buffer), the token is
        recorded in the same transaction, and a batch whose token was already applied
        changes nothing: its rows are returned as they are. Tokens are kept as long as
        idempotency keys.
        """

    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        """Merge one delta, then call ``finalize(fields)`` in the same transaction.

        Returns the row and whether the delta was applied (False: idempotency key seen).
        """

    def get_client(self, run_id: str, client_id: str) -> ClientRow | None: ...

    def list_clients(self, run_id: str) -> list[ClientRow]:
        """The client rows of a run, ordered by client ID."""

    def list_clients_of(self, run_ids: Sequence[str]) -> dict[str, list[ClientRow]]:
        """The client rows of several runs in one read: run ID -> its rows by client ID
        (``[]`` for a run without any), for every run asked."""

    def get_clients_of(self, client_id: str, run_ids: Sequence[str]) -> dict[str, ClientRow]:
        """One client's rows in several runs in one read: run ID -> its row, in the order
        asked, for the runs that have one."""

    # -- job rows
    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        """Create the job row with ``fields`` unless it exists; returns (row, created)."""

    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        """Create a job row with ``fields`` at a fresh base run ID; atomic, one round trip.

        The ID is the first second at or after both ``earliest`` (a base run ID, the
        clock's now) and the second after the last one this store reserved (its high-water
        mark, kept in the store), that no job row holds. The cost does not grow with the
        number of runs stored: only rows created with an explicit run ID are stepped over.
        """

    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        """Call ``update(fields, client_rows)`` on the job row in one transaction.

        Raises ``KeyError`` when the job does not exist. ``complete`` sets the flag.
        """

    def get_job(self, run_id: str) -> JobRow | None: ...

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRow]:
        """Jobs by ``Start Time``, newest first."""

    # -- outbox (drained by the Airtable publisher)
    def outbox_due(self, now: float, limit: int) -> list[OutboxItem]:
        """Live (not dead) entries with ``due_at <= now``, oldest due first."""

    def outbox_done(self, items: Sequence[OutboxItem]) -> None:
        """Remove entries whose row has not changed since ``item.version``."""

    def outbox_retry(self, item: OutboxItem, *, due_at: float, error: str | None, dead: bool = False) -> None:
        """Postpone an entry, or move it to the dead letters. With ``error`` its attempts
        count up; without one (a postponement) they start again from 0."""

    def outbox_counts(self) -> tuple[int, int]:
        """(pending, dead) entries."""

    def outbox_dead(self) -> list[OutboxItem]: ...

    def outbox_revive(self) -> int:
        """Make every dead entry due now again; returns how many."""

    # -- coordination between processes
    def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        """Take or renew the lease ``name`` for ``owner`` until ``now + ttl``."""

    def take_token(self, name: str, rate: float, now: float) -> float:
        """Shared pacing: one slot every ``1/rate`` s (no burst, so no window of one
        second ever holds more than ``rate`` slots). 0.0 when a slot was taken, else the
        seconds to wait before asking again."""

    def close(self) -> None: ...
