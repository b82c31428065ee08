"""The ``jobmetrics`` blueprint: its plumbing (access, errors, parameters) and the HTML pages.

The JSON API and ``/metrics`` are in ``api.py``, the login form in ``login.py``; both add
their routes to ``bp`` when this module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for

from ..exceptions import InvalidRunIdError, StoreError
from ..extension import get_state
from ..models import ClientRun, JobRun, Status
from ..runids import RunId, validate_client_id
from ..schema import normalize_status
from ..service import MetricsService
from .auth import Decision, check_access
from .history import client_history, run_trends
from .present import CLIENT_COLUMNS, PAGE_SIZE, by_attention, fmt_when, job_view, run_row

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "REFRESH_INTERVAL_MS", "BadRequest", "bp"]

#: How often a page showing a Running job re-fetches itself, in milliseconds.
REFRESH_INTERVAL_MS = 2000
#: Runs listed when no ``limit`` is given, and the largest ``limit`` accepted.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

#: The status filters offered on the runs list: (label, query value).
_FILTERS: tuple[tuple[str, str | None], ...] = (
    ("All", None),
    *((s.value, s.value) for s in Status if s is not Status.NO_LEADS),
)

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Endpoints answered without any access check: the static files and the login form.
_OPEN_ENDPOINTS = frozenset(
    {"jobmetrics.static", "jobmetrics.login", "jobmetrics.login_post", "jobmetrics.logout"}
)

bp = Blueprint(
    "jobmetrics",
    __name__,
    url_prefix="/jobmetrics",
    template_folder="templates",
    static_folder="static",
)


class BadRequest(Exception):
    """A request parameter the dashboard cannot use; answered with 400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- plumbing ------------------------------------------------------------------------------------


def _service() -> MetricsService:
    return get_state().service


def _wants_json() -> bool:
    endpoint = request.endpoint or ""
    return endpoint.startswith("jobmetrics.api_")


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """The error as JSON for the API, plain text for ``/metrics``, a short page otherwise."""
    if _wants_json():
        response = jsonify(error=code, message=message)
    elif request.endpoint == "jobmetrics.metrics":
        response = Response(message + "\n", mimetype="text/plain")
    else:
        page = render_template(
            "jobmetrics/error.html",
            status=status,
            message=message,
            login=status == 401,
            refused=status in (401, 403),
            next_url=_here(),
        )
        response = Response(page)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _here() -> str:
    """The path (and query) of this request, to come back to after signing in."""
    return request.full_path.rstrip("?") if request.query_string else request.path


@bp.before_request
def _authorize() -> Response | None:
    if request.endpoint in _OPEN_ENDPOINTS:
        return None  # the package's own CSS and JS (nothing secret) and the login form itself
    settings = get_state().settings
    decision = check_access(request, settings.dashboard_token, loopback=settings.dashboard_loopback)
    if decision is Decision.ALLOW:
        return None
    if decision is Decision.MISSING_TOKEN:
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics"'}
        return _error(
            401,
            "unauthorized",
            "This dashboard needs its token: sign in, or send an Authorization: Bearer header.",
            challenge,
        )
    if decision is Decision.INVALID_TOKEN:
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics", error="invalid_token"'}
        return _error(401, "unauthorized", "The bearer token is not valid.", challenge)
    if decision is Decision.FORWARDED:
        return _error(
            403,
            "forbidden",
            "This request came through a proxy; without JOBMETRICS_DASHBOARD_TOKEN the dashboard"
            " answers direct loopback clients only. Set a token on the server to open it here.",
        )
    return _error(
        403,
        "forbidden",
        "Without JOBMETRICS_DASHBOARD_TOKEN the dashboard answers loopback clients only: open it"
        " through an SSH tunnel (ssh -L 5000:127.0.0.1:5000 host), or set a token on the server.",
    )


