"""``redis://[:password@]HOST:PORT/DB?prefix=jobmetrics:``: one Redis shared by every host.

Merges without a callback are one Lua script call (``EVALSHA``), atomic on the server. A
merge with ``finalize`` and ``update_job`` run Python inside the change: they WATCH the keys
they read, call the callback, and commit with ``MULTI``/``EXEC`` (the same script replaying
the result); when another client changed a watched key meanwhile, the whole change, callback
included, runs again. Callbacks must therefore be pure functions of their inputs. Each such
change carries a token its commit records, so a commit whose reply was lost is never applied
twice by the attempt that follows.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
    WatchError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from flask_jobmetrics.exceptions import StoreError, StoreUnavailableError
from flask_jobmetrics.runids import RunId

from ..deltas import ClientDelta
from . import _redis_lua as lua
from ._redis_tx import (
    DEFAULT_PREFIX,
    DEFAULT_RETENTION,
    Transaction,
    TransactionHolder,
    decode_hash,
    decode_pairs,
    joins_transaction,
    member,
    outbox_item,
    parse_url,
    redacted,
    texts,
)
from .base import IDEMPOTENCY_TTL, TOKEN_PREFIX, ClientRow, Finalize, JobRow, JobUpdate, OutboxItem

__all__ = ["DEFAULT_PREFIX", "DEFAULT_RETENTION", "RedisStore", "parse_url"]

#: Redis errors of a state that passes (a failover, memory, a cluster re-forming): unavailable.
_PASSING = (ReadOnlyError, OutOfMemoryError, TryAgainError, ClusterDownError)
#: Optimistic attempts of a change with a callback before giving up.
_ATTEMPTS = 50
#: Extra milliseconds a lease or pacing key outlives its use (its value decides, not its TTL).
_GC_MARGIN_MS = 60_000
_T = TypeVar("_T")


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStore(TransactionHolder):
    """The store protocol on Redis (standalone or Sentinel; not Redis Cluster)."""

    durable = True
    shared = True  # by every process and host reaching the server
    error = None  # open once constructed (see Store.error)

    def __init__(
        self,
        url: str,
        *,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
        clock: Callable[[], float] = time.time,
        retention: float = DEFAULT_RETENTION,
        outbox: bool = True,
    ) -> None:
        self.url = url
        self.outbox = outbox
        redis_url, self.prefix, self.retention = parse_url(url, retention)
        self._ttl = idempotency_ttl
        self._clock = clock
        self._local = threading.local()
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                redis_url,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=10.0,
                retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), 2),
            )
        except (ValueError, TypeError, RedisError) as exc:
            raise StoreError(f"store URL {redacted(url)!r}: {exc}") from exc
        kwargs = self._redis.connection_pool.connection_kwargs
        self.where = str(kwargs["path"]) if "path" in kwargs else f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._scripts = {
            name: self._redis.register_script(text)
            for name, text in [
                ("merge", lua.MERGE), ("list_jobs", lua.LIST_JOBS), ("outbox_read", lua.OUTBOX_READ),
                ("outbox_done", lua.OUTBOX_DONE), ("outbox_retry", lua.OUTBOX_RETRY),
                ("outbox_revive", lua.OUTBOX_REVIVE), ("lease", lua.LEASE), ("token", lua.TOKEN),
            ]
        }  # fmt: skip
        with self._errors("reach it"):
            self._redis.ping()

    # -- plumbing
    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Redis failures -> StoreError naming the server; a Lua type error -> TypeError."""
        try:
            yield
        except ResponseError as exc:
            message = str(exc).split(" script: ", 1)[0]
            if message.startswith("JMTYPE "):
                raise TypeError(message[7:]) from exc
            # A replica after a failover, out of memory, busy with a script: it may work later.
            passing = isinstance(exc, _PASSING) or message.startswith("BUSY ")
            kind = StoreUnavailableError if passing else StoreError
            raise kind(f"Redis at {self.where}: cannot {what}: {message}") from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            refused = isinstance(exc, (AuthenticationError, AuthorizationError))  # fix the config
            kind = StoreError if refused else StoreUnavailableError
            raise kind(f"Redis at {self.where}: cannot {what}: {exc}") from exc
        except RedisError as exc:
            raise StoreError(f"Redis at {self.where}: cannot {what}: {exc}") from exc
        except UnicodeError as exc:
            raise StoreError(f"Redis at {self.where}: cannot {what}: {exc}") from exc

    def key(self, *parts: str) -> str:
        """A key under this store's prefix (the layout is described in docs/stores.md)."""
        return self.prefix + ":".join(parts)

    def client_key(self, run_id: str, client_id: str) -> str:
        return self.key("client", run_id.replace("%", "%25").replace(":", "%3A"), client_id)

    def _eval(self, name: str, args: Sequence[Any], keys: Sequence[str] = (), client: Any = None) -> Any:
        return self._scripts[name](keys=list(keys), args=list(args), client=client)

    def merge_args(self, items: list[dict[str, Any]], now: float, token: str | None = None) -> list[Any]:
        """The ARGV of the merge script (see ``_redis_lua.MERGE``)."""
        retention = "0" if self.retention == 0 else str(_ms(self.retention))
        payload = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
        expires = repr(float(now + self._ttl))
        outbox = "1" if self.outbox else "0"
        token_key = "" if token is None else TOKEN_PREFIX + token
        head = [self.prefix, repr(float(now)), expires, str(_ms(self._ttl)), retention]
        return [*head, payload, outbox, token_key]

    def _merge(self, items: list[dict[str, Any]], token: str | None = None) -> list[Any]:
        with self._errors("merge"):
            return cast(list[Any], self._eval("merge", self.merge_args(items, self._clock(), token)))

    def _transaction(self, what: str, body: Callable[[Transaction], _T]) -> _T:
        """Run ``body`` with WATCHed reads and commit its writes atomically; again on conflicts.

        Each call carries a token the commit records with its writes (in the same script).
        An attempt whose ``EXEC`` was sent but whose reply was lost (a reset, a timeout)
        reaches redis-py as a ``WatchError``, like a conflict: the next attempt first reads
        the token, and when it is there the change was applied, so the result of the
        attempt that sent it is returned without running ``body`` again.
        """
        token = uuid.uuid4().hex
        sent: list[_T] = []  # the result of the last attempt that sent its EXEC
        for attempt in range(_ATTEMPTS):
            with self._errors(what), self._redis.pipeline(transaction=True) as pipe:
                tx = Transaction(self, pipe, self._clock())
                self._local.tx = tx
                try:
                    if sent and tx.committed(token):
                        return sent[-1]
                    result = body(tx)
                    if tx.items:
                        pipe.multi()
                        self._eval("merge", self.merge_args(tx.items, tx.now, token), client=pipe)
                        sent[:] = [result]
                        pipe.execute()
                    return result
                except WatchError:  # a conflict, or the connection failed (EXEC's outcome unknown)
                    pass
                except NoScriptError:  # the scripts were flushed (a restart) after redis-py loaded them
                    pass  # EXEC ran nothing: the next attempt loads them again
                finally:
                    self._local.tx = None
            if attempt >= 2:  # heavy contention: let the other writers through
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
        raise StoreError(f"Redis at {self.where}: cannot {what}: its rows kept changing ({_ATTEMPTS} tries)")

    @staticmethod
    def check_run_id(run_id: str) -> None:
        if "\0" in run_id:
            raise StoreError(f"run ID {run_id!r}: NUL characters are not supported by the Redis store")

    # -- client rows
    def _merge_deltas(
        self, deltas: Sequence[ClientDelta], token: str | None = None
    ) -> list[tuple[ClientRow, bool]]:
        items = []
        for delta in deltas:
            self.check_run_id(delta.run_id)
            ops = [[name, agg, texts({name: value})[name]] for name, (agg, value) in delta.ops.items()]
            item: dict[str, Any] = {"t": "c", "r": delta.run_id, "c": delta.client_id, "o": ops}
            item["x"] = delta.complete
            if delta.idempotency_key is not None:
                item["k"] = delta.idempotency_key
            items.append(item)
        return [
            (
                ClientRow(
                    d.run_id,
                    d.client_id,
                    decode_pairs(r[3]),
                    r[2] == 1,
                    r[1],
                    job_completed=r[5] == 1,
                    refused=tuple(decode_pairs(r[6]).items()),
                ),
                r[0] == 1,
            )
            for d, r in zip(deltas, self._merge(items, token), strict=True)
        ]

    @joins_transaction(Transaction.merge_clients)
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        return [row for row, _ in self._merge_deltas(deltas, token)] if deltas else []

    @joins_transaction(Transaction.merge_client)
    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        if finalize is None:
            return self._merge_deltas([delta])[0]
        return self._transaction("merge", lambda tx: tx.merge_client(delta, finalize))

    @joins_transaction(Transaction.get_client)
    def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
        with self._errors("read"):
            flat = cast(dict[str, str], self._redis.hgetall(self.client_key(run_id, client_id)))
        if not flat:
            return None
        fields, version, completed = decode_hash(flat)
        return ClientRow(run_id, client_id, fields, completed, version)

    @joins_transaction(Transaction.list_clients)
    def list_clients(self, run_id: str) -> list[ClientRow]:
        with self._errors("read"):
            ids = sorted(cast(set[str], self._redis.smembers(self.key("clients", run_id))))
            return self._client_rows([(run_id, client_id) for client_id in ids])

    def list_clients_of(self, run_ids: Sequence[str]) -> dict[str, list[ClientRow]]:
        """Two round trips whatever the number of runs: their client IDs, then their rows."""
        found: dict[str, list[ClientRow]] = {run_id: [] for run_id in run_ids}
        if not found:
            return found
        with self._errors("read"):
            with self._redis.pipeline(transaction=False) as pipe:
                for run_id in found:
                    pipe.smembers(self.key("clients", run_id))
                members = cast(list[set[str]], pipe.execute())
            keys = [(run, client) for run, ids in zip(found, members, strict=True) for client in sorted(ids)]
            for row in self._client_rows(keys):
                found[row.run_id].append(row)
        return found

    def get_clients_of(self, client_id: str, run_ids: Sequence[str]) -> dict[str, ClientRow]:
        """One round trip whatever the number of runs."""
        asked = list(dict.fromkeys(run_ids))
        if not asked:
            return {}
        with self._errors("read"):
            return {row.run_id: row for row in self._client_rows([(run, client_id) for run in asked])}

    def _client_rows(self, keys: Sequence[tuple[str, str]]) -> list[ClientRow]:
        """The rows of (run ID, client ID) keys, in their order, in one round trip (gone ones left out)."""
        with self._redis.pipeline(transaction=True) as pipe:
            for run_id, client_id in keys:
                pipe.hgetall(self.client_key(run_id, client_id))
            hashes = cast(list[dict[str, str]], pipe.execute())
        rows = []
        for (run_id, client_id), flat in zip(keys, hashes, strict=True):
            if flat:
                fields, version, completed = decode_hash(flat)
                rows.append(ClientRow(run_id, client_id, fields, completed, version))
        return rows

    # -- job rows
    def _job_reply(self, run_id: str, reply: Sequence[Any]) -> JobRow:
        return JobRow(run_id, decode_pairs(reply[3]), reply[2] == 1, reply[1], tuple(sorted(reply[4])))

    @joins_transaction(Transaction.ensure_job)
    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        self.check_run_id(run_id)
        # With a token: a create whose reply was lost, re-sent by redis-py, reports it created.
        item = {"t": "j", "r": run_id, "f": texts(fields), "n": True}
        (reply,) = self._merge([item], uuid.uuid4().hex)
        return self._job_reply(run_id, reply), reply[0] != 0

    @joins_transaction(Transaction.reserve_job)
    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        # With a token: a reservation whose reply was lost, re-sent by redis-py, answers with
        # the run it reserved instead of reserving another.
        item = {"t": "m", "e": RunId.parse(earliest).epoch, "f": texts(fields)}
        (reply,) = self._merge([item], uuid.uuid4().hex)
        return self._job_reply(reply[7], reply)

    @joins_transaction(Transaction.update_job)
    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        return self._transaction(
            "update the job", lambda tx: tx.update_job(run_id, update, complete=complete)
        )

    @joins_transaction(Transaction.get_job)
    def get_job(self, run_id: str) -> JobRow | None:
        with self._errors("read"), self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.key("job", run_id))
            pipe.smembers(self.key("clients", run_id))
            flat, ids = cast(tuple[dict[str, str], set[str]], pipe.execute())
        if not flat:
            return None
        fields, version, completed = decode_hash(flat)
        return JobRow(run_id, fields, completed, version, tuple(sorted(ids)))

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRow]:
        """Newest first; reads what is committed (also when called from a callback)."""
        if limit <= 0:
            return []
        with self._errors("list jobs"):
            replies = self._eval("list_jobs", [self.prefix, status or "", str(limit)])
        jobs = []
        for run_id, flat, ids in replies:
            fields, version, completed = decode_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
            jobs.append(JobRow(run_id, fields, completed, version, tuple(sorted(ids))))
        return jobs

    # -- outbox (outside any transaction)
    def outbox_due(self, now: float, limit: int) -> list[OutboxItem]:
        if limit <= 0:
            return []
        with self._errors("read the outbox"):
            entries = self._eval("outbox_read", [self.prefix, "live", repr(float(now)), str(limit)])
        return [outbox_item(entry, dead=False) for entry in entries]

    def outbox_done(self, items: Sequence[OutboxItem]) -> None:
        if not items:
            return
        args: list[str] = [self.prefix]
        for item in items:
            args += [member(item.kind, item.run_id, item.client_id), str(item.version)]
        with self._errors("update the outbox"):
            self._eval("outbox_done", args)

    def outbox_retry(self, item: OutboxItem, *, due_at: float, error: str | None, dead: bool = False) -> None:
        args = [
            self.prefix, member(item.kind, item.run_id, item.client_id), str(item.version),
            str(item.attempts), item.last_error or "", repr(float(due_at)), error or "", "1" if dead else "0",
        ]  # fmt: skip
        with self._errors("update the outbox"):
            self._eval("outbox_retry", args)

    def outbox_counts(self) -> tuple[int, int]:
        with self._errors("read the outbox"), self._redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self.key("outbox"))
            pipe.zcard(self.key("outbox", "dead"))
            pending, dead = cast(list[int], pipe.execute())
        return pending, dead

    def outbox_dead(self) -> list[OutboxItem]:
        with self._errors("read the outbox"):
            entries = self._eval("outbox_read", [self.prefix, "dead", "0", "0"])
        return [outbox_item(entry, dead=True) for entry in sorted(entries, key=lambda e: e[0])]

    def outbox_revive(self) -> int:
        with self._errors("update the outbox"):
            return int(self._eval("outbox_revive", [self.prefix]))

    # -- coordination
    def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        args = [owner, repr(float(now)), repr(float(now + ttl)), _ms(ttl) + _GC_MARGIN_MS]
        with self._errors("take the lease"):
            return int(self._eval("lease", args, keys=[self.key("lease", name)])) == 1

    def take_token(self, name: str, rate: float, now: float) -> float:
        args = [repr(float(now)), repr(float(rate)), _ms(1.0 / rate) + _GC_MARGIN_MS]
        with self._errors("take a token"):
            return float(self._eval("token", args, keys=[self.key("token", name)]))

    def close(self) -> None:
        """Close the pooled connections (a later call opens new ones); safe to repeat."""
        with self._errors("close"):
            self._redis.close()

    def __repr__(self) -> str:
        return f"RedisStore({redacted(self.url)!r})"
