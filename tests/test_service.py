"""The service operations (API.md §3) on the memory store."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flask_jobmetrics import (
    ClientRun,
    InvalidClientIdError,
    InvalidMetricError,
    InvalidRunIdError,
    Status,
    UnknownRunError,
)
from flask_jobmetrics.models import RejectedMetric
from flask_jobmetrics.service import MetricsService, idempotency_key
from flask_jobmetrics.stores.base import ClientRow
from flask_jobmetrics.stores.memory import MemoryStore
from flask_jobmetrics.stores.sqlite import SQLiteStore

from .support import START, Clock

RUN = "230615-120000"
UTC = timezone.utc


def make_service(clock: Clock, **options: Any) -> MetricsService:
    return MetricsService(MemoryStore(), clock=clock, buffer_ttl=3600, flush_interval=3600, **options)


# -- update_client_metrics -----------------------------------------------------------------


def test_updates_are_increments(service: MetricsService) -> None:
    """Two updates of {"Leads Processed": 5} give 10, before and after the flush."""
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 5})
    returned = service.update_client_metrics(RUN, "acme", {"Leads Processed": 5})
    assert returned.metrics["Leads Processed"] == 10
    assert service.get_client_run(RUN, "acme").metrics["Leads Processed"] == 10  # type: ignore[union-attr]
    service.flush()
    stored = service.store.get_client(RUN, "acme")
    assert stored is not None and stored.fields["Leads Processed"] == 10


def test_counts_from_chunks_accumulate(service: MetricsService) -> None:
    """Three chunks of 40, 40 and 20 leads give 100 (the old system kept only the last chunk)."""
    for chunk in (40, 40, 20):
        service.update_client_metrics(RUN, "acme", {"Profiles Examined": chunk, "profile_tokens": chunk * 10})
    service.flush()
    run = service.get_client_run(RUN, "acme")
    assert run is not None
    assert run.metrics["Profiles Examined for Scoring"] == 100
    assert run.metrics["Profile Scoring Tokens"] == 1000


def test_first_update_creates_a_running_client_and_its_job(service: MetricsService, clock: Clock) -> None:
    """The first update creates the client run Running with Start Time now, and the job run."""
    run = service.update_client_metrics(RUN, "acme", {"Leads Processed": 1})
    assert (run.status, run.start_time, run.completed) == (Status.RUNNING, START, False)
    assert run.client_run_id == f"{RUN}-acme"
    service.flush()
    job = service.get_job_run(RUN)
    assert job is not None and job.status is Status.RUNNING and job.client_ids == ["acme"]
    assert job.start_time == START


def test_given_start_time_wins_over_now(service: MetricsService) -> None:
    """A Start Time given in the first update is the client's start."""
    given = datetime(2023, 6, 15, 11, 0, tzinfo=UTC)
    run = service.update_client_metrics(RUN, "acme", {"Start Time": given.isoformat()})
    assert run.start_time == given


def test_client_form_run_id_is_accepted_for_its_client(service: MetricsService) -> None:
    """`<base>-<client>` names the same client run as the base form."""
    service.update_client_metrics(f"{RUN}-acme", "acme", {"Leads Processed": 2})
    run = service.update_client_metrics(RUN, "acme", {"Leads Processed": 3})
    assert run.run_id == RUN and run.metrics["Leads Processed"] == 5


def test_client_form_run_id_of_another_client_is_refused(service: MetricsService) -> None:
    """The client part of the run ID must equal client_id."""
    with pytest.raises(InvalidRunIdError, match="Guy-Wilson"):
        service.update_client_metrics(f"{RUN}-Guy-Wilson", "Wilson", {"Leads Processed": 1})


@pytest.mark.parametrize(
    ("run_id", "client_id", "error"),
    [
        ("", "acme", InvalidRunIdError),
        (None, "acme", InvalidRunIdError),
        (RUN, "", InvalidClientIdError),
        (RUN, None, InvalidClientIdError),
        (object(), "acme", InvalidRunIdError),
        (RUN, {"clientId": "acme"}, InvalidClientIdError),
    ],
)
def test_run_and_client_ids_are_required(
    service: MetricsService, run_id: Any, client_id: Any, error: type
) -> None:
    """Missing or wrongly typed IDs raise the documented errors."""
    with pytest.raises(error):
        service.update_client_metrics(run_id, client_id, {"Leads Processed": 1})


