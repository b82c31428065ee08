"""``demo``: the example webhook server's whole story, end to end, and what was recorded.

``python -m example_app demo`` (``./scripts/demo``) builds its own app (so that
``--fake-airtable`` can configure it before ``init_app``), drives it through its routes
with Flask's test client, and prints the job and its clients.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from contextlib import ExitStack
from typing import Any

import click

from flask_jobmetrics import FlushReport
from flask_jobmetrics.cli import format_run
from flask_jobmetrics.state import get_state

from .demo_airtable import LocalAirtable, airtable_rows_report, local_airtable
from .demo_flow import HARVESTS, WRONG_SIGNATURE, DemoRun
from .ext import jobmetrics
from .posts import TOKENS_PER_POST, UNSCORABLE_EVERY
from .scoring import CLIENTS, TOKENS_PER_LEAD

__all__ = ["demo_command"]

AIRTABLE_KEYS = "JOBMETRICS_AIRTABLE_API_KEY and _BASE_ID"


def _secrets_for(config: dict[str, Any], clients: list[str]) -> dict[str, str]:
    """The webhook secrets: the configured ones, plus a fresh one for each demo client without one."""
    configured = config.get("JOBMETRICS_WEBHOOK_SECRETS") or {}
    if not isinstance(configured, dict):
        configured = {}
    made = {
        c: secrets.token_hex(16) for c in [*HARVESTS, WRONG_SIGNATURE] if c in clients and c not in configured
    }
    return {**{str(k): str(v) for k, v in configured.items()}, **made}


def _flush_line(report: FlushReport, airtable_on: bool) -> str:
    stored = "flush(): every update is in the store"
    if not airtable_on:
        return f"{stored}; Airtable publishing is off."
    if report.pending == 0 and report.dead == 0:
        return (
            f"{stored} and in Airtable: {report.published} rows sent while flush() waited, the others"
            " earlier by the background publisher."
        )
    return (
        f"{stored}; Airtable: {report.published} rows sent while flush() waited, {report.pending} still"
        f" pending, {report.dead} dead-lettered (see: flask --app example_app jobmetrics outbox)."
    )


def _explanation(run_id: str, fake: bool, store_url: str) -> list[str]:
    text = (
        "How the numbers come about: every lead is examined; every 10th lead of a client cannot be scored"
        f" and costs nothing; every other lead is scored for {TOKENS_PER_LEAD} tokens. 'initech' crashes at"
        " lead 50 (its second chunk of 40 is never reported), so it is Failed, its Error Details say why,"
        " and the job is Completed with Errors; clients with no leads are No Leads To Score. A client's"
        " posts are numbered as they are"
        f" harvested: every {UNSCORABLE_EVERY}th cannot be scored, every other one is scored for"
        f" {TOKENS_PER_POST} tokens; TOKENS counts leads and posts. acme had no posts harvested, so its row"
        " is lead scoring alone: 120 leads, 108 scored, 27,000 tokens."
    )
    lines = [*textwrap.wrap(text, width=100), "", "Where to look next:"]
    if fake:
        lines += [
            "  this run lived in a temporary store, like the fake Airtable; without --fake-airtable the demo",
            "  keeps its runs in instance/. To publish to your own base, export JOBMETRICS_AIRTABLE_API_KEY",
            "  and JOBMETRICS_AIRTABLE_BASE_ID, create the tables once with",
            "  .venv/bin/flask --app example_app jobmetrics airtable init, then run ./scripts/demo.",
        ]
    else:
        lines += [
            "  the dashboard:  JOBMETRICS_DASHBOARD=1 .venv/bin/flask --app example_app run",
            "                  then open http://127.0.0.1:5000/jobmetrics/",
            "  .venv/bin/flask --app example_app jobmetrics runs",
            f"  .venv/bin/flask --app example_app jobmetrics show {run_id}",
        ]
        if store_url.startswith("sqlite:///"):
            lines.append(f"  the store itself: {os.path.relpath(store_url[len('sqlite:///') :])} (SQLite)")
    lines.append("  the routes, with curl examples: docs/example-app.md")
    return lines


@click.command(
    "demo",
    help="Run the example webhook server's story end to end (lead scoring, signed harvest webhooks, post"
    " scoring) through its routes, and print the job and its clients.",
)
@click.option("--clients", default=None, help="Comma-separated client IDs (default: all of them).")
@click.option(
    "--fake-airtable",
    is_flag=True,
    help="Publish to a local FakeAirtable (rate limit on) and print the rows it received.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds flush() waits for Airtable.",
)
def demo_command(clients: str | None, fake_airtable: bool, timeout: float) -> None:
    from . import create_app
    from .config import config_from_env

    chosen = [c.strip() for c in clients.split(",") if c.strip()] if clients else list(CLIENTS)
    unknown = sorted(set(chosen) - set(CLIENTS))
    if unknown:
        raise click.BadParameter(
            f"unknown clients: {', '.join(unknown)} (known: {', '.join(CLIENTS)})", param_hint="--clients"
        )
    with ExitStack() as stack:
        local: LocalAirtable | None = stack.enter_context(local_airtable()) if fake_airtable else None
        overrides: dict[str, Any] = dict(local.config) if local else {}
        demo_secrets = _secrets_for(config_from_env(), chosen)
        overrides["JOBMETRICS_WEBHOOK_SECRETS"] = demo_secrets
        app = create_app(overrides)
        service = get_state(app).service
        stack.callback(service.close)
        settings = get_state(app).settings
        if local:
            where = f"a local FakeAirtable at {local.fake.url} (base {local.base_id}, 5 requests/s at most)"
        elif settings.airtable_enabled:
            where = f"base {settings.airtable_base_id} at {settings.airtable_endpoint_url}"
        else:
            where = f"off (set {AIRTABLE_KEYS} to publish, or try --fake-airtable)"
        store = settings.store_url
        click.echo(
            f"flask_jobmetrics demo: batch lead scoring over {len(chosen)} clients,"
            " then post harvesting and post scoring"
        )
        click.echo(f"  store:     {store}{' (temporary)' if local else ''}")
        click.echo(f"  Airtable:  {where}")
        click.echo(
            "  requests:  sent to the app in this process with Flask's test client (no server needed)\n"
        )

        story = DemoRun(app, demo_secrets)
        story.lead_scoring(chosen)
        click.echo(story.take_lines())
        story.post_harvesting(chosen)
        click.echo(story.take_lines())
        story.post_scoring()
        story.complete_job()
        click.echo(story.take_lines())
        with app.app_context():
            report = jobmetrics.flush(timeout=timeout)
            click.echo(_flush_line(report, settings.airtable_enabled) + "\n")
            click.echo(format_run(service, story.run_id, log_lines=0))
        if local:
            click.echo("\n" + "\n".join(airtable_rows_report(local)))
        click.echo("\n" + "\n".join(_explanation(story.run_id, local is not None, store)))
