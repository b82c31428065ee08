"""The Airtable publisher of an app (when publishing is configured), reporting through signals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from ..config import Settings
from ..schema import MetricRegistry
from ..signals import publish_failed, records_published
from ..stores.base import Store
from .names import table_field_names

if TYPE_CHECKING:
    from .publisher import Dead, Publisher

__all__ = ["make_publisher"]


def make_publisher(
    app: Flask,
    settings: Settings,
    store: Store,
    registry: MetricRegistry,
    on_dead: Dead | None = None,
) -> Publisher | None:
    """The publisher of ``app``'s store, for its service; None when publishing is off.

    ``records_published`` and ``publish_failed`` are sent with ``app`` as sender; ``on_dead``
    hears of every dead-lettered row. The
    field-name mapping is checked either way: a typo in it fails at start-up.
    """
    if not settings.airtable_enabled:
        table_field_names(settings, registry.specs)
        return None
    # Imported only when publishing is on: pyairtable and requests take a while to load.
    from .publisher import Publisher

    def published(table: str, records: list[dict[str, Any]]) -> None:
        records_published.send(app, table=table, records=records)

    def failed(table: str, error: str, records: list[dict[str, Any]]) -> None:
        publish_failed.send(app, table=table, error=error, records=records)

    return Publisher(
        store, settings, on_published=published, on_failed=failed, on_dead=on_dead, registry=registry
    )