def test_invalid_values_are_rejected_reported_and_logged(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Invalid values are not merged, listed in `rejected`, logged once with run and client, and reported."""
    reports: list[tuple[str, str, list[RejectedMetric]]] = []
    svc = make_service(clock, on_rejected=lambda r, c, rej: reports.append((r, c, rej)))
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run = svc.update_client_metrics(
            RUN,
            "acme",
            {"Leads Processed": "not-a-number", "Total Tokens": float("nan"), "Posts Processed": 4},
        )
    assert run.metrics == {"Posts Processed": 4}
    assert {r.metric for r in run.rejected} == {"Leads Processed", "Total Tokens"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "[CLIENT:acme]" in warnings[0] and f"[RUN:{RUN}]" in warnings[0] and "not-a-number" in warnings[0]
    assert reports == [(RUN, "acme", run.rejected)]


@pytest.mark.parametrize("value", [True, float("inf"), -1, [1, 2], {"n": 1}, "12abc"])
def test_strict_mode_raises_and_merges_nothing(clock: Clock, value: Any) -> None:
    """In strict mode an invalid value raises InvalidMetricError listing it; nothing of the call is merged."""
    svc = make_service(clock, strict=True)
    with pytest.raises(InvalidMetricError) as info:
        svc.update_client_metrics(RUN, "acme", {"Leads Processed": value, "Posts Processed": 1})
    assert [p.metric for p in info.value.problems] == ["Leads Processed"]
    assert svc.get_client_run(RUN, "acme") is None


def test_metrics_must_be_a_mapping(service: MetricsService) -> None:
    """A list of metrics raises InvalidMetricError naming it."""
    with pytest.raises(InvalidMetricError, match="mapping"):
        service.update_client_metrics(RUN, "acme", [("Leads Processed", 1)])  # type: ignore[arg-type]


def test_unknown_metrics_warn_once_and_are_not_stored(
    service: MetricsService, caplog: pytest.LogCaptureFixture
) -> None:
    """With UNKNOWN_METRICS="warn" an unknown metric is reported, logged once, and not stored."""
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        first = service.update_client_metrics(RUN, "acme", {"Errors": 1, "Leads Processed": 1})
        service.update_client_metrics(RUN, "acme", {"Errors": 2})
    assert [r.metric for r in first.rejected] == ["Errors"]
    assert "Errors" not in first.metrics
    assert sum("unknown metric 'Errors'" in r.getMessage() for r in caplog.records) == 1


def test_a_misspelt_metric_is_rejected_with_did_you_mean(
    service: MetricsService, caplog: pytest.LogCaptureFixture
) -> None:
    """ "Leeds Processed" is rejected with 'did you mean "Leads Processed"', in the rejection and the log."""
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run = service.update_client_metrics(RUN, "acme", {"Leeds Processed": 3})
    (problem,) = run.rejected
    assert (problem.metric, problem.reason) == (
        "Leeds Processed",
        'unknown metric (did you mean "Leads Processed"?)',
    )
    assert any('did you mean "Leads Processed"' in r.getMessage() for r in caplog.records)


def test_unknown_metrics_error_mode_raises(clock: Clock) -> None:
    """With UNKNOWN_METRICS="error" an unknown metric raises and nothing is merged."""
    svc = make_service(clock, unknown_metrics="error")
    with pytest.raises(InvalidMetricError, match="Errors"):
        svc.update_client_metrics(RUN, "acme", {"Errors": 1, "Leads Processed": 1})
    assert svc.get_client_run(RUN, "acme") is None


def test_unknown_metrics_keep_mode_stores_the_last_value(clock: Clock) -> None:
    """With UNKNOWN_METRICS="keep" an unknown metric is stored as `last`; containers are still rejected."""
    svc = make_service(clock, unknown_metrics="keep")
    svc.update_client_metrics(RUN, "acme", {"Apify Run ID": "a1", "Cost": 1.5})
    run = svc.update_client_metrics(RUN, "acme", {"Apify Run ID": "a2", "Bad": [1]})
    assert run.metrics["Apify Run ID"] == "a2" and run.metrics["Cost"] == 1.5
    assert [r.metric for r in run.rejected] == ["Bad"]


def test_idempotency_key_counts_a_redelivery_once(service: MetricsService) -> None:
    """A webhook redelivered with the same key changes nothing the second time."""
    key = idempotency_key("harvest", "evt-1")
    service.update_client_metrics(RUN, "acme", {"Posts Harvested": 7}, idempotency_key=key)
    again = service.update_client_metrics(RUN, "acme", {"Posts Harvested": 7}, idempotency_key=key)
    assert again.metrics["Total Posts Harvested"] == 7
    other = service.update_client_metrics(
        RUN, "acme", {"Posts Harvested": 1}, idempotency_key=idempotency_key("h", 2)
    )
    assert other.metrics["Total Posts Harvested"] == 8


def test_idempotency_key_must_be_text(service: MetricsService) -> None:
    """An empty idempotency key is an error, and idempotency_key() needs parts."""
    with pytest.raises(ValueError, match="idempotency_key"):
        service.update_client_metrics(RUN, "acme", {}, idempotency_key="")
    with pytest.raises(ValueError, match="non-empty"):
        idempotency_key()


# -- complete_client_metrics ---------------------------------------------------------------


def test_completion_sets_end_time_and_completed(service: MetricsService, clock: Clock) -> None:
    """Completion merges the metrics, sets End Time now and Status Completed."""
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 10})
    clock.advance(60)
    run = service.complete_client_metrics(RUN, "acme", {"Profiles Scored": 9})
    assert (run.status, run.completed, run.end_time) == (
        Status.COMPLETED,
        True,
        START + timedelta(seconds=60),
    )
    assert run.metrics["Leads Processed"] == 10 and run.metrics["Profiles Successfully Scored"] == 9


def test_completion_without_work_is_no_leads_to_score(service: MetricsService) -> None:
    """No lead or post examined or processed -> No Leads To Score."""
    assert service.complete_client_metrics(RUN, "acme", {"Total Tokens": 0}).status is Status.NO_LEADS


def test_completion_with_success_false_is_failed(service: MetricsService) -> None:
    """success=False -> Failed, even with work done."""
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 3})
    assert service.complete_client_metrics(RUN, "acme", success=False).status is Status.FAILED


def test_explicit_status_wins(service: MetricsService) -> None:
    """An explicit Status metric (alias included) beats the derivation."""
    assert (
        service.complete_client_metrics(RUN, "acme", {"Status": "skipped"}, success=False).status
        is Status.NO_LEADS
    )


def test_totals_replace_accumulated_values_and_warn(
    service: MetricsService, caplog: pytest.LogCaptureFixture
) -> None:
    """totals=True replaces accumulated sums; a difference is logged naming both numbers."""
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 7, "Total Tokens": 100})
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run = service.complete_client_metrics(
            RUN, "acme", {"Leads Processed": 8, "Total Tokens": 100}, totals=True
        )
    assert run.metrics["Leads Processed"] == 8 and run.metrics["Total Tokens"] == 100
    messages = [r.getMessage() for r in caplog.records if "totals" in r.getMessage()]
    assert len(messages) == 1 and "7" in messages[0] and "8" in messages[0]


def test_late_update_is_merged_and_logged(service: MetricsService, caplog: pytest.LogCaptureFixture) -> None:
    """An update after completion is still merged and logged as late."""
    service.update_client_metrics(RUN, "acme", {"Posts Harvested": 2, "Posts Processed": 2})
    service.complete_client_metrics(RUN, "acme")
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run = service.update_client_metrics(RUN, "acme", {"Posts Harvested": 3})
    assert run.metrics["Total Posts Harvested"] == 5 and run.status is Status.COMPLETED
    assert any("late update" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("kwargs", "name"), [({"success": "yes"}, "success"), ({"totals": 1}, "totals")])
def test_completion_flags_must_be_bools(service: MetricsService, kwargs: dict[str, Any], name: str) -> None:
    """success and totals must be bools (a truthy string is not taken as True)."""
    with pytest.raises(TypeError, match=name):
        service.complete_client_metrics(RUN, "acme", **kwargs)


# -- jobs ------------------------------------------------------------------------------------


def test_job_aggregates_from_client_runs(service: MetricsService) -> None:
    """Sums, earliest start, Clients Processed and Clients With Errors (status Failed) (old test 2)."""
    rows = [
        ("a", 10, 5, "2023-06-15T12:00:00Z", "Completed"),
        ("b", 20, 15, "2023-06-15T12:30:00Z", "Completed"),
        ("c", 5, 0, "2023-06-15T11:45:00Z", "Failed"),
    ]
    for client, leads, posts, start, status in rows:
        service.update_client_metrics(
            RUN,
            client,
            {"Leads Processed": leads, "Posts Processed": posts, "Start Time": start, "Status": status},
        )
    job = service.update_job_aggregate_metrics(RUN)
    assert job.metrics["Leads Processed"] == 35 and job.metrics["Posts Processed"] == 20
    assert job.start_time == datetime(2023, 6, 15, 11, 45, tzinfo=UTC)
    assert job.metrics["Clients Processed"] == 3 and job.metrics["Clients With Errors"] == 1


def test_aggregate_of_an_unknown_run_raises(service: MetricsService) -> None:
    """No dummy job row is created for an unknown run."""
    with pytest.raises(UnknownRunError):
        service.update_job_aggregate_metrics(RUN)
    assert service.get_job_run(RUN) is None


def test_complete_job_saves_notes_and_status(service: MetricsService) -> None:
    """Notes land in System Notes (the old system dropped them); all good -> Completed."""
    service.start_job(RUN)
    service.update_client_metrics(RUN, "a", {"Leads Processed": 1})
    service.complete_client_metrics(RUN, "a")
    job = service.complete_job_metrics(RUN, notes="Job completed successfully")
    assert job.notes == "Job completed successfully" and job.status is Status.COMPLETED


def test_complete_job_closes_running_clients_as_failed(service: MetricsService, clock: Clock) -> None:
    """A client still Running is closed as Failed with a note; the job is Completed with Errors."""
    service.start_job(RUN)
    service.update_client_metrics(RUN, "done", {"Leads Processed": 1})
    service.complete_client_metrics(RUN, "done")
    service.update_client_metrics(RUN, "stuck", {"Leads Processed": 2})
    clock.advance(30)
    job = service.complete_job_metrics(RUN)
    stuck = service.get_client_run(RUN, "stuck")
    assert stuck is not None and stuck.status is Status.FAILED and "still running" in stuck.notes.lower()
    assert stuck.end_time == START + timedelta(seconds=30)
    assert job.status is Status.COMPLETED_WITH_ERRORS
    assert job.metrics["Clients With Errors"] == 1 and job.metrics["Leads Processed"] == 3
    assert job.end_time == START + timedelta(seconds=30)


def test_complete_job_with_success_false_is_failed(service: MetricsService) -> None:
    """success=False -> Failed."""
    service.start_job(RUN)
    assert service.complete_job_metrics(RUN, success=False, notes="boom").status is Status.FAILED


def test_complete_unknown_job_raises(service: MetricsService) -> None:
    """Completing a run nobody started is an error, not a new row."""
    with pytest.raises(UnknownRunError):
        service.complete_job_metrics(RUN)


def test_start_job_mints_unique_run_ids_in_one_second(service: MetricsService) -> None:
    """Two jobs started in the same second get different IDs (the second moves on a second)."""
    first, second = service.start_job(), service.start_job()
    assert first.run_id == "230615-120000" and second.run_id == "230615-120001"
    assert first.status is Status.RUNNING and first.start_time == START


def test_start_job_warns_once_when_run_ids_run_a_minute_ahead_of_the_clock(
    service: MetricsService, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs started faster than one per second: one warning when the IDs are 60 s ahead, not per job."""
    ids = [service.start_job().run_id for _ in range(90)]
    assert len(set(ids)) == 90 and ids[-1] == "230615-120129"
    warnings = [r for r in caplog.records if "ahead of the clock" in r.getMessage()]
    assert len(warnings) == 1 and "60 s ahead" in warnings[0].getMessage()


def test_start_job_for_an_existing_run_returns_it_unchanged(service: MetricsService, clock: Clock) -> None:
    """start_job(existing) changes nothing."""
    service.start_job(RUN, notes="first")
    clock.advance(5)
    again = service.start_job(RUN, notes="second")
    assert again.notes == "first" and again.start_time == START


def test_list_job_runs_newest_first_with_status_filter(service: MetricsService, clock: Clock) -> None:
    """list_job_runs orders by start time, newest first, and filters by status (aliases too)."""
    ids = []
    for _ in range(3):
        ids.append(service.start_job().run_id)
        clock.advance(60)
    service.complete_job_metrics(ids[0])
    assert [j.run_id for j in service.list_job_runs()] == ids[::-1]
    assert [j.run_id for j in service.list_job_runs(status="done")] == [ids[0]]
    assert [j.run_id for j in service.list_job_runs(limit=1)] == [ids[2]]
    with pytest.raises(ValueError, match="limit"):
        service.list_job_runs(limit=0)


def test_running_job_shows_live_aggregates(service: MetricsService) -> None:
    """get_job_run of a running job includes buffered client updates."""
    service.update_client_metrics(RUN, "a", {"Total Tokens": 5})
    service.update_client_metrics(RUN, "b", {"Total Tokens": 7})
    job = service.get_job_run(RUN)
    assert job is not None and job.metrics["Total Tokens"] == 12 and job.client_ids == ["a", "b"]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.complete_job_metrics(RUN, notes=5),
        lambda s: s.start_job(RUN, notes=None),
        lambda s: s.complete_job_metrics(RUN, success=None),
    ],
)
def test_job_arguments_are_type_checked(service: MetricsService, call: Any) -> None:
    """Wrongly typed notes or success raise TypeError naming the argument."""
    service.start_job(RUN)
    with pytest.raises(TypeError, match=r"notes|success"):
        call(service)


