"""The per-process buffer of metric deltas, keyed (run_id, client_id).

Deltas of the same key are merged by aggregation (``merge_ops``) in a
cachetools ``TTLCache`` guarded by one lock. Data leaves ONLY through ``sink`` (the
service wraps the store's ``merge_clients``); nothing is dropped:

* TTL expiry (idle timeout: a write resets it, at most every ``ttl / 10``) and capacity
  eviction are caught in
  ``expire()``/``popitem()``/``__delitem__`` and moved to a *spill* list, which goes to the
  sink once the lock is released. ``sweep()`` also sends entries older than ``max_age``.
* The sink is never called under the lock, and sink calls are serialized (a second
  mutex), so a key's ops always reach the sink in order. An add() that must evict while
  another thread is in the sink leaves the pairs in the spill list; that thread sends
  them after its own call.
* Every sink call carries a delivery *token* that the store records with the merge. A
  failed call's outcome is unknown (the store may have applied it and lost the reply), so
  its batch is kept *sealed*: the next delivery re-sends it first, unchanged and with the
  same token (a store that applied it changes nothing), before anything added meanwhile.
  While the sink fails, the buffer may exceed ``maxsize``.
* ``max_age == 0`` writes through: ``add()`` delivers its key at once, on the same path, so
  a failed write is held sealed and re-sent like any other (``add()`` does not raise).
* An ``atexit`` handler drains every live buffer; ``shutdown.install_sigterm_handler`` does
  the same on SIGTERM. A process ended by ``os._exit`` or SIGKILL loses its buffer, and
  buffers are tracked weakly: the owner (the service) must keep its buffer alive.
* ``pending()`` counts in-flight ops until the sink call has returned, so a reader that
  combines the store and ``pending()`` may over-count for that instant, never under-count.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import Cache, TTLCache

from .deltas import ClientDelta, Ops, merge_ops, refuse_inexact_sums
from .forksafe import at_fork_reset
from .schema import MAX_EXACT
from .stores.base import ClientRow

__all__ = ["BufferStats", "MetricsBuffer", "drain_all"]

log = logging.getLogger(__name__)
Key = tuple[str, str]
#: Called with a batch and its delivery token (the same token when the batch is re-sent).
Sink = Callable[[list[ClientDelta], str], object]
OnError = Callable[[BaseException, list[ClientDelta]], None]
Pick = Callable[[Key, "_Entry", float], bool]
_BUFFERS: weakref.WeakSet[MetricsBuffer] = weakref.WeakSet()
_NOTHING: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters of one buffer since it was created (or since this process forked)."""

    buffered: int
    added: int
    merged: int
    flushed: int
    failed: int
    in_flight: int


@dataclass(slots=True)
class _Entry:
    delta: ClientDelta
    created: float
    #: When the idle TTL was last reset (an add resets it at most every ``_refresh_after`` s).
    refreshed: float


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A batch whose delivery failed with an unknown outcome: re-sent as it is."""

    token: str
    deltas: list[ClientDelta]
    first_sent: float


class _SpillingCache(TTLCache[Key, _Entry]):
    """A TTLCache whose every implicit removal lands in ``spill`` instead of vanishing."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        super().__init__(maxsize, ttl, timer)
        self.spill: list[tuple[Key, _Entry]] = []
        #: The entries by key, expired or not: cachetools' own dict, read without its
        #: method calls on the update path (``peek``).
        self.data: dict[Key, _Entry] = self._Cache__data  # type: ignore[attr-defined]

    def expire(self, time: float | None = None) -> list[tuple[Key, _Entry]]:
        pairs = super().expire(time)
        self.spill.extend(pairs)
        return pairs

    def popitem(self) -> tuple[Key, _Entry]:
        pair = super().popitem()
        self.spill.append(pair)
        return pair

    def __delitem__(self, key: Key) -> None:
        value = self.peek(key)
        try:
            super().__delitem__(key)
        except KeyError:  # cachetools deleted an expired item, then raised
            if value is not None and not Cache.__contains__(self, key):
                self.spill.append((key, value))
            raise

    def clear(self) -> None:
        self.spill.extend((key, Cache.__getitem__(self, key)) for key in list(Cache.__iter__(self)))
        super().clear()

    def peek(self, key: Key) -> _Entry | None:
        """The entry of ``key``, expired or not, without touching the LRU order."""
        return self.data.get(key)


