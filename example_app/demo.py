"""``demo``: run a batch-scoring job through the service and print what was recorded."""

from __future__ import annotations

import os

import click
from flask import current_app
from flask.cli import with_appcontext

from flask_jobmetrics.cli import format_run
from flask_jobmetrics.extension import get_state

from . import jobmetrics
from .batch import run_batch
from .scoring import CLIENTS, TOKENS_PER_LEAD

__all__ = ["demo_command"]


@click.command("demo", help="Run a batch lead-scoring job over the example clients and print its metrics.")
@click.option("--clients", default=None, help="Comma-separated client IDs (default: all of them).")
@with_appcontext
def demo_command(clients: str | None) -> None:
    chosen = [c.strip() for c in clients.split(",") if c.strip()] if clients else list(CLIENTS)
    unknown = sorted(set(chosen) - set(CLIENTS))
    if unknown:
        raise click.BadParameter(f"unknown clients: {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
    settings = get_state().settings
    click.echo(f"flask_jobmetrics demo: batch lead scoring over {len(chosen)} clients")
    click.echo(f"store: {settings.store_url}\n")
    job = run_batch(jobmetrics, chosen)
    jobmetrics.flush()
    click.echo(format_run(get_state().service, job.run_id))
    click.echo(
        "\nHow the numbers come about: every lead is examined; every 10th lead of a client cannot be scored"
        f" and costs nothing; every other lead is scored for {TOKENS_PER_LEAD} tokens. 'initech' crashes at"
        " lead 50 (its second chunk of 40 is never reported), so it is Failed and the job is Completed with"
        " Errors; clients with no leads are No Leads To Score."
    )
    app_arg = "example_app"
    click.echo("\nWhere to look next:")
    click.echo(f"  .venv/bin/flask --app {app_arg} jobmetrics runs")
    click.echo(f"  .venv/bin/flask --app {app_arg} jobmetrics show {job.run_id}")
    store = settings.store_url
    if store.startswith("sqlite:///"):
        click.echo(f"  the store itself: {os.path.relpath(store[len('sqlite:///') :])} (SQLite)")
    current_app.logger.debug("demo finished for run %s", job.run_id)
