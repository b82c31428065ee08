"""Batch lead scoring: the plain-call integration style of flask_jobmetrics."""

from __future__ import annotations

from collections.abc import Iterable

from flask_jobmetrics import JobMetrics, JobRun, StructuredLogger

from .scoring import CLIENTS, ScorerCrashed, chunks, score_lead

__all__ = ["run_batch", "score_client"]


def score_client(jobmetrics: JobMetrics, run_id: str, client_id: str, leads: int) -> None:
    """Score one client's leads chunk by chunk, reporting each chunk as an increment."""
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
    except ScorerCrashed as exc:
        logger.error("scoring failed: %s", exc)
        jobmetrics.complete_client_metrics(run_id, client_id, success=False, logger=logger)
        return
    jobmetrics.complete_client_metrics(run_id, client_id, logger=logger)


def run_batch(jobmetrics: JobMetrics, clients: Iterable[str] | None = None) -> JobRun:
    """Start a job, score every client, complete the job; returns the finished job."""
    names = list(CLIENTS) if clients is None else list(clients)
    job = jobmetrics.start_job(notes=f"Batch lead scoring for {len(names)} clients")
    for client_id in names:
        score_client(jobmetrics, job.run_id, client_id, CLIENTS.get(client_id, 0))
    return jobmetrics.complete_job_metrics(
        job.run_id, notes=f"Completed batch scoring for {len(names)} clients"
    )
