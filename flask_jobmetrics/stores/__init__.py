"""Stores: where merged state lives. ``load_store(url)`` opens the store a URL names.

``memory://`` (:class:`~flask_jobmetrics.stores.memory.MemoryStore`), ``sqlite:///PATH``
(:class:`~flask_jobmetrics.stores.sqlite.SQLiteStore`) and ``redis://...``
(:class:`~flask_jobmetrics.stores.redis.RedisStore`, with the ``redis`` extra); the
protocol they implement is :class:`~flask_jobmetrics.stores.base.Store`.
"""

from __future__ import annotations

from ..exceptions import StoreError
from .base import IDEMPOTENCY_TTL, Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["STORE_SCHEMES", "Store", "load_store"]

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
