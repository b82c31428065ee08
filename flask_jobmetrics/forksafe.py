"""What a forked child must not inherit: held locks and the parent's threads.

Under gunicorn ``--preload`` (or any ``os.fork()`` of a process that already runs the
extension) a child is a copy of the parent with only the forking thread: a lock another
thread held at that moment stays held for good in the child, and background threads are
gone. Two tools, in one place:

* ``ForkSafeLock``: a re-entrant lock the child always gets fresh. By default ``fork()``
  also waits for it (so no thread is mid-change of what it guards when the process forks);
  a lock held during I/O (opening a store: seconds) is made with ``wait_at_fork=False`` and
  only renewed in the child.
* ``at_fork_reset(obj)``: ``obj._after_fork_in_child()`` runs in every child forked while
  ``obj`` lives (its threads, locks and sessions start afresh there).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from types import TracebackType
from typing import ClassVar, Protocol

__all__ = ["ForkResettable", "ForkSafeLock", "at_fork_reset"]


class ForkSafeLock:
    """A re-entrant lock that every forked child gets fresh (and that ``fork()`` waits for,
    unless ``wait_at_fork=False``)."""

    _instances: ClassVar[weakref.WeakSet[ForkSafeLock]] = weakref.WeakSet()
    _held: ClassVar[list[ForkSafeLock]] = []
    _order: ClassVar[itertools.count[int]] = itertools.count()

    def __init__(self, *, wait_at_fork: bool = True, innermost: bool = False) -> None:
        self._lock = threading.RLock()
        self.wait_at_fork = wait_at_fork
        #: Locks are taken before a fork in the order they were made (an outer lock is made
        #: first); an ``innermost`` lock, one never held while another is taken, comes last.
        self._rank = (innermost, next(ForkSafeLock._order))
        ForkSafeLock._instances.add(self)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    @classmethod
    def _before_fork(cls) -> None:
        cls._held[:] = sorted(
            (lock for lock in cls._instances if lock.wait_at_fork), key=lambda lock: lock._rank
        )
        for lock in cls._held:
            lock._lock.acquire()

    @classmethod
    def _after_fork_in_parent(cls) -> None:
        for lock in reversed(cls._held):
            lock._lock.release()
        cls._held.clear()

    @classmethod
    def _after_fork_in_child(cls) -> None:
        for lock in list(cls._instances):
            lock._lock = threading.RLock()
        cls._held.clear()


class ForkResettable(Protocol):
    def _after_fork_in_child(self) -> None:
        """Start afresh in a forked child: no parent's thread, lock or connection."""


_RESETTABLE: weakref.WeakSet[ForkResettable] = weakref.WeakSet()


def at_fork_reset(obj: ForkResettable) -> None:
    """Run ``obj._after_fork_in_child()`` in every child forked while ``obj`` lives."""
    _RESETTABLE.add(obj)


def _reset_in_child() -> None:
    for obj in list(_RESETTABLE):
        obj._after_fork_in_child()


os.register_at_fork(
    before=ForkSafeLock._before_fork,
    after_in_parent=ForkSafeLock._after_fork_in_parent,
    after_in_child=ForkSafeLock._after_fork_in_child,
)
os.register_at_fork(after_in_child=_reset_in_child)  # after the locks: a reset may take one
