"""``sqlite:///PATH``: one SQLite file (WAL) shared by every thread and process on one host.

Every mutating call is one short ``BEGIN IMMEDIATE ... COMMIT`` transaction, so writers of
all processes are serialized by SQLite's write lock and merges stay exact. Each thread of
each process has its own connection; a connection inherited through ``fork()`` is never used.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.schema import STATUS

from ..deltas import ClientDelta
from ..forksafe import ForkSafeLock
from ._common import (
    dumps_fields,
    fresh_run_id,
    job_start_from_client,
    loads_fields,
    new_job_fields,
    next_client_row,
    start_sort_key,
)
from ._sqlite_schema import check_file, connect, prepare_schema, sqlite_path, store_error
from .base import IDEMPOTENCY_TTL, TOKEN_PREFIX, ClientRow, Finalize, JobRow, JobUpdate, OutboxItem

__all__ = ["SQLiteStore", "sqlite_path"]

#: Seconds between purges of expired idempotency keys (by the store's clock).
_PURGE_INTERVAL = 60.0
_OUTBOX_COLUMNS = "kind, run_id, client_id, version, attempts, due_at, last_error, dead"
_JOB_BY_ID = "SELECT fields, completed, version FROM jobs WHERE run_id = ?"
#: The ``meta`` key of the last second ``reserve_job`` took (epoch seconds).
_RUN_ID_MARK = "run_id_mark"


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class SQLiteStore:
    """The store protocol on one SQLite file."""

    durable = True
    shared = True  # by the processes of one host
    error = None  # open once constructed (see Store.error)

    def __init__(
        self,
        url: str,
        *,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        outbox: bool = True,
    ) -> None:
        self.url = url
        self.outbox = outbox
        self.path = sqlite_path(url)
        self._ttl = idempotency_ttl
        self._clock = clock
        self._timeout = timeout
        self._local = threading.local()
        # Threads of one process queue here rather than in SQLite's busy handler (which polls
        # with sleeps); held across fork(), so no child ever inherits a write in progress.
        self._write_lock = ForkSafeLock()
        self._inherited: list[sqlite3.Connection] = []
        self._next_purge = float("-inf")
        check_file(self.path)
        with self._transaction("cannot prepare the schema") as conn:
            prepare_schema(conn, self.path)

    # -- connections
    def _error(self, what: str, exc: BaseException) -> StoreError:
        return store_error(self.path, what, exc, self._timeout)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection in this process (a new one after ``fork()``)."""
        pid = os.getpid()
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == pid:
            return conn
        if conn is not None:
            # Inherited through fork(): closing it here could disturb the parent's locks and
            # shared WAL index, so it is kept, never used, until this process ends.
            self._inherited.append(conn)
        local.conn, local.pid = connect(self.path, self._timeout), pid
        return local.conn  # type: ignore[no-any-return]

    @contextmanager
    def _transaction(self, what: str = "cannot write") -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE ... COMMIT``; rolled back on any exception.

        A call made from a callback inside a transaction (``finalize``, ``update``) joins it.
        """
        conn = self._conn()
        with self._write_lock:
            if conn.in_transaction:
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(what, exc) from exc
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one state."""
        conn = self._conn()
        if conn.in_transaction:  # called from a callback inside a transaction
            yield conn
            return
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc

    # -- rows (inside a transaction)
    def _client_row(self, conn: sqlite3.Connection, run_id: str, client_id: str) -> ClientRow | None:
        row = conn.execute(
            "SELECT fields, completed, version FROM clients WHERE run_id = ? AND client_id = ?",
            (run_id, client_id),
        ).fetchone()
        if row is None:
            return None
        return ClientRow(run_id, client_id, loads_fields(row[0]), row[1] == 1, row[2])

    def _clients_of(self, conn: sqlite3.Connection, run_id: str) -> list[ClientRow]:
        rows = conn.execute(
            "SELECT client_id, fields, completed, version FROM clients WHERE run_id = ? ORDER BY client_id",
            (run_id,),
        ).fetchall()
        return [ClientRow(run_id, r[0], loads_fields(r[1]), bool(r[2]), r[3]) for r in rows]

    def _job_row(self, conn: sqlite3.Connection, run_id: str) -> JobRow | None:
        row = conn.execute(_JOB_BY_ID, (run_id,)).fetchone()
        if row is None:
            return None
        ids = conn.execute("SELECT client_id FROM clients WHERE run_id = ? ORDER BY client_id", (run_id,))
        return JobRow(run_id, loads_fields(row[0]), bool(row[1]), row[2], tuple(r[0] for r in ids))

    def _queue(
        self, conn: sqlite3.Connection, kind: str, run_id: str, client_id: str, version: int, completed: bool
    ) -> None:
        # A completed row is due at once, unless it is backing off after an error; a dead one
        # that changed since Airtable refused it is tried again.
        if not self.outbox:
            return
        conn.execute(
            "INSERT INTO outbox (kind, run_id, client_id, version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, run_id, client_id) DO UPDATE SET version = excluded.version, "
            "due_at = CASE WHEN dead = 1 OR (? AND attempts = 0) THEN 0.0 ELSE due_at END, "
            "attempts = CASE WHEN dead = 1 THEN 0 ELSE attempts END, dead = 0",
            (kind, run_id, client_id, version, completed),
        )

    def _put_job(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        fields: dict[str, Any],
        old: JobRow | None,
        completed: bool | None = None,
    ) -> JobRow:
        done = old.completed if completed is None and old is not None else bool(completed)
        version = (old.version if old is not None else 0) + 1
        status = fields.get(STATUS) if isinstance(fields.get(STATUS), str) else None
        conn.execute(
            "INSERT OR REPLACE INTO jobs (run_id, fields, completed, version, start_time, status) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, dumps_fields(fields), done, version, start_sort_key(fields), status),
        )
        self._queue(conn, "job", run_id, "", version, done)
        return JobRow(run_id, fields, done, version, old.client_ids if old is not None else ())

    def _seen(self, conn: sqlite3.Connection, key: str | None, now: float) -> bool:
        if key is None:
            return False
        row = conn.execute("SELECT expires_at FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] > now

    def _keep_key(self, conn: sqlite3.Connection, key: str, now: float) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys (key, expires_at) VALUES (?, ?)", (key, now + self._ttl)
        )

    def _merge(
        self, conn: sqlite3.Connection, delta: ClientDelta, finalize: Finalize | None, now: float
    ) -> tuple[ClientRow, bool]:
        run_id, client_id = delta.run_id, delta.client_id
        old = self._client_row(conn, run_id, client_id)
        if self._seen(conn, delta.idempotency_key, now):
            return (old if old is not None else ClientRow(run_id, client_id, {})), False
        row = next_client_row(old, delta, finalize)
        fields = row.fields
        conn.execute(
            "INSERT INTO clients (run_id, client_id, fields, completed, version) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, client_id) DO UPDATE SET fields = excluded.fields, "
            "completed = excluded.completed, version = excluded.version",
            (run_id, client_id, dumps_fields(fields), row.completed, row.version),
        )
        if delta.idempotency_key is not None:
            self._keep_key(conn, delta.idempotency_key, now)
        self._queue(conn, "client", run_id, client_id, row.version, row.completed)
        job = conn.execute(_JOB_BY_ID, (run_id,)).fetchone()
        if job is None:
            self._put_job(conn, run_id, new_job_fields(fields), None)
        else:
            job_fields = loads_fields(job[0])
            if job_start_from_client(job_fields, fields):
                self._put_job(conn, run_id, job_fields, JobRow(run_id, {}, bool(job[1]), job[2]))
        return replace(row, job_completed=job is not None and bool(job[1])), True

    def _merge_all(
        self, deltas: Sequence[ClientDelta], finalize: Finalize | None, token: str | None = None
    ) -> list[tuple[ClientRow, bool]]:
        with self._transaction() as conn:
            now = self._clock()
            if now >= self._next_purge and (
                token is not None or any(d.idempotency_key is not None for d in deltas)
            ):
                conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (now,))
                self._next_purge = now + _PURGE_INTERVAL
            if token is not None and not self._record_token(conn, TOKEN_PREFIX + token, now):
                return [(self._current(conn, d), False) for d in deltas]  # applied before: no change
            return [self._merge(conn, delta, finalize, now) for delta in deltas]

    def _record_token(self, conn: sqlite3.Connection, key: str, now: float) -> bool:
        """Record a delivery token (one statement); False when it was recorded and is live."""
        cursor = conn.execute(
            "INSERT INTO idempotency_keys (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= ?",
            (key, now + self._ttl, now),
        )
        return cursor.rowcount == 1

    def _current(self, conn: sqlite3.Connection, delta: ClientDelta) -> ClientRow:
        row = self._client_row(conn, delta.run_id, delta.client_id)
        return row if row is not None else ClientRow(delta.run_id, delta.client_id, {})

    # -- client rows
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        if not deltas:
            return []
        return [row for row, _ in self._merge_all(deltas, None, token)]

    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        return self._merge_all([delta], finalize)[0]

    def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
        with self._snapshot() as conn:
            return self._client_row(conn, run_id, client_id)

    def list_clients(self, run_id: str) -> list[ClientRow]:
        with self._snapshot() as conn:
            return self._clients_of(conn, run_id)

    def list_clients_of(self, run_ids: Sequence[str]) -> dict[str, list[ClientRow]]:
        found: dict[str, list[ClientRow]] = {run_id: [] for run_id in run_ids}
        if not found:
            return found
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT run_id, client_id, fields, completed, version FROM clients"
                " WHERE run_id IN (SELECT value FROM json_each(?)) ORDER BY run_id, client_id",
                (json.dumps(list(found)),),
            ).fetchall()
        for r in rows:
            found[r[0]].append(ClientRow(r[0], r[1], loads_fields(r[2]), bool(r[3]), r[4]))
        return found

    def get_clients_of(self, client_id: str, run_ids: Sequence[str]) -> dict[str, ClientRow]:
        asked = list(dict.fromkeys(run_ids))
        if not asked:
            return {}
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT run_id, fields, completed, version FROM clients"
                " WHERE client_id = ? AND run_id IN (SELECT value FROM json_each(?))",
                (client_id, json.dumps(asked)),
            ).fetchall()
        by_run = {r[0]: ClientRow(r[0], client_id, loads_fields(r[1]), bool(r[2]), r[3]) for r in rows}
        return {run_id: by_run[run_id] for run_id in asked if run_id in by_run}

    # -- job rows
    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        with self._transaction() as conn:
            existing = self._job_row(conn, run_id)
            if existing is not None:
                return existing, False
            return self._put_job(conn, run_id, dict(fields), None), True

    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        with self._transaction() as conn:
            found = conn.execute("SELECT value FROM meta WHERE key = ?", (_RUN_ID_MARK,)).fetchone()

            def taken(run_id: str) -> bool:
                return conn.execute("SELECT 1 FROM jobs WHERE run_id = ?", (run_id,)).fetchone() is not None

            run_id, mark = fresh_run_id(earliest, int(found[0]) if found else None, taken)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_RUN_ID_MARK, str(mark)))
            return self._put_job(conn, run_id, dict(fields), None)

    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        with self._transaction() as conn:
            job = self._job_row(conn, run_id)
            if job is None:
                raise KeyError(run_id)
            fields = dict(job.fields)
            update(fields, self._clients_of(conn, run_id))
            return self._put_job(conn, run_id, fields, job, complete)

    def get_job(self, run_id: str) -> JobRow | None:
        with self._snapshot() as conn:
            return self._job_row(conn, run_id)

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRow]:
        where = "" if status is None else "WHERE status = ?"
        params: tuple[Any, ...] = (max(limit, 0),) if status is None else (status, max(limit, 0))
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT run_id, fields, completed, version, (SELECT json_group_array(client_id) FROM clients "
                f"WHERE clients.run_id = jobs.run_id) FROM jobs {where} "
                "ORDER BY start_time DESC, run_id DESC LIMIT ?",
                params,
            ).fetchall()
        return [
            JobRow(r[0], loads_fields(r[1]), r[2] == 1, r[3], tuple(sorted(json.loads(r[4])))) for r in rows
        ]

    # -- outbox
    def outbox_due(self, now: float, limit: int) -> list[OutboxItem]:
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE dead = 0 AND due_at <= ? "
                "ORDER BY due_at, kind <> 'job', run_id, client_id LIMIT ?",
                (now, max(limit, 0)),
            ).fetchall()
        return [_outbox_item(r) for r in rows]

    def outbox_done(self, items: Sequence[OutboxItem]) -> None:
        if not items:
            return
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM outbox WHERE kind = ? AND run_id = ? AND client_id = ? AND version = ?",
                [(i.kind, i.run_id, i.client_id, i.version) for i in items],
            )

    def outbox_retry(self, item: OutboxItem, *, due_at: float, error: str | None, dead: bool = False) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE kind = ? AND run_id = ? AND client_id = ?",
                (item.kind, item.run_id, item.client_id),
            ).fetchone()
            current = _outbox_item(row) if row is not None else item
            conn.execute(
                f"INSERT OR REPLACE INTO outbox ({_OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    current.kind,
                    current.run_id,
                    current.client_id,
                    current.version,
                    current.attempts + 1 if error else 0,  # a postponement ends a failure streak
                    due_at,
                    error or current.last_error,
                    dead,
                ),
            )

    def outbox_counts(self) -> tuple[int, int]:
        with self._snapshot() as conn:
            row = conn.execute("SELECT COUNT(*), TOTAL(dead) FROM outbox").fetchone()
        return row[0] - int(row[1]), int(row[1])

    def outbox_dead(self) -> list[OutboxItem]:
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE dead = 1 "
                "ORDER BY kind <> 'job', run_id, client_id"
            ).fetchall()
        return [_outbox_item(r) for r in rows]

    def outbox_revive(self) -> int:
        with self._transaction() as conn:
            return conn.execute("UPDATE outbox SET dead = 0, due_at = 0.0 WHERE dead = 1").rowcount

    # -- coordination
    def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
                (name, owner, now + ttl, now),
            )
            return cursor.rowcount == 1

    def take_token(self, name: str, rate: float, now: float) -> float:
        with self._transaction() as conn:
            row = conn.execute("SELECT next_slot FROM rate_slots WHERE name = ?", (name,)).fetchone()
            slot: float = row[0] if row is not None else now
            if slot > now:
                return slot - now
            conn.execute(
                "INSERT OR REPLACE INTO rate_slots (name, next_slot) VALUES (?, ?)",
                (name, max(slot, now) + 1.0 / rate),
            )
            return 0.0

    def close(self) -> None:
        """Close this thread's connection (a later call opens a new one); safe to repeat."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        if self._local.pid != os.getpid():
            self._inherited.append(conn)  # the parent's: never closed here (see _conn)
            return
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise self._error("cannot close", exc) from exc

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"
