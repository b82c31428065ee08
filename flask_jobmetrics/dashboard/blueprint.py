"""The ``jobmetrics`` blueprint and its plumbing: access, security headers, errors, parameters.

The routes are added by ``views`` (HTML pages), ``api`` (JSON and ``/metrics``) and ``login``;
``register_dashboard`` imports all three before registering ``bp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timezone

from flask import Blueprint, Response, jsonify, render_template, request

from ..exceptions import InvalidRunIdError, StoreError, StoreUnavailableError
from ..runids import RunId
from ..schema import normalize_status
from ..service import MetricsService
from ..state import get_state
from ..status import Status
from .auth import Decision, check_access

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadRequest",
    "bp",
    "error",
    "not_found",
    "parse_date",
    "parse_limit",
    "parse_page",
    "parse_run_id",
    "parse_status",
    "current_service",
    "started_within",
]

#: Runs listed when no ``limit`` is given, and the largest ``limit`` accepted.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

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


def current_service() -> MetricsService:
    return get_state().service


def _wants_json() -> bool:
    endpoint = request.endpoint or ""
    return endpoint.startswith("jobmetrics.api_")


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
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
    decision = check_access(
        request,
        settings.dashboard_token,
        session_max_age=settings.dashboard_session_max_age,
        loopback=settings.dashboard_loopback,
    )
    if decision is Decision.ALLOW:
        return None
    if decision in (Decision.MISSING_TOKEN, Decision.EXPIRED_SESSION):
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics"'}
        message = (
            "Your session has expired: sign in again."
            if decision is Decision.EXPIRED_SESSION
            else "This dashboard needs its token: sign in, or send an Authorization: Bearer header."
        )
        return error(401, "unauthorized", message, challenge)
    if decision is Decision.INVALID_TOKEN:
        challenge = {"WWW-Authenticate": 'Bearer realm="jobmetrics", error="invalid_token"'}
        return error(401, "unauthorized", "The bearer token is not valid.", challenge)
    if decision is Decision.FORWARDED:
        return error(
            403,
            "forbidden",
            "This request came through a proxy; without JOBMETRICS_DASHBOARD_TOKEN the dashboard"
            " answers direct loopback clients only. Set a token on the server to open it here.",
        )
    return error(
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
    return error(400, exc.code, exc.message)


@bp.errorhandler(StoreError)
def _store_down(exc: StoreError) -> Response:
    if isinstance(exc, StoreUnavailableError):
        return error(503, "store_unavailable", f"The metrics store is unavailable: {exc}")
    return error(500, "store_error", f"The metrics store failed: {exc}")


def parse_limit(args: Mapping[str, str]) -> int:
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


def parse_status(args: Mapping[str, str]) -> str | None:
    text = args.get("status")
    if text is None or not text.strip():
        return None
    try:
        return normalize_status(text)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise BadRequest("invalid_status", f"unknown status {text!r}; one of: {known}") from None


def parse_page(args: Mapping[str, str]) -> int:
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


def parse_date(args: Mapping[str, str], name: str) -> date | None:
    text = (args.get(name) or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest("invalid_date", f"{name} must be a date like 2023-10-05, got {text!r}") from None


def started_within(start: object, since: date | None, until: date | None) -> bool:
    """Whether a job's ``Start Time`` (a datetime, or None) is on a day from ``since`` to ``until``."""
    if not isinstance(start, datetime):
        return since is None and until is None
    day = start.astimezone(timezone.utc).date()
    return (since is None or day >= since) and (until is None or day <= until)


def parse_run_id(text: str) -> RunId:
    try:
        return RunId.parse(text)
    except InvalidRunIdError as exc:
        raise BadRequest("invalid_run_id", str(exc)) from None


def not_found(run: str) -> Response:
    return error(404, "not_found", f"No job run {run!r}.")