def test_returned_client_runs_are_real_frozen_models(service: MetricsService) -> None:
    """The ClientRun returned on the update path equals a validated one, serializes and is immutable."""
    run = service.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    assert run == ClientRun.model_validate(run.model_dump())
    assert run.model_dump(mode="json")["status"] == "Running"
    with pytest.raises(ValidationError):
        run.status = Status.FAILED  # type: ignore[misc]


def test_a_failing_publisher_wake_up_never_counts_twice(clock: Clock) -> None:
    """If waking the publisher fails after a merge, the merge stands and is not retried (no double count)."""

    def broken_wake_up() -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    svc = make_service(clock, on_stored=broken_wake_up)
    svc.update_client_metrics(RUN, "acme", {"Leads Processed": 4})
    svc.flush()
    svc.flush()
    stored = svc.store.get_client(RUN, "acme")
    assert stored is not None and stored.fields["Leads Processed"] == 4
    assert svc.buffer.stats().failed == 0
    svc.close()


def test_the_update_path_reads_a_new_client_row_from_the_store_once(clock: Clock) -> None:
    """Until its first flush, a new client run is looked up in the store once, not on every update."""
    reads: list[tuple[str, str]] = []

    class CountingStore(MemoryStore):
        def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
            reads.append((run_id, client_id))
            return super().get_client(run_id, client_id)

    svc = MetricsService(CountingStore(), clock=clock, buffer_ttl=3600, flush_interval=3600)
    for _ in range(50):
        svc.update_client_metrics(RUN, "acme", {"Leads Processed": 1})
    assert reads == [(RUN, "acme")]
    assert svc.update_client_metrics(RUN, "acme", {}).metrics["Leads Processed"] == 50
    svc.close()


