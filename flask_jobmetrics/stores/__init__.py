"""Stores: where merged state lives. ``load_store(url)`` opens the store a URL names.

``memory://`` (:class:`~flask_jobmetrics.stores.memory.MemoryStore`), ``sqlite:///PATH``
(:class:`~flask_jobmetrics.stores.sqlite.SQLiteStore`) and ``redis://...``
(:class:`~flask_jobmetrics.stores.redis.RedisStore`, with the ``redis`` extra); the
protocol they implement is :class:`~flask_jobmetrics.stores.base.Store`.
"""

from __future__ import annotations

import logging

from ..exceptions import StoreError, StoreUnavailableError
from .base import IDEMPOTENCY_TTL, Store
from .deferred import DeferredStore
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["STORE_SCHEMES", "DeferredStore", "Store", "load_store", "open_store"]

log = logging.getLogger("flask_jobmetrics")

#: The URL schemes ``load_store`` knows (redis, rediss and unix need the ``redis`` extra).
STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")
_REDIS_SCHEMES = STORE_SCHEMES[2:]


def load_store(url: str, *, idempotency_ttl: float = IDEMPOTENCY_TTL, outbox: bool = True) -> Store:
    """The store named by ``url``: ``memory://``, ``sqlite:///PATH`` or ``redis://...``.

    ``outbox=False``: changed rows are not queued for Airtable (no one publishes them).
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"store URL {url!r} is not of the form memory://, sqlite:///PATH or redis://HOST")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryStore(url, idempotency_ttl=idempotency_ttl, outbox=outbox)
    if scheme == "sqlite":
        return SQLiteStore(url, idempotency_ttl=idempotency_ttl, outbox=outbox)
    if scheme in _REDIS_SCHEMES:
        try:  # the redis extra is optional: import the backend only when a URL names it
            from .redis import RedisStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreError(
                f"store URL {url!r} needs the redis extra: pip install flask-jobmetrics[redis]"
            ) from exc
        store: Store = RedisStore(url, idempotency_ttl=idempotency_ttl, outbox=outbox)
        return store
    raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (memory, sqlite, redis)")


def open_store(url: str, *, outbox: bool = True, retry_interval: float = 5.0) -> Store:
    """``load_store(url, outbox=outbox)``, or, when the store cannot be reached now (Redis down, the SQLite
    file or directory read-only or locked), a ``DeferredStore`` that opens it later: the
    error is logged once, with what to fix. A bad URL still raises ``StoreError``."""
    try:
        return load_store(url, outbox=outbox)
    except StoreUnavailableError as exc:
        log.error(
            "jobmetrics: the store cannot be reached at start-up: %s. The app starts anyway: updates "
            "are buffered in each process and the store is tried again every %g s; start the server "
            "or fix the file's permissions, or point JOBMETRICS_STORE_URL at a store that works.",
            exc,
            retry_interval,
        )
        durable = shared = not url.lower().startswith("memory:")
        return DeferredStore(
            url,
            lambda: load_store(url, outbox=outbox),
            exc,
            durable=durable,
            shared=shared,
            outbox=outbox,
            retry_interval=retry_interval,
        )
