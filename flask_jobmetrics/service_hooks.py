"""The collaborators' types of ``service.MetricsService``: what it is handed and calls.

``JobMetrics.init_app`` builds each collaborator and hands it to the service at construction
(``MetricsService(store, clock=..., on_rejected=..., on_stored=..., publisher=...)``); the
service knows them only by these types, so the engine depends neither on Flask's signals nor
on Airtable's wiring. ``service.py`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import RejectedMetric


__all__ = ["Clock", "PublishOutcome", "RejectedHook", "RowPublisher", "StoredHook"]

#: The service's clock: the aware UTC time now.
Clock = Callable[[], datetime]
#: Hears of rejected metrics: ``on_rejected(run_id, client_id, rejected)``.
RejectedHook = Callable[[str, str, "list[RejectedMetric]"], None]
#: Hears of every change merged into the store (the publisher's wake-up): ``on_stored()``.
StoredHook = Callable[[], None]


class PublishOutcome(Protocol):
    """What a publisher's drain achieved."""

    @property
    def published(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def dead(self) -> int: ...


class RowPublisher(Protocol):
    """What the service drives of a publisher of the store's outbox (the Airtable ``Publisher``)."""

    def wake(self) -> None:
        """The store changed: look at the outbox soon (starts the sender when needed)."""

    def flush(self, timeout: float | None = None) -> PublishOutcome:
        """Publish what waits until it is sent or ``timeout`` seconds passed."""

    def stop(self) -> None:
        """Stop sending; safe to repeat."""
