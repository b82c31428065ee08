"""Stores: where merged state lives. ``load_store(url)`` opens the store a URL names.

``memory://`` (:class:`~flask_jobmetrics.stores.memory.MemoryStore`), ``sqlite:///PATH``
(:class:`~flask_jobmetrics.stores.sqlite.SQLiteStore`) and ``redis://...``
(:class:`~flask_jobmetrics.stores.redis.RedisStore`, with the ``redis`` extra); the
protocol they implement is :class:`~flask_jobmetrics.stores.base.Store`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..exceptions import StoreError, StoreUnavailableError
from .base import IDEMPOTENCY_TTL, Store
from .deferred import RETRY_INTERVAL, DeferredStore

__all__ = ["STORE_SCHEMES", "DeferredStore", "Store", "StoreClass", "load_store", "open_store"]

log = logging.getLogger("flask_jobmetrics")


class StoreClass(Protocol):
    """A store backend's class: what its stores are (``durable``, ``shared``), and how one opens."""

    durable: bool
    shared: bool

    def __call__(self, url: str, *, idempotency_ttl: float = ..., outbox: bool = ...) -> Store: ...


def _memory() -> StoreClass:
    from .memory import MemoryStore

    return MemoryStore


def _sqlite() -> StoreClass:
    from .sqlite import SQLiteStore  # sqlite3 loads with it

    return SQLiteStore


def _redis() -> StoreClass:
    from .redis import RedisStore  # type: ignore[import-not-found,unused-ignore]

    backend: StoreClass = RedisStore
    return backend


#: Scheme -> the store class, its module imported when a URL first names it (a bare import of
#: the package loads no backend; the Redis one needs the redis extra).
_BACKENDS: dict[str, Callable[[], StoreClass]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}

#: The URL schemes ``load_store`` knows (redis, rediss and unix need the ``redis`` extra).
STORE_SCHEMES = tuple(_BACKENDS)


def store_class(url: str) -> StoreClass:
    """The class of the store ``url`` names; a URL no backend takes raises ``StoreError``."""
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"store URL {url!r} is not of the form memory://, sqlite:///PATH or redis://HOST")
    scheme = url.split("://", 1)[0].lower()
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (memory, sqlite, redis)")
    try:  # an optional extra is imported only when a URL names its backend
        return backend()
    except ImportError as exc:
        raise StoreError(
            f"store URL {url!r} needs the redis extra: pip install flask-jobmetrics[redis]"
        ) from exc


def load_store(url: str, *, idempotency_ttl: float = IDEMPOTENCY_TTL, outbox: bool = True) -> Store:
    """The store named by ``url``: ``memory://``, ``sqlite:///PATH`` or ``redis://...``.

    ``outbox=False``: changed rows are not queued for Airtable (no one publishes them).
    """
    return store_class(url)(url, idempotency_ttl=idempotency_ttl, outbox=outbox)


def open_store(
    url: str,
    *,
    outbox: bool = True,
    retry_interval: float = RETRY_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
) -> Store:
    """``load_store(url, outbox=outbox)``, or, when the store cannot be reached now (Redis down, the SQLite
    file or directory read-only or locked), a ``DeferredStore`` that opens it later, trying at
    most once per ``retry_interval`` seconds of ``clock``: the error is logged once, with what
    to fix. A bad URL still raises ``StoreError``."""
    cls = store_class(url)
    try:
        return cls(url, outbox=outbox)
    except StoreUnavailableError as exc:
        log.error(
            "jobmetrics: the store cannot be reached at start-up: %s. The app starts anyway: updates "
            "are buffered in each process and the store is tried again every %g s; start the server "
            "or fix the file's permissions, or point JOBMETRICS_STORE_URL at a store that works.",
            exc,
            retry_interval,
        )
        return DeferredStore(
            url,
            lambda: cls(url, outbox=outbox),
            exc,
            durable=cls.durable,
            shared=cls.shared,
            outbox=outbox,
            retry_interval=retry_interval,
            clock=clock,
        )
