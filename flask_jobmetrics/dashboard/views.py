"""The dashboard's HTML pages: the runs list with its trends, one run, its summary fragment,
and one client across runs."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, render_template, request, url_for

from ..runids import validate_client_id
from ..service import MetricsService
from ..status import Status
from .blueprint import (
    DEFAULT_LIMIT,
    BadRequest,
    bp,
    current_service,
    error,
    not_found,
    parse_date,
    parse_limit,
    parse_page,
    parse_run_id,
    parse_status,
)
from .history import client_history, run_trends
from .listing import ListedRun, client_runs, list_runs, read_run
from .present import CLIENT_COLUMNS, NAME_CHARS, PAGE_SIZE, JobView, by_attention, fmt_when, job_view, run_row

__all__ = ["REFRESH_INTERVAL_MS"]

#: How often a page showing running work polls for changes, in milliseconds.
REFRESH_INTERVAL_MS = 2000

#: The status filters offered on the runs list: (label, query value).
_FILTERS: tuple[tuple[str, str | None], ...] = (
    ("All", None),
    *((s.value, s.value) for s in Status if s is not Status.NO_LEADS),
)


def _page(template: str, *, refresh: bool, **context: Any) -> str:
    now = current_service().clock()
    return render_template(
        template,
        refresh_ms=REFRESH_INTERVAL_MS if refresh else 0,
        updated=fmt_when(now)[11:],
        **context,
    )


# -- HTML ----------------------------------------------------------------------------------------


def _list_jobs(service: MetricsService) -> tuple[list[ListedRun], dict[str, Any]]:
    """The runs the list shows (newest first) and the filters that chose them."""
    args = request.args
    limit, status = parse_limit(args), parse_status(args)
    since, until = parse_date(args, "since"), parse_date(args, "until")
    if since is not None and until is not None and since > until:
        raise BadRequest("invalid_date", f"since ({since}) is after until ({until})")
    chosen = {"limit": limit, "status": status, "since": since, "until": until}
    return list_runs(service, limit=limit, status=status, since=since, until=until), chosen


def _index_url(**params: Any) -> str:
    return url_for(".index", **{k: v for k, v in params.items() if v is not None and v != DEFAULT_LIMIT})


@bp.get("/")
def index() -> str:
    service = current_service()
    listed, chosen = _list_jobs(service)
    jobs = [run.job for run in listed]
    now = service.clock()
    rows = [run_row(run.job, run.clients_done, now) for run in listed]
    filters = [
        (label, _index_url(**{**chosen, "status": value}), value == chosen["status"])
        for label, value in _FILTERS
    ]
    poll = {k: v for k, v in chosen.items() if k in ("limit", "status") and v is not None}
    return _page(
        "jobmetrics/runs.html",
        refresh=any(job.status is Status.RUNNING for job in jobs),
        rows=rows,
        filters=filters,
        trends=run_trends(jobs, now, lambda run: url_for(".run", run_id=run)) if jobs else (),
        poll_url=url_for(".api_runs", **poll),
        filtered=any(chosen[k] is not None for k in ("status", "since", "until")),
        **chosen,
    )


def _run_view(run_id: str) -> JobView | Response:
    """The run page's view of ``run_id`` at the requested table page, or the 404 answer."""
    service = current_service()
    parsed = parse_run_id(run_id)
    found = read_run(service, parsed.base)
    if found is None:
        return not_found(parsed.base)
    return job_view(found.job, found.clients, service.clock(), parse_page(request.args))


@bp.get("/runs/<run_id>")
def run(run_id: str) -> Response | str:
    parsed = parse_run_id(run_id)
    if parsed.client is not None:
        return redirect(_client_row_url(parsed.base, parsed.client))  # type: ignore[return-value]
    view = _run_view(run_id)
    if isinstance(view, Response):
        return view
    return _page(
        "jobmetrics/run.html",
        refresh=view.running,
        job=view,
        columns=CLIENT_COLUMNS,
        page_size=PAGE_SIZE,
        name_chars=NAME_CHARS,
    )


def _client_row_url(run: str, client_id: str) -> str:
    """The run page at the table page that holds ``client_id``'s row, scrolled to it."""
    ordered = [c.client_id for c in by_attention(current_service().list_client_runs(run))]
    page = ordered.index(client_id) // PAGE_SIZE + 1 if client_id in ordered else 1
    return url_for(".run", run_id=run, page=page if page > 1 else None, _anchor=f"client-{client_id}")


@bp.get("/runs/<run_id>/summary")
def run_summary(run_id: str) -> Response | str:
    """The run page's status, cards and charts alone: what its live refresh swaps in."""
    view = _run_view(run_id)
    if isinstance(view, Response):
        return view
    return _page("jobmetrics/_run_summary.html", refresh=view.running, job=view)


@bp.get("/clients/<client_id>")
def client(client_id: str) -> Response | str:
    try:
        client_id = validate_client_id(client_id)
    except ValueError as exc:
        raise BadRequest("invalid_client_id", str(exc)) from None
    service = current_service()
    limit = parse_limit(request.args)
    found, looked_at = client_runs(service, client_id, limit=limit)
    if not found:
        return error(404, "not_found", f"No run of client {client_id!r} among the last {limit} job runs.")
    history = client_history(client_id, found, service.clock(), lambda run: url_for(".run", run_id=run))
    return _page(
        "jobmetrics/client.html",
        refresh=any(c.status is Status.RUNNING for c in found),
        client=history,
        looked_at=looked_at,
        limit=limit,
    )
