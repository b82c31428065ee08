"""A store that could not be opened yet: every call tries to open it (at most once per
``retry_interval`` seconds) and, until it opens, raises ``StoreUnavailableError``.

``init_app`` uses it when Redis is down or the SQLite file cannot be written at start-up, so
the app starts anyway: updates wait in the buffer (which re-sends them), and the first call
after the store came back opens it and goes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..deltas import ClientDelta
from ..exceptions import StoreUnavailableError
from ..forksafe import ForkSafeLock
from .base import ClientRow, Finalize, JobRow, JobUpdate, OutboxItem, Store

__all__ = ["RETRY_INTERVAL", "DeferredStore"]

log = logging.getLogger("flask_jobmetrics")

#: Seconds between attempts to reach a store found unavailable.
RETRY_INTERVAL = 5.0


class DeferredStore:
    """The ``Store`` protocol in front of ``opener``, which raised ``error`` at start-up."""

    def __init__(
        self,
        url: str,
        opener: Callable[[], Store],
        error: StoreUnavailableError,
        *,
        durable: bool,
        shared: bool,
        outbox: bool = True,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.durable, self.shared, self.outbox = url, durable, shared, outbox
        self._opener, self._clock, self.retry_interval = opener, clock, retry_interval
        # Held while the opener connects (seconds): a fork does not wait for it, the child gets it fresh.
        self._lock = ForkSafeLock(wait_at_fork=False)
        self._store: Store | None = None
        #: Why the store is not open (None once it is).
        self.error: StoreUnavailableError | None = error
        self._last_try = clock()

    @property
    def available(self) -> bool:
        """Whether the store has been opened."""
        return self._store is not None

    def _open(self) -> Store:
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is not None:
                return self._store
            now = self._clock()
            if now < self._last_try + self.retry_interval:
                assert self.error is not None
                # A new exception each time: re-raising the one instance would add frames (and
                # their locals) to its traceback on every call for as long as the store is down.
                raise StoreUnavailableError(str(self.error)) from self.error.__cause__
            self._last_try = now
            try:
                self._store = self._opener()
            except StoreUnavailableError as exc:
                self.error, self._last_try = StoreUnavailableError(str(exc)), now
                self.error.__cause__ = exc.__cause__  # kept without this call's traceback
                raise
            self.error = None
            log.info("jobmetrics: the store opened; buffered updates go out")
            return self._store

    # -- the Store protocol, each call on the opened store
    def merge_clients(self, deltas: Sequence[ClientDelta], *, token: str | None = None) -> list[ClientRow]:
        return self._open().merge_clients(deltas, token=token)

    def merge_client(self, delta: ClientDelta, finalize: Finalize | None = None) -> tuple[ClientRow, bool]:
        return self._open().merge_client(delta, finalize)

    def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
        return self._open().get_client(run_id, client_id)

    def list_clients(self, run_id: str) -> list[ClientRow]:
        return self._open().list_clients(run_id)

    def list_clients_of(self, run_ids: Sequence[str]) -> dict[str, list[ClientRow]]:
        return self._open().list_clients_of(run_ids)

    def get_clients_of(self, client_id: str, run_ids: Sequence[str]) -> dict[str, ClientRow]:
        return self._open().get_clients_of(client_id, run_ids)

    def ensure_job(self, run_id: str, fields: Mapping[str, Any]) -> tuple[JobRow, bool]:
        return self._open().ensure_job(run_id, fields)

    def reserve_job(self, earliest: str, fields: Mapping[str, Any]) -> JobRow:
        return self._open().reserve_job(earliest, fields)

    def update_job(self, run_id: str, update: JobUpdate, *, complete: bool | None = None) -> JobRow:
        return self._open().update_job(run_id, update, complete=complete)

    def get_job(self, run_id: str) -> JobRow | None:
        return self._open().get_job(run_id)

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRow]:
        return self._open().list_jobs(limit=limit, status=status)

    def outbox_due(self, now: float, limit: int) -> list[OutboxItem]:
        return self._open().outbox_due(now, limit)

    def outbox_done(self, items: Sequence[OutboxItem]) -> None:
        self._open().outbox_done(items)

    def outbox_retry(self, item: OutboxItem, *, due_at: float, error: str | None, dead: bool = False) -> None:
        self._open().outbox_retry(item, due_at=due_at, error=error, dead=dead)

    def outbox_counts(self) -> tuple[int, int]:
        return self._open().outbox_counts()

    def outbox_dead(self) -> list[OutboxItem]:
        return self._open().outbox_dead()

    def outbox_revive(self) -> int:
        return self._open().outbox_revive()

    def acquire_lease(self, name: str, owner: str, ttl: float, now: float) -> bool:
        return self._open().acquire_lease(name, owner, ttl, now)

    def take_token(self, name: str, rate: float, now: float) -> float:
        return self._open().take_token(name, rate, now)

    def close(self) -> None:
        """Close the store if it was opened."""
        if self._store is not None:
            self._store.close()

    def __repr__(self) -> str:
        state = "open" if self._store is not None else "not reachable yet"
        return (
            f"DeferredStore({state}: {self._store!r})"
            if self._store is not None
            else f"DeferredStore({state})"
        )
