"""The Redis store's URLs, rows and outbox entries as Python sees them, and the optimistic
transaction of callbacks.

A ``Transaction`` runs the row logic in Python (as ``memory.py`` does) on a view of the
rows it read — each read WATCHes its key first — and records every write as an item of the
merge script, which ``EXEC`` replays atomically. Store calls made from a callback use the
same transaction, so they see its changes and are committed or dropped with it: the store
methods marked ``@joins_transaction`` hand such a call to the ``Transaction`` method of the
same name and signature.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.client import Pipeline

from flask_jobmetrics.exceptions import StoreError

from ..deltas import ClientDelta
from ._common import copy_row, fresh_run_id, job_start_from_client, new_job_fields, next_client_row
from .base import (
    TOKEN_PREFIX,
    ClientRow,
    Finalize,
    JobRow,
    JobUpdate,
    OutboxItem,
    decode_fields,
    encode_fields,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETENTION",
    "KeyLayout",
    "Transaction",
    "TransactionHolder",
    "decode_hash",
    "decode_pairs",
    "joins_transaction",
    "member",
    "outbox_item",
    "parse_url",
    "redacted",
    "texts",
]

DEFAULT_PREFIX = "jobmetrics:"
#: Seconds the keys of a completed job are kept (0: forever).
DEFAULT_RETENTION = 7 * 24 * 3600.0


def redacted(url: str) -> str:
    """``url`` with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def parse_url(url: str, retention: float = DEFAULT_RETENTION) -> tuple[str, str, float]:
    """(URL for redis-py, key prefix, retention seconds) of a store URL."""
    parts = urlsplit(url)
    prefix, options = DEFAULT_PREFIX, []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name == "retention":
            try:
                retention = float(value)
            except ValueError:
                retention = -1.0
        else:
            options.append((name, value))
    if not math.isfinite(retention) or retention < 0:
        raise StoreError(f"store URL {redacted(url)!r}: retention must be seconds >= 0 (0: keep forever)")
    base = url.split("?", 1)[0]
    return (f"{base}?{urlencode(options)}" if options else base), prefix, retention


def member(kind: str, run_id: str, client_id: str) -> str:
    """An outbox entry; members sort like (kind != 'job', run_id, client_id)."""
    return ("0" if kind == "job" else "1") + run_id + "\0" + client_id


def outbox_item(entry: Sequence[str], dead: bool) -> OutboxItem:
    member, due_at, meta = entry
    run_id, client_id = member[1:].split("\0", 1)
    version, attempts, error = (meta or "0:0:").split(":", 2)
    kind: Literal["job", "client"] = "job" if member[0] == "0" else "client"
    return OutboxItem(
        kind, run_id, client_id, int(version), int(attempts), float(due_at), error or None, dead
    )


def texts(fields: Mapping[str, Any]) -> dict[str, str]:
    """Each field's value as JSON text (datetimes tagged); StoreError when one cannot be."""
    try:
        return {
            name: json.dumps(value, ensure_ascii=False, allow_nan=False)
            for name, value in encode_fields(fields).items()
        }
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot encode the fields {dict(fields)!r}: {exc}") from exc


def decode_pairs(flat: Sequence[str]) -> dict[str, Any]:
    """Fields from a script's ``[name, text, name, text, ...]``."""
    return decode_fields({flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)})


def decode_hash(flat: Mapping[str, str]) -> tuple[dict[str, Any], int, bool]:
    """(fields, version, completed) of a row hash (``f:NAME`` -> text, ``_v``, ``_c``)."""
    fields = decode_fields({name[2:]: json.loads(text) for name, text in flat.items() if name[:2] == "f:"})
    return fields, int(flat.get("_v", 0)), flat.get("_c") == "1"


class KeyLayout(Protocol):
    """Where a store's rows live (``RedisStore``; the layout is described in docs/stores.md)."""

    def key(self, *parts: str) -> str: ...

    def client_key(self, run_id: str, client_id: str) -> str: ...

    def check_run_id(self, run_id: str) -> None: ...