class MetricsBuffer:
    """Merge deltas per (run, client) in memory; hand them to ``sink``, never drop them."""

    def __init__(
        self,
        sink: Sink,
        *,
        ttl: float = 30.0,
        max_age: float = 5.0,
        maxsize: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_error: OnError | None = None,
        on_delivered: Callable[[Any], None] | None = None,
        autostart: bool = True,
        token_ttl: float | None = None,
    ) -> None:
        if ttl < 0 or max_age < 0 or maxsize < 1:
            raise ValueError("ttl and max_age must be >= 0 and maxsize >= 1")
        self._sink, self._on_error, self._clock = sink, on_error, clock
        #: Called with the sink's result once a batch counts as delivered (outside the locks);
        #: work after a merge goes here, so that nothing it raises can look like a failed merge.
        self._on_delivered = on_delivered
        self.ttl, self.max_age, self.maxsize = ttl, max_age, maxsize
        #: How long the store keeps delivery tokens: a batch re-sent later may count twice.
        self.token_ttl = token_ttl
        #: Seconds between sweeps, and the pause after a failed delivery. Writing through,
        #: the flusher only re-sends what failed: every half second at most.
        self.interval = max(0.05, min(ttl, max_age or 1.0, 1.0) / 2)
        #: An add resets the entry's idle TTL only when the last reset is this old, so the
        #: idle timeout is between 0.9 and 1.0 times ``ttl`` (never longer): the hot path
        #: skips re-linking the cache entry on most writes.
        self._refresh_after = ttl / 10
        #: add() starts the flusher when it is not running in this process (after a fork too).
        self._want_thread = autostart
        self._reset()
        _BUFFERS.add(self)
        at_fork_reset(self)

    def _after_fork_in_child(self) -> None:
        # The child inherited a copy of every buffer. Those entries belong to the parent,
        # which still holds and flushes them: sending them from here too would count them
        # twice. So this is the one place where discarding is right. The locks may have been
        # held by a thread that does not exist here, and the flusher thread did not survive
        # the fork: start afresh; add() restarts the flusher in this process.
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()  # serializes sink calls; lock order: _sink_lock, then _lock
        self._cache = _SpillingCache(self.maxsize, self.ttl, self._clock)
        self._in_flight: list[ClientDelta] = []
        self._sealed: _Sealed | None = None
        self._added = self._created = self._flushed = self._failed = 0  # merged: added - created
        self._retry_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._thread_pid = 0

    # -- public API
    def add(
        self,
        delta: ClientDelta,
        stored: ClientRow | None = None,
        first: Callable[[ClientDelta], Ops] | None = None,
    ) -> tuple[Ops | None, list[tuple[str, Any]]]:
        """Merge ``delta`` into its (run, client) entry; ``max_age == 0`` writes through (a
        failed write is held and re-sent, see ``_write_through``).

        ``stored``: the row as the store last had it. A sum whose total with its fields and
        the ops held for the key would pass 2**53 is left out of the delta (the store
        would refuse it, and with it the valid sums held beside it). ``first``: makes the ops
        put before the delta's when nothing of the key is held (its first update here).

        Returns what ``pending`` would return right after the add (a copy of the key's ops
        not yet in the store, in-flight ones included; None when it was written through),
        and the sums left out, as (field, value).
        """
        if delta.idempotency_key is not None or delta.complete:
            raise ValueError("deltas with an idempotency key or complete=True go straight to the store")
        if self._thread is None and self._want_thread and self.max_age > 0:
            try:
                self.start()
            except RuntimeError:  # interpreter shutting down: the atexit drain sends it
                self._want_thread = False
        key = (delta.run_id, delta.client_id)
        cache = self._cache
        ops = delta.ops
        pending: Ops | None
        with self._lock:
            now = self._clock()
            found = cache.data.get(key)
            if (
                found is not None
                and now < found.refreshed + self.ttl  # live: cachetools' own test
                and not (self._in_flight or self._sealed is not None or cache.spill)
            ):
                # The usual case: the cached entry holds all of the key's ops. Merged into
                # it, the ops leave with it, however it leaves.
                entry = found
                if stored is None:
                    refused = merge_ops(entry.delta.ops, ops, _NOTHING, MAX_EXACT)
                else:
                    refused = merge_ops(entry.delta.ops, ops, stored.fields, stored.headroom)
                self._added += 1
                if now - entry.refreshed < self._refresh_after:
                    pending = dict(entry.delta.ops)
                    spilled = False
                else:
                    pending, spilled = self._refresh(key, entry)
            else:
                pending, refused, spilled = self._add_behind(key, found, delta, stored, first, now)
        if self.max_age == 0:
            self._write_through(key)
            return self.pending(*key), refused  # None once written; the ops held when the write failed
        if spilled:
            self._hand_off()
        return pending, refused

    def _refresh(self, key: Key, entry: _Entry) -> tuple[Ops | None, bool]:
        """Under the lock: reset the idle TTL of a live entry (``cachetools`` re-links it,
        which may spill others); (the key's pending ops, whether there is a spill to send)."""
        cache = self._cache
        with cache.timer as now:
            if now < entry.refreshed + self.ttl:  # still live at the frozen time
                cache[key] = entry
                entry.refreshed = now
        return self._pending_now(key, entry), bool(cache.spill) and now >= self._retry_at

    def _add_behind(
        self,
        key: Key,
        found: _Entry | None,
        delta: ClientDelta,
        stored: ClientRow | None,
        first: Callable[[ClientDelta], Ops] | None,
        now: float,
    ) -> tuple[Ops | None, list[tuple[str, Any]], bool]:
        """Under the lock: ``add`` when the key's ops are not all in one live entry (a new
        key, an expired entry, ops in flight, sealed or spilled); ``found``: its cached entry."""
        cache = self._cache
        ops = delta.ops
        held = self._pending_of(key)
        refused = refuse_inexact_sums(ops, None if stored is None else stored.fields, held)
        if held is None and first is not None:
            ops = first(delta)
            merge_ops(ops, delta.ops)
        self._added += 1
        if found is not None and now < found.refreshed + self.ttl:
            merge_ops(found.delta.ops, ops)
            if now - found.refreshed >= self._refresh_after:
                pending, spilled = self._refresh(key, found)
                return pending, refused, spilled
            return self._pending_now(key, found), refused, bool(cache.spill) and now >= self._retry_at
        self._created += 1
        with cache.timer as now:  # new, or expired: setting it moves the expired one to the spill first
            entry = _Entry(ClientDelta(delta.run_id, delta.client_id, dict(ops)), now, now)
            cache[key] = entry
        return self._pending_now(key, entry), refused, bool(cache.spill) and now >= self._retry_at

    def _pending_now(self, key: Key, entry: _Entry) -> Ops | None:
        """Under the lock, right after an add to ``entry``: what ``pending`` returns."""
        if self._in_flight or self._sealed is not None or self._cache.spill:
            return self._pending_of(key)
        return dict(entry.delta.ops)


    def pending(self, run_id: str, client_id: str) -> Ops | None:
        """A copy of the ops of this key not yet in the store, in-flight ones included."""
        key = (run_id, client_id)
        with self._lock:
            if self._in_flight or self._sealed is not None or self._cache.spill:
                return self._pending_of(key)
            entry = self._cache.peek(key)  # the usual case: only the cached entry
            return dict(entry.delta.ops) if entry is not None else None

    def _pending_of(self, key: Key) -> Ops | None:
        """Under the lock: the ops of ``key`` in flight, sealed, spilled and buffered, merged."""
        found = False
        ops: Ops = {}
        parts = [d for d in self._in_flight if (d.run_id, d.client_id) == key]
        if self._sealed is not None:
            parts += [d for d in self._sealed.deltas if (d.run_id, d.client_id) == key]
        parts += [e.delta for k, e in self._cache.spill if k == key]
        entry = self._cache.peek(key)
        parts += [entry.delta] if entry is not None else []
        for delta in parts:
            merge_ops(ops, delta.ops)
            found = True
        return ops if found else None

    def clients_of(self, run_id: str) -> set[str]:
        """The client IDs of ``run_id`` with ops not yet in the store (in flight included)."""
        with self._lock:
            sealed = self._sealed.deltas if self._sealed is not None else []
            keys = [(d.run_id, d.client_id) for d in self._in_flight + sealed]
            keys += [k for k, _ in self._cache.spill]
            keys += list(Cache.__iter__(self._cache))
        return {client for run, client in keys if run == run_id}

    def flush(self, *, run_id: str | None = None, client_id: str | None = None) -> int:
        """Send every entry (or those of one run / key) now; the sink's exception propagates."""

        def pick(key: Key, entry: _Entry, now: float) -> bool:
            return (run_id is None or key[0] == run_id) and (client_id is None or key[1] == client_id)

        sent = self._deliver(pick, raise_errors=True)
        self._hand_off()
        return sent

    def sweep(self) -> int:
        """Send entries idle longer than ttl or created more than max_age ago; never raises."""
        sent = self._deliver(lambda key, entry, now: now - entry.created >= self.max_age)
        self._hand_off()
        return sent

    def start(self) -> None:
        """Start the daemon flusher thread unless it already runs in this process."""
        with self._lock:
            self._want_thread = True
            thread = self._thread
            if thread is not None and self._thread_pid == os.getpid() and thread.is_alive():
                return
            self._stop_event = stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(stop,), name="jobmetrics-flusher", daemon=True)
            self._thread, self._thread_pid = thread, os.getpid()
        thread.start()

    def stop(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop and join the flusher; ``drain``: flush everything (the sink's error propagates)."""
        self._want_thread = False
        self._stop_event.set()
        self._join(timeout)
        if drain:
            self.flush()

    @property
    def running(self) -> bool:
        """Whether the flusher thread runs in this process."""
        thread = self._thread
        return thread is not None and self._thread_pid == os.getpid() and thread.is_alive()

    def stats(self) -> BufferStats:
        with self._lock:
            added, merged, flushed = self._added, self._added - self._created, self._flushed
            return BufferStats(self._count(), added, merged, flushed, self._failed, len(self._in_flight))

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    # -- internals
    def _count(self) -> int:
        sealed = len(self._sealed.deltas) if self._sealed is not None else 0
        return Cache.__len__(self._cache) + len(self._cache.spill) + sealed

    def _join(self, timeout: float | None) -> None:
        t, self._thread = self._thread, None
        if t is not None and self._thread_pid == os.getpid() and t is not threading.current_thread():
            t.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # the flusher must outlive anything (an on_error that raises...)
                log.exception("jobmetrics flusher: sweep failed")

    def _write_through(self, key: Key) -> None:
        """``max_age == 0``: deliver the entry of ``key`` now, on the path of every delivery
        (a sealed batch first). A failure seals the batch, which the flusher (started for it)
        re-sends with its token, and is reported through ``on_error``, never raised: the
        update was accepted and is held. Within ``interval`` of a failure the store is left
        to the flusher, so callers do not each wait for it to fail."""
        if self._clock() >= self._retry_at:
            self._deliver(lambda k, entry, now: k == key)
        if self._want_thread and not self.running and len(self):
            try:
                self.start()
            except RuntimeError:  # interpreter shutting down: the atexit drain sends it
                self._want_thread = False

    def _hand_off(self) -> None:
        """Send spilled pairs left by adders that found the sink busy (no-op in back-off)."""
        while (self._cache.spill or self._sealed is not None) and self._clock() >= self._retry_at:
            if not self._deliver(None, timeout=0):
                return

    def _deliver(self, pick: Pick | None, *, raise_errors: bool = False, timeout: float = -1) -> int:
        """Re-send the sealed batch, if any, then send the spill plus the picked entries
        (``pick`` None: the spill only) in one sink call; a batch whose call raised is kept
        sealed for the next delivery. Returns how many entries were delivered.

        ``timeout``: how long to wait for the locks (-1 forever, 0 not at all); when they
        cannot be had nothing is sent (a signal handler may have interrupted their holder).
        """
        results: list[Any] = []
        try:
            if not self._sink_lock.acquire(True, timeout):
                return 0
            try:
                sent, error = self._send(pick, raise_errors, timeout, results)
            finally:
                self._sink_lock.release()
        finally:
            # Delivered: whatever happens from here on (even an exception) cannot undo that.
            if self._on_delivered is not None:
                for result in results:
                    self._on_delivered(result)
        if error is not None:
            self._report(*error)  # outside the locks: on_error may use the buffer
        return sent

    def _send(
        self, pick: Pick | None, raise_errors: bool, timeout: float, results: list[Any]
    ) -> tuple[int, tuple[Exception, list[ClientDelta]] | None]:
        """Under the sink lock: the sink calls of one ``_deliver``; appends their results."""
        sent = 0
        while True:
            if not self._lock.acquire(True, timeout):
                return sent, None
            try:
                batch, resend = self._sealed, self._sealed is not None
                if batch is None:
                    entries = self._take(pick)
                    if not entries:
                        return sent, None
                    batch = _Sealed(uuid.uuid4().hex, [entry.delta for entry in entries], self._clock())
                self._sealed, self._in_flight = None, batch.deltas
            finally:
                self._lock.release()
            if resend:
                self._warn_if_old(batch)
            try:
                results.append(self._sink(list(batch.deltas), batch.token))
            except BaseException as exc:
                with self._lock:
                    self._sealed = batch  # outcome unknown: re-sent as it is, with its token
                    self._in_flight, self._failed = [], self._failed + 1
                    self._retry_at = self._clock() + self.interval
                if raise_errors or not isinstance(exc, Exception):
                    raise
                return sent, (exc, batch.deltas)
            with self._lock:
                self._in_flight, self._flushed = [], self._flushed + len(batch.deltas)
                self._retry_at = float("-inf")
            sent += len(batch.deltas)
            if not resend:
                return sent, None

    def _warn_if_old(self, batch: _Sealed) -> None:
        age = self._clock() - batch.first_sent
        if self.token_ttl is not None and age > self.token_ttl:
            log.error(
                "jobmetrics: re-sending %d buffered entries first sent %.0f s ago, longer than the "
                "store keeps delivery tokens (%.0f s): if that first delivery was applied, they count twice",
                len(batch.deltas),
                age,
                self.token_ttl,
            )

    def _take(self, pick: Pick | None) -> list[_Entry]:
        """Under the lock: pop the spill and the picked entries, merged per key in order."""
        cache = self._cache
        out: dict[Key, _Entry] = {}
        with cache.timer as now:
            cache.expire(now)
            chosen = [] if pick is None else [k for k in list(cache) if pick(k, cache[k], now)]
            pairs, cache.spill = cache.spill, []
            pairs += [(key, cache.pop(key)) for key in chosen]
        for key, entry in pairs:
            have = out.get(key)
            if have is None:
                out[key] = entry
            else:
                merge_ops(have.delta.ops, entry.delta.ops)
                have.created = min(have.created, entry.created)
        return list(out.values())

    def _report(self, exc: BaseException, deltas: list[ClientDelta]) -> None:
        if self._on_error is None:
            log.error("jobmetrics: %d buffered entries could not reach the store", len(deltas), exc_info=exc)
            return
        try:
            self._on_error(exc, deltas)
        except Exception:
            log.exception("jobmetrics: on_error failed")

    def _drain(self, timeout: float, stop: bool) -> None:
        """Send everything (``stop``: stop the flusher first); failures go to on_error."""
        if stop:
            self._want_thread = False
            self._stop_event.set()
            self._join(timeout)
        self._deliver(lambda key, entry, now: True, timeout=timeout)


def drain_all(timeout: float = 10.0, stop: bool = True) -> None:
    for buffer in list(_BUFFERS):
        try:
            buffer._drain(timeout, stop)
        except BaseException:
            log.exception("jobmetrics: draining a buffer failed")


atexit.register(drain_all)
