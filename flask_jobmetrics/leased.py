"""The background loop, and the store lease that lets one process of a shared store run one.

A ``LeasedLoop`` is a daemon thread that waits on an event with a timeout (``wait``: seconds,
or a function asked before each wait), then runs its step. ``wake()`` lets it run the next
step now; ``stop()`` wakes it at once, ends it and hands its lease back. A step that raises is
logged and the loop goes on: the next step retries. The Airtable publisher, the watchdog and
the alerter each run in one.

A ``Lease`` is this process's claim on a named lease of the store (``Store.acquire_lease``):
of all the processes sharing the store, one holds it at a time. The holder renews it by
taking it again (``take``), before ``ttl`` seconds ran out; when the holder dies, another takes
over once the lease expired. A step that must run in one process at a time takes the lease
first, and does nothing when another holds it; the loop releases it on ``stop`` so another
process need not wait. A loop without a lease (the alerter's: its queue is the process's
own) runs in every process. A ``LeasedTask`` is a loop whose step is one task run every
``interval`` seconds under a lease of its own: the service's watchdog (``watchdog.close_stalled``).

In a forked child (gunicorn ``--preload``) a loop has no thread (the next ``start`` makes
one) and a lease has a new owner: the child is another process.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable

from .forksafe import ForkSafeLock, at_fork_reset
from .log import StructuredLogger
from .stores.base import Store

__all__ = ["Lease", "LeasedLoop", "LeasedTask"]


def _owner() -> str:
    """A name for a lease's owner: unique to this object in this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """This process's claim on the lease ``name`` of ``store``, held ``ttl`` seconds from each
    ``take``. ``what`` names it in the log (by default ``the <name> lease``)."""

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        ttl: float,
        clock: Callable[[], float],
        logger: StructuredLogger,
        what: str | None = None,
    ) -> None:
        self.store, self.name, self.ttl, self.clock, self.log = store, name, ttl, clock, logger
        self.what = what or f"the {name} lease"
        self.owner = _owner()
        at_fork_reset(self)

    def _after_fork_in_child(self) -> None:
        self.owner = _owner()

    def take(self, now: float | None = None, *, ttl: float | None = None) -> bool:
        """Take or renew the lease for ``ttl`` seconds (the lease's own by default) from ``now``
        (the clock's by default); True when this process holds it. Taking it for no time
        succeeds, and changes nothing, only when no one else holds it (ours is handed back)."""
        return self.store.acquire_lease(
            self.name, self.owner, self.ttl if ttl is None else ttl, self.clock() if now is None else now
        )

    def release(self) -> None:
        """Hand the lease back, so another process need not wait for it to expire; another
        holder's lease is left alone. Never raises: a lease not handed back expires by itself."""
        try:
            self.take(ttl=0.0)
        except Exception as exc:
            self.log.info("could not release %s (it expires by itself): %r", self.what, exc)


class LeasedLoop:
    """Run ``step()`` in a daemon thread named ``name``, after each wait of ``wait`` seconds
    (or of ``wait()``) or as soon as it is woken; ``lease`` is released when it stops.

    A step that raises is logged as ``failed`` (by default ``<name> pass failed (retried)``)
    and the loop goes on."""

    def __init__(
        self,
        step: Callable[[], object],
        *,
        name: str,
        wait: float | Callable[[], float],
        logger: StructuredLogger,
        lease: Lease | None = None,
        failed: str | None = None,
    ) -> None:
        self.step, self.name, self.wait, self.log, self.lease = step, name, wait, logger, lease
        self.failed = failed or f"{name} pass failed (retried)"
        self._start_lock = ForkSafeLock(wait_at_fork=False)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        at_fork_reset(self)

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here, and its events may be mid-change.
        self._wake, self._stop, self._thread = threading.Event(), threading.Event(), None
        self._pid = os.getpid()

    @property
    def running(self) -> bool:
        """Whether the loop's thread is alive in this process."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread (its first step is one wait from now); safe to repeat."""
        with self._start_lock:
            if self.running:
                return
            # Each thread has its own stop event: one that outlived stop()'s join still ends.
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(stop,), name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Let the thread run its next step now (a stopped loop stays stopped)."""
        self._wake.set()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(timeout=self.wait() if callable(self.wait) else self.wait)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.step()
            except Exception as exc:  # the thread must survive anything: the next step retries
                self.log.error("%s: %r", self.failed, exc)

    def stop(self) -> None:
        """Stop the thread (a step under way ends first, for 5 s at most) and hand the lease
        back; safe to repeat."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if (
            thread is not None
            and thread.is_alive()
            and self._pid == os.getpid()
            and thread is not threading.current_thread()
        ):
            thread.join(timeout=5)
        self._thread = None
        if self.lease is not None:
            self.lease.release()


class LeasedTask(LeasedLoop):
    """Run ``task()`` every ``interval`` seconds in a daemon thread, in the one process of all
    those sharing ``store`` that holds the lease ``name``.

    The holder renews the lease on every pass; when it dies, another process takes over once
    the lease expired (``3 * interval`` at most, 30 s at least)."""

    lease: Lease

    def __init__(
        self,
        task: Callable[[], object],
        *,
        store: Store,
        name: str,
        interval: float,
        clock: Callable[[], float],
        logger: StructuredLogger,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        super().__init__(
            self.run_once,
            name=name,
            wait=interval,
            logger=logger,
            lease=Lease(store, name, ttl=max(3 * interval, 30.0), clock=clock, logger=logger),
            failed=f"{name} pass failed (retried in {interval:g} s)",
        )
        self.task = task
        self.interval = interval
        self._pass_lock = ForkSafeLock(wait_at_fork=False)  # one pass at a time (thread and callers)

    @property
    def owner(self) -> str:
        """This process's name as the lease's holder."""
        return self.lease.owner

    @property
    def lease_ttl(self) -> float:
        """How long the lease outlives the holder's last pass."""
        return self.lease.ttl

    def run_once(self) -> bool:
        """Run the task now if this process holds (or takes) the lease; True when it ran."""
        with self._pass_lock:
            if not self.lease.take():
                return False
            self.task()
            return True

    def wake(self) -> None:
        """Let the thread run a pass now (it is started when needed)."""
        self.start()
        super().wake()