class Transaction:
    """One attempt of a change that runs a callback; ``items`` is what it will write."""

    def __init__(self, store: KeyLayout, pipe: Pipeline, now: float) -> None:
        self.store = store
        self.pipe = pipe
        self.now = now
        self.items: list[dict[str, Any]] = []
        self._clients: dict[tuple[str, str], ClientRow | None] = {}
        self._jobs: dict[str, JobRow | None] = {}
        self._ids: dict[str, set[str]] = {}
        self._new_ids: dict[str, set[str]] = {}
        self._keys: set[str] = set()

    # -- reads (each key is WATCHed before it is first read)
    def _watch(self, key: str) -> None:
        self.pipe.watch(key)  # type: ignore[no-untyped-call]

    def _hash(self, key: str) -> dict[str, str]:
        self._watch(key)
        return cast(dict[str, str], self.pipe.hgetall(key))

    def client(self, run_id: str, client_id: str) -> ClientRow | None:
        at = (run_id, client_id)
        if at not in self._clients:
            flat = self._hash(self.store.client_key(run_id, client_id))
            row = None
            if flat:
                fields, version, completed = decode_hash(flat)
                row = ClientRow(run_id, client_id, fields, completed, version)
            self._clients[at] = row
        return self._clients[at]

    def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
        row = self.client(run_id, client_id)
        return copy_row(row) if row is not None else None

    def job(self, run_id: str) -> JobRow | None:
        if run_id not in self._jobs:
            flat = self._hash(self.store.key("job", run_id))
            row = None
            if flat:
                fields, version, completed = decode_hash(flat)
                row = JobRow(run_id, fields, completed, version)
            self._jobs[run_id] = row
        return self._jobs[run_id]

    def client_ids(self, run_id: str) -> list[str]:
        if run_id not in self._ids:
            key = self.store.key("clients", run_id)
            self._watch(key)
            self._ids[run_id] = set(cast(set[str], self.pipe.smembers(key)))
        return sorted(self._ids[run_id] | self._new_ids.get(run_id, set()))

    def list_clients(self, run_id: str) -> list[ClientRow]:
        rows = (self.get_client(run_id, client_id) for client_id in self.client_ids(run_id))
        return [row for row in rows if row is not None]

    def get_job(self, run_id: str) -> JobRow | None:
        job = self.job(run_id)
        if job is None:
            return None
        return replace(job, fields=dict(job.fields), client_ids=tuple(self.client_ids(run_id)))

    def _seen(self, key: str | None) -> bool:
        if key is None:
            return False
        if key in self._keys:
            return True
        name = self.store.key("idem", key)
        self._watch(name)
        expires = cast("str | None", self.pipe.get(name))
        return expires is not None and float(expires) > self.now

    def committed(self, token: str) -> bool:
        """Whether a commit carrying ``token`` was applied (the key is WATCHed)."""
        return self._seen(TOKEN_PREFIX + token)

    # -- writes (recorded as merge-script items)
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        # The token needs no record here: the transaction records its own with its EXEC.
        return [self.merge_client(delta)[0] for delta in deltas]

    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        run_id, client_id, key = delta.run_id, delta.client_id, delta.idempotency_key
        self.store.check_run_id(run_id)
        old = self.client(run_id, client_id)
        if self._seen(key):
            return (copy_row(old) if old is not None else ClientRow(run_id, client_id, {})), False
        row = next_client_row(old, delta, finalize)
        fields = row.fields
        encoded = texts(fields)
        self._clients[(run_id, client_id)] = row
        self._new_ids.setdefault(run_id, set()).add(client_id)
        item: dict[str, Any] = {"t": "c", "r": run_id, "c": client_id, "f": encoded, "x": delta.complete}
        item["v"] = row.version
        if key is not None:
            self._keys.add(key)
            item["k"] = key
        job = self.job(run_id)
        if job is None:
            self._jobs[run_id] = JobRow(run_id, new_job_fields(fields), version=1)
        else:
            job_fields = dict(job.fields)
            if job_start_from_client(job_fields, fields):
                self._jobs[run_id] = replace(job, fields=job_fields, version=job.version + 1)
        self.items.append(item)
        return replace(copy_row(row), job_completed=job is not None and job.completed), True

    def put_job(
        self, run_id: str, fields: Mapping[str, Any], completed: bool | None = None, *, create: bool = False
    ) -> JobRow:
        self.store.check_run_id(run_id)
        old = self.job(run_id)
        item: dict[str, Any] = {"t": "j", "r": run_id, "f": texts(fields)}
        if completed is not None:
            item["x"] = completed
        if create:
            item["n"] = True
        done = old.completed if completed is None and old is not None else bool(completed)
        row = JobRow(run_id, dict(fields), done, (old.version if old is not None else 0) + 1)
        item["v"] = row.version
        self._jobs[run_id] = row
        self.items.append(item)
        return replace(row, fields=dict(fields), client_ids=tuple(self.client_ids(run_id)))

    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        existing = self.get_job(run_id)
        if existing is not None:
            return existing, False
        return self.put_job(run_id, fields, create=True), True

    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        key = self.store.key("runid", "mark")
        self._watch(key)
        last = cast("str | None", self.pipe.get(key))
        run_id, mark = fresh_run_id(earliest, int(last) if last is not None else None, self._has_job)
        row = self.put_job(run_id, fields, create=True)
        self.items[-1]["m"] = mark
        return row

    def _has_job(self, run_id: str) -> bool:
        return self.job(run_id) is not None

    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        job = self.job(run_id)
        if job is None:
            raise KeyError(run_id)
        fields = dict(job.fields)
        update(fields, self.list_clients(run_id))
        return self.put_job(run_id, fields, complete)


P = ParamSpec("P")
R = TypeVar("R")


class TransactionHolder:
    """Has the ``Transaction`` its thread is running a callback in, if any."""

    _local: threading.local

    def current_transaction(self) -> Transaction | None:
        return cast("Transaction | None", getattr(self._local, "tx", None))


H = TypeVar("H", bound=TransactionHolder)


def joins_transaction(
    in_transaction: Callable[Concatenate[Transaction, P], R],
) -> Callable[[Callable[Concatenate[H, P], R]], Callable[Concatenate[H, P], R]]:
    """A store method that, called from a callback inside a transaction, runs as
    ``in_transaction`` on it (it sees the transaction's changes and commits with it)."""

    def decorate(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], R]:
        @functools.wraps(method)
        def call(self: H, /, *args: P.args, **kwargs: P.kwargs) -> R:
            tx = self.current_transaction()
            if tx is not None:
                return in_transaction(tx, *args, **kwargs)
            return method(self, *args, **kwargs)

        return call

    return decorate
