"""``flask jobmetrics ...``: look at runs, flush, sweep abandoned jobs, inspect the outbox.

Registered as a ``flask.commands`` entry point, so ``flask --app APP jobmetrics`` works for
any app with ``JobMetrics`` initialised. Every command is declared with
``jobmetrics_cli.service_command`` (see ``cli_group``). A subgroup (e.g. ``airtable``) is
another ``ServiceGroup`` added with ``jobmetrics_cli.add_command``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

from . import formatting
from .airtable.cli import airtable_cli
from .cli_group import ServiceGroup, one_line
from .cli_progress import client_lines_held, publish_with_progress
from .config import AIRTABLE_OFF
from .exceptions import UnknownRunError
from .runids import RunId
from .schema import CLIENTS_WITH_ERRORS, normalize_status
from .service import MetricsService
from .state import get_state
from .status import Status

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import ClientRun, JobRun

__all__ = ["format_run", "jobmetrics_cli"]

#: Sweep looks at every Running job; ``list_job_runs`` needs a limit.
_ALL = 1_000_000
_NOTE_WIDTH = 40
_ERR_WIDTH = 60
_DURATION_RE = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

jobmetrics_cli = ServiceGroup(
    "jobmetrics",
    help="Job and client metrics: list runs, show one, flush, sweep abandoned jobs, inspect the outbox.",
)


# -- formatting ------------------------------------------------------------------------------


def _trim(text: str, width: int) -> str:
    text = one_line(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"-?[\d,.]+(/[\d,]+)?", cell))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns under a dashed rule; columns of numbers are right-aligned."""
    body = [list(row) for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    right = [bool(body) and all(_numeric(r[i]) or r[i] == "-" for r in body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``6h``, ``2d`` or a sum such as ``1h30m`` -> a positive timedelta."""
    compact = text.strip()
    parts = list(_DURATION_RE.finditer(compact))
    if not parts or "".join(p.group(0) for p in parts).replace(" ", "") != compact.replace(" ", ""):
        raise ValueError(f"--older-than: {text!r} is not a duration like 90s, 30m, 6h or 2d")
    seconds = sum(float(p["amount"]) * _UNIT_SECONDS[p["unit"].lower()] for p in parts)
    if seconds <= 0:
        raise ValueError(f"--older-than: {text!r} must be longer than 0s")
    return timedelta(seconds=seconds)


# -- commands --------------------------------------------------------------------------------


@jobmetrics_cli.service_command("runs")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="How many runs.")
@click.option("--status", default=None, help="Only runs with this status (Running, Failed, ...).")
def runs(service: MetricsService, limit: int, status: str | None) -> None:
    """List job runs, newest first."""
    try:
        wanted = normalize_status(status) if status is not None else None
    except ValueError as exc:
        raise ValueError(f"--status: {exc}") from None
    jobs = service.list_job_runs(limit=limit, status=wanted)
    if not jobs:
        click.echo("No job runs.")
        return
    now = service.clock()
    rows = []
    for job in jobs:
        clients = service.list_client_runs(job.run_id)
        done = sum(1 for c in clients if c.status is not Status.RUNNING)
        rows.append(
            [
                job.run_id,
                job.status.value,
                formatting.when(job.start_time),
                formatting.duration(job.start_time, job.end_time, job.status, now),
                f"{done:,}/{len(clients):,}",
                formatting.number(job.metrics.get(CLIENTS_WITH_ERRORS)),
                formatting.number(job.metrics.get("Leads Processed")),
                formatting.number(job.metrics.get("Total Tokens")),
            ]
        )
    headers = ["RUN ID", "STATUS", "START (UTC)", "DURATION", "CLIENTS DONE", "FAILED", "LEADS", "TOKENS"]
    click.echo(_table(headers, rows))


_CLIENT_COLUMNS = tuple((heading.upper(), field) for heading, field in formatting.CLIENT_COLUMNS)


def _client_row(client: ClientRun, now: datetime) -> list[str]:
    return [
        client.client_id,
        client.status.value,
        formatting.when(client.start_time),
        formatting.duration(client.start_time, client.end_time, client.status, now),
        *(formatting.number(client.metrics.get(field)) for _, field in _CLIENT_COLUMNS),
        _trim(client.error, _NOTE_WIDTH) if client.error else "",
        _trim(client.notes, _NOTE_WIDTH) if client.notes else "",
    ]


def _indented(label: str, text: str) -> list[str]:
    """``label`` then the lines of ``text``, each under the first."""
    first, *rest = text.splitlines() or ["-"]
    pad = " " * (len(label) + 1)
    return [f"  {label} {first}", *(f"  {pad}{line}" for line in rest)]


def _client_details(client: ClientRun, log_lines: int) -> list[str]:
    """A client run's Error Details, System Notes and the newest lines of its Progress Log."""
    out = [f"Client {client.client_id} ({client.status.value}):"]
    if client.error:
        out += _indented("Error Details:", client.error)
    if client.notes:
        out += _indented("System Notes: ", client.notes)
    log = client.progress_log.splitlines()
    if log and log_lines:
        shown = log[-log_lines:]
        out.append(f"  Progress Log ({len(shown)} newest of {len(log)} lines):")
        out += [f"    {line}" for line in shown]
    return out if len(out) > 1 else []


def _job_lines(job: JobRun, now: datetime) -> list[str]:
    lines = [
        f"Run:       {job.run_id}",
        f"Status:    {job.status.value}",
        f"Start:     {formatting.when(job.start_time)} UTC" if job.start_time else "Start:     -",
        f"End:       {formatting.when(job.end_time)} UTC" if job.end_time else "End:       -",
        f"Duration:  {formatting.duration(job.start_time, job.end_time, job.status, now)}",
    ]
    notes = job.notes.splitlines() or ["-"]
    lines += [f"Notes:     {notes[0]}", *(f"           {n}" for n in notes[1:])]
    if job.metrics:
        lines += ["", "Aggregates:"]
        width = max(len(name) for name in job.metrics)
        lines += [
            f"  {name.ljust(width)}  {formatting.number(value):>12}" for name, value in job.metrics.items()
        ]
    return lines


def format_run(service: MetricsService, run_id: str, *, log_lines: int = 5) -> str:
    """One job run, a table of its client runs, then each client's Error Details, System
    Notes and the ``log_lines`` newest lines of its Progress Log, as ``show`` prints them."""
    run = RunId.parse(run_id).base
    job = service.get_job_run(run)
    if job is None:
        raise UnknownRunError(f"no job run {run!r}")
    now = service.clock()
    lines = _job_lines(job, now)
    clients = service.list_client_runs(run)
    lines.append(f"\nClient runs ({len(clients)}):")
    if clients:
        headers = [
            "CLIENT", "STATUS", "START (UTC)", "DURATION", *(h for h, _ in _CLIENT_COLUMNS), "ERROR", "NOTES"
        ]  # fmt: skip
        lines.append(_table(headers, [_client_row(c, now) for c in clients]))
    for client in clients:
        details = _client_details(client, log_lines)
        if details:
            lines += ["", *details]
    return "\n".join(lines)


@jobmetrics_cli.service_command("show")
@click.argument("run_id")
@click.option(
    "--log-lines",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Newest Progress Log lines shown per client (0: none).",
)
def show(service: MetricsService, run_id: str, log_lines: int) -> None:
    """Show one job run, its client runs, their errors, notes and Progress Log."""
    click.echo(format_run(service, run_id, log_lines=log_lines))


@jobmetrics_cli.service_command("flush")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Seconds to wait for publishing.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar while publishing (default: only when stderr is a terminal).",
)
def flush(service: MetricsService, timeout: float | None, progress: bool | None) -> None:
    """Merge buffered updates into the store and wait for publishing."""
    airtable = get_state().settings.airtable_enabled
    if airtable and (sys.stderr.isatty() if progress is None else progress):
        report = publish_with_progress(service, timeout, sys.stderr)
    else:
        report = service.flush(timeout=timeout)
    click.echo(
        f"Flushed:    {report.flushed:,} buffered entries reached the store\n"
        f"Published:  {report.published:,} rows\n"
        f"Pending:    {report.pending:,} rows still waiting in the outbox\n"
        f"Dead:       {report.dead:,} rows in the dead letters"
    )
    if not airtable:
        click.echo(f"{AIRTABLE_OFF}.")


@jobmetrics_cli.service_command("sweep")
@click.option("--older-than", required=True, help="Age of a Running job to close: 90s, 30m, 6h, 2d.")
@click.option("--dry-run", is_flag=True, help="List the jobs that would be closed; change nothing.")
@click.option("--verbose", "-v", is_flag=True, help="Log each client run closed (one line per client).")
def sweep(service: MetricsService, older_than: str, dry_run: bool, verbose: bool) -> None:
    """Close abandoned Running jobs started longer ago than --older-than as Failed."""
    now = service.clock()
    cutoff = now - parse_duration(older_than)
    stale = {
        job.run_id: job.start_time
        for job in service.list_job_runs(limit=_ALL, status=Status.RUNNING)
        if job.start_time is not None and job.start_time < cutoff
    }
    if not stale:
        click.echo(f"No Running job runs started before {formatting.when(cutoff)} UTC.")
        return
    headers = ["RUN ID", "START (UTC)", "RUNNING FOR"]
    rows = {
        run: [run, formatting.when(start), formatting.span((now - start).total_seconds())]
        for run, start in stale.items()
    }
    if dry_run:
        table = _table(headers, rows.values())
        click.echo(f"Would close {len(stale)} job run(s) as Failed (dry run, nothing changed):\n{table}")
        return
    note = f"Closed by sweep: still running after {older_than.strip()}"
    closed: dict[str, int] = {}  # run -> its client runs closed as Failed

    def close_one(run: str) -> None:
        current = service.get_job_run(run)
        if current is not None and current.status is Status.RUNNING:  # not finished meanwhile
            running = sum(1 for c in service.list_client_runs(run) if c.status is Status.RUNNING)
            service.complete_job_metrics(run, success=False, notes=note)
            closed[run] = running

    with client_lines_held(not verbose) as held:
        if len(stale) > 1:
            with click.progressbar(
                list(stale), label="Closing", file=sys.stderr, item_show_func=lambda run: run, show_pos=True
            ) as bar:
                for run in bar:
                    close_one(run)
        else:
            close_one(next(iter(stale)))
    table = _table([*headers, "CLIENTS CLOSED"], [[*rows[r], f"{n:,}"] for r, n in closed.items()])
    click.echo(f"Closed {len(closed)} job run(s) as Failed:\n{table}")
    if held.count:
        click.echo(
            f"Client runs still running were closed as Failed ({held.count:,} log lines held back;"
            " -v shows them)."
        )


@jobmetrics_cli.service_command("outbox")
@click.option("--retry-dead", is_flag=True, help="Make every dead-letter entry pending again.")
def outbox(service: MetricsService, retry_dead: bool) -> None:
    """Show the rows waiting for Airtable and the dead letters."""
    store = service.store
    if retry_dead:
        click.echo(f"Revived {store.outbox_revive():,} dead-letter entries; they are pending again.")
    pending, dead = store.outbox_counts()
    click.echo(f"Pending:       {pending:,}\nDead letters:  {dead:,}")
    items = store.outbox_dead() if dead else []
    if items:
        items.sort(key=lambda item: (item.run_id, item.kind, item.client_id))
        rows = [
            [i.kind, i.run_id, i.client_id or "-", f"{i.attempts:,}", _trim(i.last_error or "-", _ERR_WIDTH)]
            for i in items
        ]
        click.echo("\n" + _table(["KIND", "RUN", "CLIENT", "ATTEMPTS", "LAST ERROR"], rows))


jobmetrics_cli.add_command(airtable_cli)
