"""Post scoring: score the posts harvested for each client of a run (plain service calls).

The stand-in scorer is as easy to check by hand as the lead scorer: a client's posts are
numbered 1, 2, ... in the order they were harvested in the run; every 7th post (7, 14, ...)
cannot be scored and spends no tokens; every other post is scored for
``TOKENS_PER_POST`` tokens. Each call scores the posts harvested since the last call, so
calling it twice never counts a post twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flask_jobmetrics import (
    ClientRun,
    JobMetrics,
    JobRun,
    Status,
    StructuredLogger,
    UnknownRunError,
    idempotency_key,
)

__all__ = [
    "TOKENS_PER_POST",
    "UNSCORABLE_EVERY",
    "PostScoring",
    "post_is_scorable",
    "run_post_scoring",
    "score_client_posts",
]

TOKENS_PER_POST = 120
#: Every post whose number is a multiple of this cannot be scored.
UNSCORABLE_EVERY = 7

HARVESTED = "Total Posts Harvested"
EXAMINED = "Posts Examined for Scoring"


@dataclass(frozen=True)
class PostScoring:
    """What post scoring did for one client."""

    client_id: str
    examined: int = 0
    scored: int = 0
    tokens: int = 0
    #: The client run's status afterwards.
    status: str = ""
    #: Why the client was left alone, or None.
    skipped: str | None = None


def post_is_scorable(number: int) -> bool:
    """Whether post ``number`` (1-based, per client and run) can be scored."""
    return number % UNSCORABLE_EVERY != 0


def _count(run: ClientRun, field: str) -> int:
    value = run.metrics.get(field) or 0
    return int(value) if isinstance(value, (int, float)) else 0


def score_client_posts(jobmetrics: JobMetrics, run_id: str, client_id: str) -> PostScoring:
    """Score the client's posts harvested and not yet examined, then complete its client run.

    A client with no client run in ``run_id``, or whose client run ``Failed``, is skipped.
    """
    run = jobmetrics.get_client_run(run_id, client_id)
    if run is None:
        return PostScoring(client_id, skipped=f"no client run in {run_id}")
    if run.status is Status.FAILED:
        return PostScoring(client_id, status=run.status.value, skipped="its client run Failed")
    logger = StructuredLogger("CLIENT", client_id, "post_scoring", run_id=run_id)
    harvested, examined_before = _count(run, HARVESTED), _count(run, EXAMINED)
    numbers = range(examined_before + 1, harvested + 1)
    scored = sum(1 for n in numbers if post_is_scorable(n))
    tokens = scored * TOKENS_PER_POST
    if numbers:
        # Two concurrent calls read the same counts and make the same key: counted once.
        key = idempotency_key("post-scoring", run_id, client_id, examined_before, harvested)
        metrics = {"Posts Examined": len(numbers), "Posts Scored": scored, "Post Tokens": tokens}
        jobmetrics.update_client_metrics(
            run_id, client_id, {**metrics, "Total Tokens": tokens}, logger=logger, idempotency_key=key
        )
    done = jobmetrics.complete_client_metrics(run_id, client_id, logger=logger)
    return PostScoring(client_id, len(numbers), scored, tokens, done.status.value)


def run_post_scoring(
    jobmetrics: JobMetrics,
    run_id: str,
    clients: Iterable[str] | None = None,
    *,
    complete_job: bool = False,
) -> tuple[JobRun, list[PostScoring]]:
    """Score the posts of ``clients`` (default: every client of the run) and complete each.

    The job's aggregates are brought up to date; with ``complete_job`` the job is completed.
    Raises ``UnknownRunError`` when there is no such job run.
    """
    job = jobmetrics.get_job_run(run_id)
    if job is None:
        raise UnknownRunError(f"no job run {run_id!r}")
    names = sorted(job.client_ids) if clients is None else list(clients)
    results = [score_client_posts(jobmetrics, job.run_id, client_id) for client_id in names]
    if complete_job:
        scored = sum(r.scored for r in results)
        notes = f"Post scoring: {scored} posts scored for {sum(1 for r in results if r.examined)} clients"
        return jobmetrics.complete_job_metrics(job.run_id, notes=notes), results
    return jobmetrics.update_job_aggregate_metrics(job.run_id), results