@bp.after_request
def _harden(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Response:
    return _error(400, exc.code, exc.message)


@bp.errorhandler(StoreError)
def _store_down(exc: StoreError) -> Response:
    return _error(503, "store_unavailable", f"The metrics store is unavailable: {exc}")


def _limit(args: Mapping[str, str]) -> int:
    text = args.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text.strip())
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest("invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return limit


def _status(args: Mapping[str, str]) -> str | None:
    text = args.get("status")
    if text is None or not text.strip():
        return None
    try:
        return normalize_status(text)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise BadRequest("invalid_status", f"unknown status {text!r}; one of: {known}") from None


def _page_number(args: Mapping[str, str]) -> int:
    text = args.get("page")
    if text is None:
        return 1
    try:
        page = int(text.strip())
    except ValueError:
        page = 0
    if page < 1:
        raise BadRequest("invalid_page", f"page must be a whole number from 1, got {text!r}")
    return page


def _date(args: Mapping[str, str], name: str) -> date | None:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest("invalid_date", f"{name} must be a date like 2023-10-05, got {text!r}") from None


def _started_within(job: JobRun, since: date | None, until: date | None) -> bool:
    if job.start_time is None:
        return since is None and until is None
    day = job.start_time.astimezone(timezone.utc).date()
    return (since is None or day >= since) and (until is None or day <= until)


def _run_id(text: str) -> RunId:
    try:
        return RunId.parse(text)
    except InvalidRunIdError as exc:
        raise BadRequest("invalid_run_id", str(exc)) from None


def _not_found(run: str) -> Response:
    return _error(404, "not_found", f"No job run {run!r}.")


def _clients(service: MetricsService, job: JobRun) -> list[ClientRun]:
    found = service.list_client_runs(job.run_id)
    return sorted(found, key=lambda c: (c.client_id.casefold(), c.client_id))


def _clients_done(service: MetricsService, job: JobRun) -> int:
    return sum(1 for c in service.list_client_runs(job.run_id) if c.status is not Status.RUNNING)


def _page(template: str, *, refresh: bool, **context: Any) -> str:
    now = _service().clock()
    return render_template(
        template,
        refresh_ms=REFRESH_INTERVAL_MS if refresh else 0,
        updated=fmt_when(now)[11:],
        token_set=bool(get_state().settings.dashboard_token),
        **context,
    )


# -- HTML ----------------------------------------------------------------------------------------


def _list_jobs(service: MetricsService) -> tuple[list[JobRun], dict[str, Any]]:
    """The runs the list shows (newest first) and the filters that chose them."""
    args = request.args
    limit, status = _limit(args), _status(args)
    since, until = _date(args, "since"), _date(args, "until")
    if since is not None and until is not None and since > until:
        raise BadRequest("invalid_date", f"since ({since}) is after until ({until})")
    if since is None and until is None:
        jobs = service.list_job_runs(limit=limit, status=status)
    else:  # the store lists newest first: read the most a page may look at, keep the dates asked
        found = service.list_job_runs(limit=MAX_LIMIT, status=status)
        jobs = [job for job in found if _started_within(job, since, until)][:limit]
    chosen = {"limit": limit, "status": status, "since": since, "until": until}
    return jobs, chosen


def _index_url(**params: Any) -> str:
    return url_for(".index", **{k: v for k, v in params.items() if v is not None and v != DEFAULT_LIMIT})


@bp.get("/")
def index() -> str:
    service = _service()
    jobs, chosen = _list_jobs(service)
    now = service.clock()
    rows = [run_row(job, _clients_done(service, job), now) for job in jobs]
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


def _run_view(run_id: str) -> tuple[Any, Response | None]:
    service = _service()
    parsed = _run_id(run_id)
    job = service.get_job_run(parsed.base)
    if job is None:
        return None, _not_found(parsed.base)
    return job_view(job, _clients(service, job), service.clock(), _page_number(request.args)), None


@bp.get("/runs/<run_id>")
def run(run_id: str) -> Response | str:
    parsed = _run_id(run_id)
    if parsed.client is not None:
        return redirect(_client_row_url(parsed.base, parsed.client))  # type: ignore[return-value]
    view, missing = _run_view(run_id)
    if missing is not None:
        return missing
    return _page(
        "jobmetrics/run.html", refresh=view.running, job=view, columns=CLIENT_COLUMNS, page_size=PAGE_SIZE
    )


def _client_row_url(run: str, client_id: str) -> str:
    """The run page at the table page that holds ``client_id``'s row, scrolled to it."""
    ordered = [c.client_id for c in by_attention(_service().list_client_runs(run))]
    page = ordered.index(client_id) // PAGE_SIZE + 1 if client_id in ordered else 1
    return url_for(".run", run_id=run, page=page if page > 1 else None, _anchor=f"client-{client_id}")


@bp.get("/runs/<run_id>/summary")
def run_summary(run_id: str) -> Response | str:
    """The run page's status, cards and charts alone: what its live refresh swaps in."""
    view, missing = _run_view(run_id)
    if missing is not None:
        return missing
    return _page("jobmetrics/_run_summary.html", refresh=view.running, job=view)


@bp.get("/clients/<client_id>")
def client(client_id: str) -> Response | str:
    try:
        client_id = validate_client_id(client_id)
    except ValueError as exc:
        raise BadRequest("invalid_client_id", str(exc)) from None
    service = _service()
    limit = _limit(request.args)
    jobs = service.list_job_runs(limit=limit)
    runs = [service.get_client_run(job.run_id, client_id) for job in jobs if client_id in job.client_ids]
    found = [c for c in runs if c is not None]
    if not found:
        return _error(404, "not_found", f"No run of client {client_id!r} among the last {limit} job runs.")
    history = client_history(client_id, found, service.clock(), lambda run: url_for(".run", run_id=run))
    return _page(
        "jobmetrics/client.html",
        refresh=any(c.status is Status.RUNNING for c in found),
        client=history,
        looked_at=len(jobs),
        limit=limit,
    )


from . import api, login  # noqa: E402,F401  (their routes join bp)
