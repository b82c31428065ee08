"""A leased task: one process at a time runs it every ``interval`` seconds.

The service's watchdog (``MetricsService.close_stalled``) runs here. Like the Airtable
publisher, the processes sharing a store elect one runner through the store's lease
(``leased.Lease``): the holder renews it on every pass; when it dies, another process takes
over once the lease expired (``3 * interval`` at most, 30 s at least). The thread is a
``leased.LeasedLoop``.
"""

from __future__ import annotations

from collections.abc import Callable

from .forksafe import ForkSafeLock
from .leased import Lease, LeasedLoop
from .log import StructuredLogger
from .stores.base import Store

__all__ = ["LeasedTask"]


class LeasedTask(LeasedLoop):
    """Run ``task()`` every ``interval`` seconds in a daemon thread, in the one process of all
    those sharing ``store`` that holds the lease ``name``."""

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
