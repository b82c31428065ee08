"""Background work of the example app: threads that outlive the request that started them.

``app.extensions["example_app"]`` is this app's :class:`BackgroundWork`; tests (and the
demo) ``join()`` it instead of sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

__all__ = ["EXTENSION_KEY", "BackgroundWork", "background_work"]

EXTENSION_KEY = "example_app"


@dataclass
class BackgroundWork:
    """The threads started for this app (finished ones are forgotten at the next start)."""

    threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self, app: Flask, name: str, work: Callable[[], None]) -> threading.Thread:
        """Run ``work`` in a new thread inside ``app``'s app context; errors are logged."""

        def run() -> None:
            with app.app_context():
                try:
                    work()
                except Exception:
                    app.logger.exception("background work %r failed", name)

        # Not a daemon: a server shutting down lets a started job finish instead of cutting it off.
        thread = threading.Thread(target=run, name=name)
        with self._lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            self.threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every thread started so far; True when all of them finished."""
        with self._lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)


def background_work(app: Flask | None = None) -> BackgroundWork:
    """The :class:`BackgroundWork` of ``app`` (default: ``current_app``)."""
    target = app if app is not None else current_app
    work = target.extensions[EXTENSION_KEY]
    assert isinstance(work, BackgroundWork)
    return work
