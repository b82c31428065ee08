"""``memory://``: a thread-safe store inside one process, for tests and single scripts.

Each ``memory://`` store belongs to one app; nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ..deltas import ClientDelta
from ..forksafe import ForkSafeLock
from ._common import (
    copy_row,
    due_items,
    fresh_run_id,
    job_start_from_client,
    new_job_fields,
    next_client_row,
    start_sort_key,
    status_matches,
)
from .base import (
    IDEMPOTENCY_TTL,
    TOKEN_PREFIX,
    ClientRow,
    Finalize,
    JobRow,
    JobUpdate,
    OutboxItem,
)

__all__ = ["MemoryStore"]

_Key = tuple[str, str, str]  # (kind, run_id, client_id)
_MISSING = object()


class MemoryStore:
    """The store protocol on dicts under one lock."""

    durable = False
    shared = False
    error = None  # open once constructed (see Store.error)

    def __init__(
        self,
        url: str = "memory://",
        *,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        clock: Callable[[], float] = time.time,
        outbox: bool = True,
    ) -> None:
        self.url = url
        self.outbox = outbox
        self._ttl = idempotency_ttl
        self._clock = clock
        self._lock = ForkSafeLock()  # a forked child never inherits it held
        self._clients: dict[tuple[str, str], ClientRow] = {}
        self._jobs: dict[str, JobRow] = {}
        self._run_id_mark: int | None = None  # the last second reserve_job took
        self._keys: dict[str, float] = {}
        self._purge_at = 1024
        self._outbox: dict[_Key, OutboxItem] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._next_slot: dict[str, float] = {}
        #: While a merge runs: (dict, key, old value) of every write, undone if it fails.
        self._undo: list[tuple[MutableMapping[Any, Any], Any, Any]] | None = None

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """Undo every write of the block when it raises (each change is all or nothing)."""
        with self._lock:
            if self._undo is not None:  # called from a callback: part of the outer change
                yield
                return
            undo: list[tuple[MutableMapping[Any, Any], Any, Any]] = []
            self._undo = undo
            try:
                yield
            except BaseException:
                for target, key, old in reversed(undo):
                    if old is _MISSING:
                        target.pop(key, None)
                    else:
                        target[key] = old
                raise
            finally:
                self._undo = None

    def _set(self, target: MutableMapping[Any, Any], key: Any, value: Any) -> None:
        if self._undo is not None:
            self._undo.append((target, key, target.get(key, _MISSING)))
        target[key] = value

    # -- helpers (lock held)
    def _queue(self, kind: str, run_id: str, client_id: str, version: int, completed: bool) -> None:
        if not self.outbox:
            return
        key = (kind, run_id, client_id)
        old = self._outbox.get(key)
        if old is None:
            self._set(self._outbox, key, OutboxItem(kind, run_id, client_id, version))  # type: ignore[arg-type]
        elif old.dead:  # changed since Airtable refused it: try again
            self._set(self._outbox, key, replace(old, version=version, dead=False, due_at=0.0, attempts=0))
        else:
            due_at = 0.0 if completed and old.attempts == 0 else old.due_at
            self._set(self._outbox, key, replace(old, version=version, due_at=due_at))

    def _put_job(self, run_id: str, fields: dict[str, Any], completed: bool | None = None) -> JobRow:
        old = self._jobs.get(run_id)
        row = JobRow(
            run_id,
            fields,
            completed=old.completed if completed is None and old else bool(completed),
            version=(old.version if old else 0) + 1,
        )
        self._set(self._jobs, run_id, row)
        self._queue("job", run_id, "", row.version, row.completed)
        return row

    def _seen(self, key: str | None, now: float) -> bool:
        if key is None:
            return False
        expires = self._keys.get(key)
        return expires is not None and expires > now

    def _keep_key(self, key: str, now: float) -> None:
        if len(self._keys) >= self._purge_at:  # forget expired keys now and then
            for expired in [k for k, until in self._keys.items() if until <= now]:
                del self._keys[expired]
            self._purge_at = 2 * len(self._keys) + 1024
        self._set(self._keys, key, now + self._ttl)

    def _current(self, delta: ClientDelta) -> ClientRow:
        old = self._clients.get((delta.run_id, delta.client_id))
        return copy_row(old) if old is not None else ClientRow(delta.run_id, delta.client_id, {})

    def _merge(self, delta: ClientDelta, finalize: Finalize | None) -> tuple[ClientRow, bool]:
        key = (delta.run_id, delta.client_id)
        old = self._clients.get(key)
        now = self._clock()
        if self._seen(delta.idempotency_key, now):
            return self._current(delta), False
        row = next_client_row(old, delta, finalize)
        fields = row.fields
        if delta.idempotency_key is not None:
            self._keep_key(delta.idempotency_key, now)
        self._set(self._clients, key, replace(row, refused=()))
        self._queue("client", delta.run_id, delta.client_id, row.version, row.completed)
        job = self._jobs.get(delta.run_id)
        if job is None:
            self._put_job(delta.run_id, new_job_fields(fields))
        else:
            job_fields = dict(job.fields)
            if job_start_from_client(job_fields, fields):
                self._put_job(delta.run_id, job_fields)
        return replace(copy_row(row), job_completed=job is not None and job.completed), True

    def _job_row(self, row: JobRow) -> JobRow:
        ids = tuple(sorted(c for (r, c) in self._clients if r == row.run_id))
        return replace(row, fields=dict(row.fields), client_ids=ids)

    # -- client rows
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        with self._atomic():
            if token is not None:
                key, now = TOKEN_PREFIX + token, self._clock()
                if self._seen(key, now):  # this delivery was applied before: change nothing
                    return [self._current(delta) for delta in deltas]
                self._keep_key(key, now)
            return [self._merge(delta, None)[0] for delta in deltas]

    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        with self._atomic():
            return self._merge(delta, finalize)

    def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
        with self._lock:
            row = self._clients.get((run_id, client_id))
            return copy_row(row) if row is not None else None

    def list_clients(self, run_id: str) -> list[ClientRow]:
        with self._lock:
            rows = [copy_row(row) for (r, _), row in self._clients.items() if r == run_id]
        return sorted(rows, key=lambda r: r.client_id)

    def list_clients_of(self, run_ids: Sequence[str]) -> dict[str, list[ClientRow]]:
        found: dict[str, list[ClientRow]] = {run_id: [] for run_id in run_ids}
        with self._lock:
            for (run_id, _), row in sorted(self._clients.items()):
                if run_id in found:
                    found[run_id].append(copy_row(row))
        return found

    def get_clients_of(self, client_id: str, run_ids: Sequence[str]) -> dict[str, ClientRow]:
        with self._lock:
            rows = {run_id: self._clients.get((run_id, client_id)) for run_id in run_ids}
            return {run_id: copy_row(row) for run_id, row in rows.items() if row is not None}

    # -- job rows
    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        with self._atomic():
            existing = self._jobs.get(run_id)
            if existing is not None:
                return self._job_row(existing), False
            return self._job_row(self._put_job(run_id, dict(fields))), True

    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        with self._atomic():
            run_id, self._run_id_mark = fresh_run_id(earliest, self._run_id_mark, self._jobs.__contains__)
            return self._job_row(self._put_job(run_id, dict(fields)))

    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        with self._atomic():
            job = self._jobs.get(run_id)
            if job is None:
                raise KeyError(run_id)
            fields = dict(job.fields)
            update(fields, [copy_row(row) for (r, _), row in sorted(self._clients.items()) if r == run_id])
            return self._job_row(self._put_job(run_id, fields, complete))

    def get_job(self, run_id: str) -> JobRow | None:
        with self._lock:
            job = self._jobs.get(run_id)
            return self._job_row(job) if job is not None else None

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRow]:
        with self._lock:
            jobs = [self._job_row(j) for j in self._jobs.values() if status_matches(j, status)]
        jobs.sort(key=lambda j: (start_sort_key(j.fields) or "", j.run_id), reverse=True)
        return jobs[:limit]

    # -- outbox
    def outbox_due(self, now: float, limit: int) -> list[OutboxItem]:
        with self._lock:
            return due_items(self._outbox.values(), now, limit)

    def outbox_done(self, items: Sequence[OutboxItem]) -> None:
        with self._lock:
            for item in items:
                key = (item.kind, item.run_id, item.client_id)
                current = self._outbox.get(key)
                if current is not None and current.version == item.version:
                    del self._outbox[key]

    def outbox_retry(self, item: OutboxItem, *, due_at: float, error: str | None, dead: bool = False) -> None:
        with self._lock:
            key = (item.kind, item.run_id, item.client_id)
            current = self._outbox.get(key, item)
            attempts = current.attempts + 1 if error else 0  # a postponement ends a failure streak
            self._outbox[key] = replace(
                current, due_at=due_at, attempts=attempts, last_error=error or current.last_error, dead=dead
            )

    def outbox_counts(self) -> tuple[int, int]:
        with self._lock:
            dead = sum(1 for item in self._outbox.values() if item.dead)
            return len(self._outbox) - dead, dead

    def outbox_dead(self) -> list[OutboxItem]:
        with self._lock:
            return [item for item in self._outbox.values() if item.dead]

    def outbox_revive(self) -> int:
        with self._lock:
            dead = [key for key, item in self._outbox.items() if item.dead]
            for key in dead:
                self._outbox[key] = replace(self._outbox[key], dead=False, due_at=0.0)
            return len(dead)

    # -- coordination
    def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        with self._lock:
            holder = self._leases.get(name)
            if holder is None or holder[0] == owner or holder[1] <= now:
                self._leases[name] = (owner, now + ttl)
                return True
            return False

    def take_token(self, name: str, rate: float, now: float) -> float:
        with self._lock:
            slot = self._next_slot.get(name, now)
            if slot > now:
                return slot - now
            self._next_slot[name] = max(slot, now) + 1.0 / rate
            return 0.0

    def close(self) -> None:
        """Nothing to release."""
