"""Attach an Airtable publisher to an app's service (when publishing is configured)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from ..signals import publish_failed, records_published
from .names import table_field_names
from .publisher import Publisher

if TYPE_CHECKING:
    from ..extension import JobMetricsState

__all__ = ["attach_publisher"]


def attach_publisher(app: Flask, state: JobMetricsState) -> Publisher | None:
    """Give ``state.service`` a publisher woken by every store change; None when off.

    ``records_published`` and ``publish_failed`` are sent with ``app`` as sender. The
    field-name mapping is checked either way: a typo in it fails at start-up.
    """
    if not state.settings.airtable_enabled:
        table_field_names(state.settings, state.service.registry.specs)
        return None

    def published(table: str, records: list[dict[str, Any]]) -> None:
        records_published.send(app, table=table, records=records)

    def failed(table: str, error: str, records: list[dict[str, Any]]) -> None:
        publish_failed.send(app, table=table, error=error, records=records)

    service = state.service
    publisher = Publisher(
        service.store, state.settings, on_published=published, on_failed=failed, registry=service.registry
    )
    service.publisher = publisher
    service.on_stored = publisher.wake
    return publisher
