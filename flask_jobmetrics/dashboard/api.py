"""The JSON API (read-only, answering conditional requests) and the Prometheus exposition.

A run's JSON lists its clients without their long texts (the page polls it every two seconds
while the run is live, and a Progress Log alone can be tens of KB): each client carries the
numbers, previews of its error and notes, and whether it has details; the whole client run,
Progress Log included, is at ``/api/runs/<run_id>/clients/<client_id>``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from ..models import ClientRun
from ..runids import validate_client_id
from .blueprint import (
    BadRequest,
    bp,
    current_service,
    error,
    not_found,
    parse_limit,
    parse_run_id,
    parse_status,
)
from .listing import list_runs, read_run
from .present import error_of, reason_of

__all__ = ["API_CACHE_CONTROL", "PREVIEW_CHARS", "client_summary"]

#: The API may be kept but must be revalidated: an unchanged answer then costs a 304.
API_CACHE_CONTROL = "no-cache, private"

#: The longest error, notes or reason a client of the run JSON carries (cut ones end in "…"):
#: an error as long as real ones get (a message with a request ID and a URL) stays whole.
PREVIEW_CHARS = 240

#: The ClientRun fields a client of the run JSON carries as they are.
_SUMMARY_FIELDS = {"client_id", "status", "completed", "start_time", "end_time", "metrics"}


def _conditional(**payload: Any) -> Response:
    """``payload`` as JSON with a strong ETag; 304 when the request's If-None-Match has it."""
    response = jsonify(**payload)
    response.headers["Cache-Control"] = API_CACHE_CONTROL
    response.add_etag()
    response.make_conditional(request)  # in place: 304 and no body when the ETag matches
    return response


@bp.get("/api/runs")
def api_runs() -> Response:
    listed = list_runs(current_service(), limit=parse_limit(request.args), status=parse_status(request.args))
    return _conditional(runs=[run.job.model_dump(mode="json") for run in listed])


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "\u2026"


def client_summary(client: ClientRun) -> dict[str, Any]:
    """A client of the run JSON: its numbers and times, ``error`` / ``notes`` / ``reason``
    (the failure reason shown under its status) cut to PREVIEW_CHARS, and ``details``: whether
    it has an error or notes to show. No Progress Log."""
    error = error_of(client)
    summary = client.model_dump(mode="json", include=_SUMMARY_FIELDS)
    summary.update(
        error=_preview(error) or None,
        notes=_preview(client.notes),
        reason=_preview(reason_of(client)),
        details=bool(error or client.notes),
    )
    return summary


@bp.get("/api/runs/<run_id>")
def api_run(run_id: str) -> Response:
    service = current_service()
    parsed = parse_run_id(run_id)
    found = read_run(service, parsed.base)
    if found is None:
        return not_found(parsed.base)
    return _conditional(
        job=found.job.model_dump(mode="json"), clients=[client_summary(c) for c in found.clients]
    )


@bp.get("/api/runs/<run_id>/clients/<client_id>")
def api_client_run(run_id: str, client_id: str) -> Response:
    """One client run whole: Error Details, System Notes and Progress Log included."""
    parsed = parse_run_id(run_id)
    try:
        client_id = validate_client_id(client_id)
    except ValueError as exc:
        raise BadRequest("invalid_client_id", str(exc)) from None
    found = current_service().get_client_run(parsed.base, client_id)
    if found is None:
        return error(404, "not_found", f"No client {client_id!r} in job run {parsed.base!r}.")
    return _conditional(client=found.model_dump(mode="json"))


@bp.get("/metrics")
def metrics() -> Response:
    try:
        from ..prometheus import exposition
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "prometheus_client":
            raise
        return error(
            501,
            "not_implemented",
            "Prometheus metrics need prometheus_client: pip install 'flask-jobmetrics[prometheus]'",
        )
    body, content_type = exposition(current_service(), request.headers.get("Accept"))
    return Response(body, content_type=content_type)
