"""The ``jobmetrics`` blueprint: the runs list, one run, the JSON API and ``/metrics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for

from ..exceptions import InvalidRunIdError, StoreError
from ..models import ClientRun, JobRun, Status
from ..runids import RunId
from ..schema import normalize_status
from ..service import MetricsService
from ..state import get_state
from .auth import Decision, check_access
from .present import CLIENT_COLUMNS, fmt_when, job_view, run_row

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "REFRESH_INTERVAL_MS", "bp"]

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
        response = Response(render_template("jobmetrics/error.html", status=status, message=message))
    response.status_code = status
    response.headers.update(headers or {})
    return response


@bp.before_request
def _authorize() -> Response | None:
    if request.endpoint == "jobmetrics.static":
        return None  # the package's own CSS and JS: nothing secret, and the 401 page uses them
    decision = check_access(request, get_state().settings.dashboard_token)
    if decision is Decision.ALLOW:
        return None
    if decision is Decision.MISSING_TOKEN:
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics"'}
        return _error(401, "unauthorized", "This dashboard needs an Authorization: Bearer token.", challenge)
    if decision is Decision.INVALID_TOKEN:
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics", error="invalid_token"'}
        return _error(401, "unauthorized", "The bearer token is not valid.", challenge)
    if decision is Decision.FORWARDED:
        return _error(
            403,
            "forbidden",
            "This request came through a proxy; without JOBMETRICS_DASHBOARD_TOKEN the dashboard"
            " answers direct loopback clients only.",
        )
    return _error(
        403,
        "forbidden",
        "Without JOBMETRICS_DASHBOARD_TOKEN the dashboard answers loopback clients only.",
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
        **context,
    )


# -- HTML ----------------------------------------------------------------------------------------


@bp.get("/")
def index() -> str:
    service = _service()
    limit, status = _limit(request.args), _status(request.args)
    jobs = service.list_job_runs(limit=limit, status=status)
    now = service.clock()
    rows = [run_row(job, _clients_done(service, job), now) for job in jobs]
    filters = [
        (label, url_for(".index", status=value) if value else url_for(".index"), value == status)
        for label, value in _FILTERS
    ]
    return _page(
        "jobmetrics/runs.html",
        refresh=any(job.status is Status.RUNNING for job in jobs),
        rows=rows,
        filters=filters,
        status=status,
        limit=limit,
    )


@bp.get("/runs/<run_id>")
def run(run_id: str) -> Response | str:
    parsed = _run_id(run_id)
    if parsed.client is not None:
        target = url_for(".run", run_id=parsed.base, _anchor=f"client-{parsed.client}")
        return redirect(target)  # type: ignore[return-value]
    service = _service()
    job = service.get_job_run(parsed.base)
    if job is None:
        return _not_found(parsed.base)
    view = job_view(job, _clients(service, job), service.clock())
    return _page("jobmetrics/run.html", refresh=view.running, job=view, columns=CLIENT_COLUMNS)


# -- JSON ----------------------------------------------------------------------------------------


@bp.get("/api/runs")
def api_runs() -> Response:
    service = _service()
    jobs = service.list_job_runs(limit=_limit(request.args), status=_status(request.args))
    return jsonify(runs=[job.model_dump(mode="json") for job in jobs])


@bp.get("/api/runs/<run_id>")
def api_run(run_id: str) -> Response:
    service = _service()
    parsed = _run_id(run_id)
    job = service.get_job_run(parsed.base)
    if job is None:
        return _not_found(parsed.base)
    clients = _clients(service, job)
    return jsonify(job=job.model_dump(mode="json"), clients=[c.model_dump(mode="json") for c in clients])


# -- Prometheus ----------------------------------------------------------------------------------


@bp.get("/metrics")
def metrics() -> Response:
    try:
        from ..prometheus import exposition
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        return _error(
            501,
            "not_implemented",
            "Prometheus metrics need prometheus_client: pip install 'flask-jobmetrics[prometheus]'",
        )
    body, content_type = exposition(_service(), request.headers.get("Accept"))
    return Response(body, content_type=content_type)