def test_updates_still_buffered_elsewhere_reach_a_completed_jobs_totals(clock: Clock, tmp_path: Path) -> None:
    """Another process's buffered updates that land after the job completed are added to its totals."""
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    worker = MetricsService(SQLiteStore(url), clock=clock, buffer_ttl=3600, flush_interval=3600)
    finisher = MetricsService(SQLiteStore(url), clock=clock, buffer_ttl=3600, flush_interval=3600)
    finisher.start_job(RUN)
    finisher.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    worker.update_client_metrics(RUN, "acme", {"Leads Processed": 5})  # still in the worker's buffer
    assert finisher.complete_job_metrics(RUN).metrics["Leads Processed"] == 2
    worker.flush()
    job = finisher.get_job_run(RUN)
    assert job is not None and job.metrics["Leads Processed"] == 7
    assert job.status is Status.COMPLETED_WITH_ERRORS  # acme was still running at completion
    worker.close()
    finisher.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.update_client_metrics(RUN, "acme", {"Leads Processed": 1}, logger="acme"),
        lambda s: s.get_client_run(20230615, "acme"),
        lambda s: s.get_job_run(["230615-120000"]),
        lambda s: s.list_job_runs(status="Unknown"),
        lambda s: s.list_job_runs(limit="5"),
        lambda s: s.start_job("230631-120000"),
    ],
)
def test_bad_arguments_fail_at_the_boundary_naming_the_value(service: MetricsService, call: Any) -> None:
    """Wrong types and malformed values raise a ValueError/TypeError naming them, nothing deeper."""
    with pytest.raises((ValueError, TypeError)) as info:
        call(service)
    assert str(info.value)


