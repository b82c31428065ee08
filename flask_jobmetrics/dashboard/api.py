"""The JSON API (read-only, answering conditional requests) and the Prometheus exposition."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from .blueprint import (
    bp,
    current_service,
    error,
    not_found,
    parse_limit,
    parse_run_id,
    parse_status,
    sorted_clients,
)

__all__ = ["API_CACHE_CONTROL"]

#: The API may be kept but must be revalidated: an unchanged answer then costs a 304.
API_CACHE_CONTROL = "no-cache, private"


def _conditional(**payload: Any) -> Response:
    """``payload`` as JSON with a strong ETag; 304 when the request's If-None-Match has it."""
    response = jsonify(**payload)
    response.headers["Cache-Control"] = API_CACHE_CONTROL
    response.add_etag()
    response.make_conditional(request)  # in place: 304 and no body when the ETag matches
    return response


@bp.get("/api/runs")
def api_runs() -> Response:
    service = current_service()
    jobs = service.list_job_runs(limit=parse_limit(request.args), status=parse_status(request.args))
    return _conditional(runs=[job.model_dump(mode="json") for job in jobs])


@bp.get("/api/runs/<run_id>")
def api_run(run_id: str) -> Response:
    service = current_service()
    parsed = parse_run_id(run_id)
    job = service.get_job_run(parsed.base)
    if job is None:
        return not_found(parsed.base)
    clients = sorted_clients(service, job)
    return _conditional(job=job.model_dump(mode="json"), clients=[c.model_dump(mode="json") for c in clients])


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
