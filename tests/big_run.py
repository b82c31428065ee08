"""A generated run at the size operators see: hundreds of clients, some failed, long names."""

from __future__ import annotations

from collections.abc import Sequence

from flask_jobmetrics.service import MetricsService

#: Every FAIL_EVERY-th client fails, every NO_LEADS_EVERY-th has no leads.
FAIL_EVERY = 13
NO_LEADS_EVERY = 17


def client_ids(count: int) -> list[str]:
    """``count`` client IDs, a few of them long enough to truncate anywhere."""
    ids = []
    for i in range(count):
        if i % 7 == 3:
            ids.append(f"A-Very-Long-Tenant-Name-Holdings-{i:03d}")
        else:
            ids.append(f"client-{i:03d}")
    return ids


def _fails(i: int) -> bool:
    return i % FAIL_EVERY == 5 and i % NO_LEADS_EVERY != 9


def expected_failures(ids: Sequence[str], offset: int = 0) -> list[str]:
    """The clients ``score(..., offset=offset)`` leaves Running (Failed once the job completes)."""
    return [c for n, c in enumerate(ids) if _fails(offset + n)]


#: What a failing client reports before it stops: an error as long as real ones get.
ERROR = (
    "TimeoutError: scoring model did not answer within 30 s (attempt 3 of 3); "
    "request id 7f3c2a9e-41d8-4b7e-9a0c-5d2e1f6b8c34, endpoint https://models.example.com/v1/score"
)


def score(
    service: MetricsService, run_id: str, ids: Sequence[str], *, offset: int = 0, details: bool = True
) -> None:
    """Report each client; its position (``offset`` + index) decides its fate: most complete, some
    have no leads, every FAIL_EVERY-th stays Running until the job is completed (then Failed).

    With ``details``, the failing ones record an error and progress lines first, and every
    eleventh completed client leaves a note."""
    for n, client in enumerate(ids):
        i = offset + n
        if i % NO_LEADS_EVERY == 9:
            service.complete_client_metrics(run_id, client, {"Leads Processed": 0})
            continue
        leads = 20 + (i * 37) % 400
        scored = leads - i % 9
        metrics = {
            "Leads Processed": leads,
            "Profiles Examined": leads,
            "Profiles Scored": scored,
            "Posts Harvested": i % 50,
            "Posts Examined": i % 40,
            "Posts Scored": i % 30,
            "Total Tokens": scored * 250 + (i % 30) * 120,
        }
        if _fails(i):  # never completed: completing the job closes it as Failed
            service.update_client_metrics(run_id, client, metrics)
            if details:
                service.log_progress(run_id, client, f"fetched {leads} leads from the CRM export")
                service.log_progress(run_id, client, f"scored {scored} profiles; harvesting posts")
                service.record_error(run_id, client, ERROR)
        else:
            notes = f"Skipped {i % 9} profiles without a public page." if details and i % 11 == 0 else None
            service.complete_client_metrics(run_id, client, metrics, notes=notes)