def test_complete_job_completes_clients_that_never_completed(service: MetricsService) -> None:
    """A client given a final Status by an update (never completed) is completed with the job, status kept."""
    service.start_job(RUN)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 3, "Status": "Completed"})
    service.complete_job_metrics(RUN)
    acme = service.get_client_run(RUN, "acme")
    assert acme is not None and acme.completed and acme.status is Status.COMPLETED
    assert "still running" not in acme.notes.lower()


def test_a_late_failure_turns_a_completed_job_into_completed_with_errors(service: MetricsService) -> None:
    """A client failing after its job completed: the job is Completed with Errors (a Failed job stays)."""
    service.start_job(RUN)
    service.complete_client_metrics(RUN, "acme", {"Leads Processed": 1})
    assert service.complete_job_metrics(RUN).status is Status.COMPLETED
    service.complete_client_metrics(RUN, "late", {"Leads Processed": 2}, success=False)
    job = service.get_job_run(RUN)
    assert job is not None and job.status is Status.COMPLETED_WITH_ERRORS
    assert (job.metrics["Clients With Errors"], job.metrics["Leads Processed"]) == (1, 3)
    other = "230615-130000"
    service.start_job(other)
    service.complete_job_metrics(other, success=False)
    service.complete_client_metrics(other, "acme", {"Leads Processed": 1})
    assert service.get_job_run(other).status is Status.FAILED  # type: ignore[union-attr]


