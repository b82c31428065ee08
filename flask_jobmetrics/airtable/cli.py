"""``flask jobmetrics airtable check|init``: the base's tables and fields.

Both use the app's settings and the metrics registered on its service, so a metric added
with ``register_metric`` is checked and created like the built-in ones. Requests are paced
through the store's shared token bucket, the one the publisher uses, so ``init`` never
pushes the base over Airtable's 5 requests per second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..cli_group import ServiceGroup
from ..config import AIRTABLE_OFF, Settings
from ..service import MetricsService
from ..state import get_state

if TYPE_CHECKING:  # imported by the commands when they run: pyairtable takes a while to load
    from . import schema

__all__ = ["airtable_cli"]

airtable_cli = ServiceGroup(
    "airtable", help="Check the Airtable base's tables and fields, or create the missing ones."
)


def _settings() -> Settings:
    settings = get_state().settings
    if not settings.airtable_enabled:
        raise click.ClickException(f"{AIRTABLE_OFF}.")
    return settings


def _pacer(service: MetricsService, settings: Settings) -> schema.Pace:
    """Wait for a slot of the base's shared request budget (the publisher's) before a request."""
    from .publisher import sender_record, wait_for_slot

    recent = sender_record(settings)
    return lambda: wait_for_slot(service.store, settings, recent=recent)


@airtable_cli.service_command("check")
def check(service: MetricsService) -> None:
    """Report missing tables, fields and Status choices, and fields of another type."""
    from . import schema

    settings = _settings()
    assert settings.airtable_base_id is not None  # airtable_enabled
    report = schema.check(
        schema.make_api(settings),
        settings.airtable_base_id,
        schema.tables_for(settings, service.registry.specs),
        pace=_pacer(service, settings),
    )
    click.echo("\n".join(report.lines()))
    if not report.ok:
        click.get_current_context().exit(1)


@airtable_cli.service_command("init")
@click.option("--dry-run", is_flag=True, help="Say what would be created; change nothing.")
def init(service: MetricsService, dry_run: bool) -> None:
    """Create the missing tables and fields (existing ones are left as they are)."""
    from . import schema

    settings = _settings()
    base_id = settings.airtable_base_id
    assert base_id is not None  # airtable_enabled
    try:
        done = schema.init(
            schema.make_api(settings),
            base_id,
            schema.tables_for(settings, service.registry.specs),
            dry_run=dry_run,
            pace=_pacer(service, settings),
        )
    except schema.AirtableSchemaError as exc:
        for line in exc.done:  # what was created before the failure
            click.echo(line)
        raise
    if not done:
        click.echo(f"Nothing to do: base {base_id} has every table and field.")
        return
    for line in done:
        click.echo(line)
    if dry_run:
        click.echo("Dry run: nothing was changed.")
