"""The webhook server's routes; each shows the integration style that fits it.

- ``POST /run-batch-score``: plain service calls, in a background thread (``batch.py``).
- ``POST /score-lead/<client_id>/<lead_id>``: the ``client_metrics_updated`` signal.
- ``POST /webhooks/harvest/<client_id>``: the ``tracked`` and ``signed`` decorators, and an
  idempotent update so a redelivered event counts once.
- ``POST /run-post-scoring``: plain service calls, synchronously (``posts.py``).
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from flask import Blueprint, Response, abort, current_app, jsonify, make_response, request

from flask_jobmetrics import InvalidRunIdError, RunId, UnknownRunError, current_run, idempotency_key
from flask_jobmetrics.signals import client_metrics_updated

from .background import background_work
from .batch import batch_notes, run_batch
from .ext import jobmetrics
from .harvest import parse_harvest_event
from .posts import run_post_scoring
from .scoring import CLIENTS, ScorerCrashed, score_lead

__all__ = ["bp"]

bp = Blueprint("example_app", __name__)

_LEAD_ID = re.compile(r"^(?:(?P<client>.+)-lead-)?(?P<number>\d{1,9})$")


def _fail(status: int, error: str, message: str) -> NoReturn:
    abort(make_response(jsonify(error=error, message=message), status))


def _body() -> dict[str, Any]:
    """The JSON object sent, ``{}`` for an empty body; 400 for anything else."""
    if not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        _fail(400, "invalid_body", "the body must be a JSON object (or empty)")
    return data


def _client_list(body: dict[str, Any]) -> list[str] | None:
    clients = body.get("clients")
    if clients is None:
        return None
    if not isinstance(clients, list) or not clients or not all(isinstance(c, str) and c for c in clients):
        _fail(400, "invalid_body", "clients must be a non-empty list of client IDs")
    return list(dict.fromkeys(clients))


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        _fail(400, "invalid_body", f"{name} must be true or false")
    return value


@bp.get("/")
def index() -> dict[str, Any]:
    """What this server offers."""
    return {
        "app": "flask_jobmetrics example webhook server",
        "clients": list(CLIENTS),
        "routes": {
            "POST /run-batch-score": 'start a lead-scoring job: {"clients": [...], "complete": true}',
            "POST /score-lead/<client_id>/<lead_id>": "score one lead (run ID in X-Run-ID or ?runId=)",
            "POST /webhooks/harvest/<client_id>": 'signed: {"event_id": ..., "run_id": ..., "posts": [...]}',
            "POST /run-post-scoring": 'score harvested posts: {"run_id": ..., "clients": [...]}',
        },
    }


# -- plain service calls, in a background thread ----------------------------------------


@bp.post("/run-batch-score")
def run_batch_score() -> tuple[Response, int]:
    """Start a lead-scoring job and answer 202 with its run ID; the scoring runs in a thread.

    Body (optional): ``{"clients": [...], "complete": true}``. With ``"complete": false``
    the client runs and the job stay ``Running`` for post harvesting and post scoring.
    """
    body = _body()
    names = _client_list(body) or list(CLIENTS)
    complete = _flag(body, "complete", True)
    unknown = [c for c in names if c not in CLIENTS]
    if unknown:
        _fail(400, "unknown_clients", f"unknown clients: {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
    job = jobmetrics.start_job(notes=batch_notes(names))
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def work() -> None:
        try:
            run_batch(jobmetrics, names, run_id=job.run_id, complete=complete)
        except Exception as exc:
            jobmetrics.complete_job_metrics(
                job.run_id, success=False, notes=f"Batch scoring crashed: {exc!r}"
            )
            raise

    background_work(app).start(app, f"batch-score-{job.run_id}", work)
    return jsonify(run_id=job.run_id, clients=names, complete=complete), 202


# -- signals --------------------------------------------------------------------------------


def _lead_number(client_id: str, lead_id: str) -> int:
    found = _LEAD_ID.match(lead_id)
    if (
        found is None
        or (found["client"] is not None and found["client"] != client_id)
        or int(found["number"]) < 1
    ):
        _fail(404, "unknown_lead", f"lead IDs look like 17 or {client_id}-lead-0017, not {lead_id!r}")
    return int(found["number"])


@bp.post("/score-lead/<client_id>/<lead_id>")
def score_one_lead(client_id: str, lead_id: str) -> Response | tuple[Response, int]:
    """Score one lead and report it with the ``client_metrics_updated`` signal."""
    if current_run.problem is not None:
        _fail(400, "invalid_run_context", current_run.problem)
    run_id, client = current_run.ids()
    if client not in CLIENTS:
        _fail(404, "unknown_client", f"no client {client!r}")
    number = _lead_number(client, lead_id)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        result = score_lead(client, number)
    except ScorerCrashed as exc:
        # The lead was examined; it was not scored and spent nothing.
        metrics = {"Leads Processed": 1, "Profiles Examined": 1}
        client_metrics_updated.send(app, run_id=run_id, client_id=client, metrics=metrics)
        current_run.logger.error("scoring lead %s failed: %s", lead_id, exc)
        return jsonify(error="scoring_failed", message=str(exc)), 502
    metrics = {
        "Leads Processed": 1,
        "Profiles Examined": 1,
        "Profiles Scored": int(result.scored),
        "Profile Tokens": result.tokens,
        "Total Tokens": result.tokens,
    }
    client_metrics_updated.send(app, run_id=run_id, client_id=client, metrics=metrics)
    return jsonify(
        run_id=run_id,
        client_id=client,
        lead_id=result.lead_id,
        scored=result.scored,
        score=result.score,
        tokens=result.tokens,
    )


# -- decorators -----------------------------------------------------------------------------


@bp.post("/webhooks/harvest/<client_id>")
@jobmetrics.tracked(process="post_harvesting")
@jobmetrics.signed
def harvest_webhook(client_id: str) -> Response:
    """A signed delivery of harvested posts; a redelivered event (same event ID) counts once.

    ``tracked`` answers 400 without a valid run ID (``X-Run-ID`` or ``?runId=``) and
    ``signed`` 401 without a valid signature; neither records anything then.
    """
    run_id, client = current_run.ids()
    try:
        event = parse_harvest_event(request.get_json(silent=True), run_id)
    except ValueError as exc:
        _fail(400, "invalid_payload", str(exc))
    # current_run.add() merges once at the end of the request but takes no idempotency key,
    # so the count goes straight to the service with one derived from the sender's event ID.
    after = jobmetrics.update_client_metrics(
        run_id,
        client,
        {"Posts Harvested": len(event.posts)},
        logger=current_run.logger,
        idempotency_key=idempotency_key("harvest", client, event.event_id),
    )
    total = after.metrics.get("Total Posts Harvested", 0)
    current_run.logger.info(
        "harvest event %s: %d posts (run total %s)", event.event_id, len(event.posts), total
    )
    return jsonify(
        run_id=run_id,
        client_id=client,
        event_id=event.event_id,
        posts=len(event.posts),
        total_posts_harvested=total,
    )


# -- plain service calls, synchronously -----------------------------------------------------


@bp.post("/run-post-scoring")
def post_scoring() -> Response:
    """Score the harvested posts of a run's clients and complete each client run.

    Body (optional): ``{"run_id": ..., "clients": [...], "complete_job": false}``; without
    ``run_id`` the newest job run is scored.
    """
    body = _body()
    clients = _client_list(body)
    complete_job = _flag(body, "complete_job", False)
    named = body.get("run_id")
    if named is None:
        newest = jobmetrics.list_job_runs(limit=1)
        if not newest:
            _fail(404, "no_runs", "there is no job run yet: POST /run-batch-score first")
        run_id = newest[0].run_id
    else:
        try:
            run_id = RunId.parse(str(named)).base
        except InvalidRunIdError as exc:
            _fail(400, "invalid_run_id", f"run_id: {exc}")
    try:
        job, results = run_post_scoring(jobmetrics, run_id, clients, complete_job=complete_job)
    except UnknownRunError as exc:
        _fail(404, "unknown_run", str(exc))
    return jsonify(
        run_id=job.run_id,
        job_status=job.status.value,
        clients=[
            {
                "client_id": r.client_id,
                "posts_examined": r.examined,
                "posts_scored": r.scored,
                "post_tokens": r.tokens,
                "status": r.status,
                "skipped": r.skipped,
            }
            for r in results
        ],
    )
