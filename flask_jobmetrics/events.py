"""What the service tells others of a run that went wrong: one ``RunEvents`` collaborator.

The service is handed one ``RunEvents`` (or None); the extension builds an ``EventFanOut``
to the signals and the alerter. A listener's failure is logged and never undoes what was
recorded; ``close`` is where the fan-out stops what it was given (the alerter's thread).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .log import StructuredLogger

__all__ = ["EventFanOut", "RunEvents"]


class RunEvents(Protocol):
    """The events of runs the service reports; none of them may block the caller."""

    def client_failed(self, run_id: str, client_id: str, error: str | None, *, stalled: bool = False) -> None:
        """A client run completed as ``Failed`` (``stalled``: closed by the watchdog, whose
        ``run_stalled`` follows and names it)."""

    def job_failed(self, run_id: str, notes: str) -> None:
        """A job run completed as ``Failed``."""

    def run_stalled(self, run_id: str, client_ids: Sequence[str]) -> None:
        """The watchdog closed a job that stopped updating; ``client_ids`` it closed as Failed."""

    def close(self) -> None:
        """The service closes: stop what runs in the background; safe to repeat."""


class EventFanOut:
    """Tells each of ``listeners`` every event, in order; a listener that raises is logged."""

    def __init__(self, *listeners: RunEvents, logger: StructuredLogger | None = None) -> None:
        self.listeners = listeners
        self.log = logger or StructuredLogger("SYSTEM", process="jobmetrics")

    def client_failed(self, run_id: str, client_id: str, error: str | None, *, stalled: bool = False) -> None:
        for listener in self.listeners:
            try:
                listener.client_failed(run_id, client_id, error, stalled=stalled)
            except Exception as exc:  # the completion stands
                self.log.warning("a client-failed listener failed for %s/%s: %r", run_id, client_id, exc)

    def job_failed(self, run_id: str, notes: str) -> None:
        for listener in self.listeners:
            try:
                listener.job_failed(run_id, notes)
            except Exception as exc:
                self.log.warning("a job-failed listener failed for %s: %r", run_id, exc)

    def run_stalled(self, run_id: str, client_ids: Sequence[str]) -> None:
        for listener in self.listeners:
            try:
                listener.run_stalled(run_id, client_ids)
            except Exception as exc:  # the closing stands
                self.log.warning("a run-stalled listener failed for %s: %r", run_id, exc)

    def close(self) -> None:
        for listener in self.listeners:
            try:
                listener.close()
            except Exception as exc:
                self.log.warning("could not close an event listener: %r", exc)
