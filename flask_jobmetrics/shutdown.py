"""Draining the buffers on SIGTERM without breaking what the main thread was doing.

A signal handler runs on the main thread, between two bytecodes of whatever it was
running. If that was our own code (an eviction inside the buffer, a store transaction
between its COMMIT and its return, a read transaction that a drain would join), draining
and exiting right there can lose updates or count them twice. So the public service
operations are *guarded*: while the main thread is inside one, SIGTERM is only noted,
and the drain and exit run when the outermost guarded call returns (its result, an
update already buffered, is then part of the drain). Outside them the handler drains at
once, then chains the previous handler or exits with 143.

Only SIGTERM is deferred; Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` where it lands.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
from collections.abc import Callable
from threading import get_ident, main_thread
from types import FrameType
from typing import Any, ParamSpec, TypeVar

from .buffer import drain_all

__all__ = ["guarded", "install_sigterm_handler"]

P = ParamSpec("P")
R = TypeVar("R")

_depth = 0  # guarded calls the main thread is inside (only the main thread gets signals)
_deferred: Callable[[], Any] | None = None
_terminating = False  # a SIGTERM is being acted on: more of them change nothing
#: The main thread's ident (a forked child's main thread is the thread that forked).
_main = [main_thread().ident]


def _forked() -> None:
    global _depth
    _main[0] = main_thread().ident  # threading's own at-fork hook, registered first, has run
    _depth = 0  # forked from another thread, the child has none of the main thread's calls


os.register_at_fork(after_in_child=_forked)


def _exiting() -> None:
    """At interpreter exit (before the buffers' own atexit drain, which was registered first
    and so runs after this): the process is leaving and draining, a SIGTERM adds nothing."""
    global _terminating
    _terminating = True


atexit.register(_exiting)


def guarded(function: Callable[P, R]) -> Callable[P, R]:
    """Defer SIGTERM's drain and exit until ``function`` returns (on the main thread)."""

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        global _depth, _deferred, _terminating
        if get_ident() != _main[0]:  # a signal handler only runs on the main thread
            return function(*args, **kwargs)
        _depth += 1
        try:
            return function(*args, **kwargs)
        finally:
            _depth -= 1
            if _depth == 0 and _deferred is not None:
                _terminating = True
                pending, _deferred = _deferred, None
                pending()  # usually raises SystemExit: the flag then stays set
                _terminating = False

    return call


def install_sigterm_handler() -> Callable[[int, FrameType | None], Any]:
    """On SIGTERM drain every buffer, then chain the previous handler (or exit with 143).

    Must be called from the main thread; calling it again is a no-op. Returns the handler.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "_jobmetrics", False):
        return previous  # type: ignore[return-value]

    def terminate(signum: int, frame: FrameType | None) -> Any:
        drain_all(timeout=5.0, stop=False)  # the flusher runs on if the process does
        if callable(previous):
            return previous(signum, frame)
        if previous == signal.SIG_IGN:
            return None
        sys.exit(128 + signum)

    def handler(signum: int, frame: FrameType | None) -> Any:
        global _deferred, _terminating
        if _terminating or _deferred is not None:
            return None
        if _depth > 0:
            _deferred = functools.partial(terminate, signum, frame)
            return None
        _terminating = True
        result = terminate(signum, frame)  # usually raises SystemExit: the flag then stays set
        _terminating = False  # a chained handler decided the process goes on running
        return result

    handler._jobmetrics = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)
    return handler