# -- the returned view -------------------------------------------------------------------


def test_update_view_shows_the_run_as_of_the_call(service: MetricsService) -> None:
    """A view read after later updates and a flush still shows the totals of its own call."""
    first = service.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 3})
    service.flush()
    second = service.update_client_metrics(RUN, "acme", {"Leads Processed": 4})
    assert first.metrics["Leads Processed"] == 2
    assert second.metrics["Leads Processed"] == 9


def test_update_view_is_a_client_run_to_every_reader(service: MetricsService) -> None:
    """The view compares, prints, serializes, copies and pickles as the equal ClientRun."""
    import copy
    import pickle

    from pydantic import TypeAdapter

    def view() -> ClientRun:
        return service.update_client_metrics(RUN, "acme", {"Leads Processed": 0})

    service.update_client_metrics(RUN, "acme", {"Leads Processed": 5})
    plain = ClientRun.model_validate(view().model_dump())
    assert isinstance(view(), ClientRun) and view().__class__ is ClientRun
    assert view() == plain and plain == view()
    assert repr(view()) == repr(plain)
    assert view().model_dump() == plain.model_dump()
    assert view().model_dump_json() == plain.model_dump_json()
    assert TypeAdapter(list[ClientRun]).dump_python([view()]) == [plain.model_dump()]
    assert copy.copy(view()) == plain and copy.deepcopy(view()) == plain
    assert view().model_copy(update={"notes": "x"}).notes == "x"
    assert pickle.loads(pickle.dumps(view())) == plain
    assert dict(view()) == dict(plain)
    with pytest.raises(ValidationError):
        view().notes = "changed"  # type: ignore[misc]


def test_update_view_with_write_through_includes_the_update(clock: Clock) -> None:
    """With flush_interval=0 the returned view is the merged row, this update included."""
    service = MetricsService(MemoryStore(), clock=clock, flush_interval=0)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    assert service.update_client_metrics(RUN, "acme", {"Leads Processed": 3}).metrics["Leads Processed"] == 5


def test_a_first_error_line_comes_after_the_opening_line_whatever_the_clock(clock: Clock) -> None:
    """record_error on a new row: the log opens, then says the error, though the clock ticks between."""

    def ticking() -> datetime:
        return clock.advance(0.001)  # a millisecond per reading: every line stamp differs

    service = MetricsService(MemoryStore(), clock=ticking, buffer_ttl=3600, flush_interval=3600)
    service.record_error(RUN, "acme", KeyError("profile"))
    service.log_progress(RUN, "other", "fetched 3 pages")
    acme, other = service.get_client_run(RUN, "acme"), service.get_client_run(RUN, "other")
    assert acme is not None and other is not None
    assert [line.split(" ", 2)[2] for line in acme.progress_log.splitlines()] == [
        "started (first update)",
        "error: KeyError: 'profile'",
    ]
    assert other.progress_log.splitlines()[-1].endswith("fetched 3 pages")
