"""A leased background task: one process at a time runs it every ``interval`` seconds.

The service's watchdog (``MetricsService.close_stalled``) runs here. Like the Airtable
publisher, the processes sharing a store elect one runner through the store's lease
(``Store.acquire_lease``): the holder renews it on every pass; when it dies, another process
takes over once the lease expired (``3 * interval`` at most, 30 s at least).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable

from .log import StructuredLogger
from .stores.base import Store

__all__ = ["LeasedTask"]


class LeasedTask:
    """Run ``task()`` every ``interval`` seconds in a daemon thread, in the one process of all
    those sharing ``store`` that holds the lease ``name``."""

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
        self.task = task
        self.store = store
        self.name = name
        self.interval = interval
        self.lease_ttl = max(3 * interval, 30.0)
        self.clock = clock
        self.log = logger
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _TASKS.add(self)

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its lock may be held: start afresh. A
        # child is another process: it takes the lease under its own name.
        self._lock, self._wake, self._stop, self._thread = (
            threading.Lock(),
            threading.Event(),
            threading.Event(),
            None,
        )
        self._pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run_once(self) -> bool:
        """Run the task now if this process holds (or takes) the lease; True when it ran."""
        with self._lock:
            if not self.store.acquire_lease(self.name, self.owner, self.lease_ttl, self.clock()):
                return False
            self.task()
            return True

    def start(self) -> None:
        """Start the thread (its first pass is one interval from now); safe to repeat."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Let the thread run a pass now (it is started when needed)."""
        self.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception as exc:  # the thread must survive anything: the next pass retries
                self.log.error("%s pass failed (retried in %g s): %r", self.name, self.interval, exc)

    def stop(self) -> None:
        """Stop the thread and hand the lease back (another process need not wait); safe to repeat."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout=5)
        self._thread = None
        try:  # renewing our own lease with no time left releases it; another holder's is untouched
            self.store.acquire_lease(self.name, self.owner, 0.0, self.clock())
        except Exception as exc:
            self.log.info("could not release the %s lease (it expires by itself): %r", self.name, exc)


_TASKS: weakref.WeakSet[LeasedTask] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for task in list(_TASKS):
        task._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
