"""Batch lead scoring: the plain-call integration style of flask_jobmetrics.

Scorer code calls the service directly (``update_client_metrics`` once per chunk, then
``complete_client_metrics``), in a request, a background thread or a script alike.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask_jobmetrics import JobMetrics, JobRun, StructuredLogger

from .scoring import CLIENTS, ScorerCrashed, chunks, score_lead

__all__ = ["batch_notes", "run_batch", "score_client"]


def batch_notes(clients: list[str]) -> str:
    """The job's ``System Notes`` when a batch starts."""
    return f"Batch lead scoring for {len(clients)} clients"


def score_client(
    jobmetrics: JobMetrics, run_id: str, client_id: str, leads: int, *, complete: bool = True
) -> None:
    """Score one client's leads chunk by chunk, reporting each chunk as an increment.

    A crash of the scorer completes the client run as ``Failed``, its error in ``Error
    Details``. Otherwise the client run is completed when ``complete`` is true, and left
    ``Running`` for the stages that follow (post harvesting, post scoring) when it is false.
    Each chunk also adds a line to the client's Progress Log.
    """
    logger = StructuredLogger("CLIENT", client_id, "lead_scoring", run_id=run_id)
    jobmetrics.update_client_metrics(run_id, client_id, {}, logger=logger)
    try:
        for chunk in chunks(leads):
            results = [score_lead(client_id, n) for n in chunk]
            tokens = sum(r.tokens for r in results)
            jobmetrics.update_client_metrics(
                run_id,
                client_id,
                {
                    "Leads Processed": len(results),
                    "Profiles Examined": len(results),
                    "Profiles Scored": sum(r.scored for r in results),
                    "Profile Tokens": tokens,
                    "Total Tokens": tokens,
                },
                logger=logger,
            )
            jobmetrics.log_progress(run_id, client_id, f"scored leads {chunk.start}-{chunk.stop - 1}")
    except ScorerCrashed as exc:
        logger.error("scoring failed: %s", exc)
        jobmetrics.complete_client_metrics(run_id, client_id, error=exc, logger=logger)
        return
    if complete:
        jobmetrics.complete_client_metrics(run_id, client_id, logger=logger)


def run_batch(
    jobmetrics: JobMetrics,
    clients: Iterable[str] | None = None,
    *,
    run_id: str | None = None,
    complete: bool = True,
) -> JobRun:
    """Start a job (or continue ``run_id``, already started), score every client, return the job.

    With ``complete`` (the default) every client run and then the job are completed. With
    ``complete=False`` they stay ``Running`` (a crashed client is ``Failed`` all the same)
    for post harvesting and post scoring, and the job is returned as it stands.
    """
    names = list(CLIENTS) if clients is None else list(clients)
    if run_id is None:  # a run_id given was started by the caller
        run_id = jobmetrics.start_job(notes=batch_notes(names)).run_id
    for client_id in names:
        score_client(jobmetrics, run_id, client_id, CLIENTS.get(client_id, 0), complete=complete)
    if not complete:
        return jobmetrics.update_job_aggregate_metrics(run_id)
    return jobmetrics.complete_job_metrics(run_id, notes=f"Completed batch scoring for {len(names)} clients")
