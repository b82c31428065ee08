"""The emulator's controls: request log, per-base rate limiter and injected faults."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import AirtableError, default_body

__all__ = [
    "Faults",
    "LoggedRequest",
    "ManualClock",
    "RateLimiter",
    "RequestKind",
    "TransportFault",
    "max_in_any_second",
]

RequestKind = Literal["read", "write", "meta"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request the emulator received."""

    method: str
    #: The path, percent-decoded, e.g. ``/v0/appX/Job Tracking``.
    path: str
    #: Query arguments, each name to all of its values.
    query: dict[str, list[str]]
    #: The parsed JSON body (None when there was none or it was not JSON).
    json: Any
    #: The status sent; None when the connection was dropped without a response.
    status: int | None
    #: Arrival time, from the emulator's clock.
    time: float
    base_id: str | None
    kind: RequestKind


class ManualClock:
    """A clock for ``FakeAirtable(clock=...)`` that only moves when told to.

    >>> clock = ManualClock()
    >>> clock.advance(1.5)
    >>> clock()
    1.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds


def max_in_any_second(times: list[float]) -> int:
    """The most arrivals inside any window ``[t, t + 1)``."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


class RateLimiter:
    """``limit`` requests per second per base (sliding 1 s window), then a lock."""

    def __init__(self, limit: float | None, lock_seconds: float) -> None:
        self.limit = limit
        self.lock_seconds = lock_seconds
        self._arrivals: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def allow(self, base_id: str, now: float) -> bool:
        """Count one request at ``now``; False when it must be answered with 429."""
        if self.limit is None:
            return True
        arrivals = self._arrivals.setdefault(base_id, deque())
        while arrivals and now - arrivals[0] >= 1.0:
            arrivals.popleft()
        arrivals.append(now)
        if now < self._locked_until.get(base_id, float("-inf")):
            return False
        if len(arrivals) > self.limit:
            self._locked_until[base_id] = now + self.lock_seconds
            return False
        return True

    def locked_until(self, base_id: str) -> float | None:
        """When the lock of ``base_id`` ends (clock time), or None if it never was locked."""
        return self._locked_until.get(base_id)

    def reset(self) -> None:
        self._arrivals.clear()
        self._locked_until.clear()


@dataclass(frozen=True)
class TransportFault:
    """What happens to a request before it is handled."""

    drop: bool
    delay: float = 0.0
    #: For a delay: handle the request after it (True) or drop it (False).
    apply: bool = False


@dataclass
class _Pending:
    count: int
    #: The kind of request it applies to; None: any.
    kind: RequestKind | None = None
    status: int = 503
    body: dict[str, Any] | None = None
    delay: float = 0.0
    apply: bool = False


@dataclass
class Faults:
    """Queued faults; each call of ``take_*`` consumes one request's worth.

    A fault queued for one kind of request (``"read"``, ``"write"``, ``"meta"``) waits for
    the next request of that kind; one queued without a kind takes the next request.
    """

    _drops: list[_Pending] = field(default_factory=list)
    _delays: list[_Pending] = field(default_factory=list)
    _failures: list[_Pending] = field(default_factory=list)

    def add_drop(self, count: int, kind: RequestKind | None = None) -> None:
        self._drops.append(_Pending(count, kind))

    def add_delay(self, count: int, seconds: float, apply: bool, kind: RequestKind | None = None) -> None:
        self._delays.append(_Pending(count, kind, delay=seconds, apply=apply))

    def add_failure(
        self, count: int, status: int, body: dict[str, Any] | None, kind: RequestKind | None = None
    ) -> None:
        self._failures.append(_Pending(count, kind, status=status, body=body))

    def clear(self) -> None:
        self._drops.clear()
        self._delays.clear()
        self._failures.clear()

    @staticmethod
    def _consume(queue: list[_Pending], kind: RequestKind) -> _Pending | None:
        """The first fault queued for ``kind`` (or for any kind), one count of it used."""
        for index, pending in enumerate(queue):
            if pending.kind is None or pending.kind == kind:
                pending.count -= 1
                if pending.count <= 0:
                    del queue[index]
                return pending
        return None

    def take_transport(self, kind: RequestKind) -> TransportFault | None:
        """The drop or delay for the next request of ``kind``, if one is queued."""
        if self._consume(self._drops, kind) is not None:
            return TransportFault(drop=True)
        pending = self._consume(self._delays, kind)
        if pending is None:
            return None
        return TransportFault(drop=False, delay=pending.delay, apply=pending.apply)

    def take_failure(self, kind: RequestKind) -> AirtableError | None:
        """The error for the next request of ``kind``, if one is queued."""
        pending = self._consume(self._failures, kind)
        if pending is None:
            return None
        return AirtableError(pending.status, pending.body or default_body(pending.status))
