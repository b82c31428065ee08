"""Errors recorded where operators read them: Error Details, the client_failed signal,
``@tracked`` views that raise, and the published Client Run Results row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jobmetrics import ClientRun, JobMetrics, Status, current_run
from flask_jobmetrics.decorators import tracked
from flask_jobmetrics.journal import ERROR_DETAILS_CHARS
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.signals import client_completed, client_failed
from flask_jobmetrics.state import get_state
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import BASE_ID

from .support import AppFactory, Clock, Recorder, airtable_config
from .test_journal import lines

RUN = "230615-120000"
HEADERS = {"X-Run-ID": RUN, "X-Client-ID": "initech"}


class ModelTimeout(Exception):
    """What a scorer raises when the model does not answer."""


# -- complete_client_metrics(error=...) -----------------------------------------------------


def test_an_exception_fails_the_run_with_its_type_and_message(store_service: Any, clock: Clock) -> None:
    """error=<exception> gives Error Details "<Type>: <message>", status Failed, and a log line."""
    service = store_service(clock)
    service.update_client_metrics(RUN, "initech", {"Leads Processed": 3})
    run = service.complete_client_metrics(RUN, "initech", error=ModelTimeout("model timed out after 30 s"))
    assert run.status is Status.FAILED
    assert run.error == "ModelTimeout: model timed out after 30 s"
    assert lines(run.progress_log)[-1] == (
        "completed with status Failed (Leads Processed 3); error: ModelTimeout: model timed out after 30 s"
    )
    stored = service.store.get_client(RUN, "initech")
    assert stored is not None and stored.fields["Error Details"] == run.error


def test_an_error_with_success_true_keeps_the_computed_status(store_service: Any, clock: Clock) -> None:
    """success=True given explicitly keeps the usual status; the error is still recorded."""
    service = store_service(clock)
    run = service.complete_client_metrics(
        RUN, "acme", {"Leads Processed": 2}, success=True, error="2 leads skipped: no profile"
    )
    assert run.status is Status.COMPLETED
    assert run.error == "2 leads skipped: no profile"


def test_a_huge_error_is_cut_to_its_bound(store_service: Any, clock: Clock) -> None:
    """An error message beyond Error Details' bound is cut (its end kept), never refused."""
    service = store_service(clock)
    run = service.complete_client_metrics(RUN, "acme", error=ValueError("x" * 200_000 + " the end"))
    assert run.error is not None and len(run.error) <= ERROR_DETAILS_CHARS
    assert run.error.endswith(" the end")
    assert run.status is Status.FAILED


@pytest.mark.parametrize("bad", [42, {"message": "boom"}, ["boom"]])
def test_an_error_of_another_type_is_a_clear_error(store_service: Any, clock: Clock, bad: Any) -> None:
    """An error that is neither an exception nor a string raises TypeError; nothing is merged."""
    service = store_service(clock)
    with pytest.raises(TypeError, match="error must be an exception or a string"):
        service.complete_client_metrics(RUN, "acme", error=bad)
    assert service.get_client_run(RUN, "acme") is None


def test_client_failed_hook_hears_each_failure(clock: Clock) -> None:
    """The events hear a failed completion and a client closed by its job, with the error."""
    from flask_jobmetrics.stores.memory import MemoryStore

    events = Recorder()
    service = MetricsService(MemoryStore(), clock=clock, events=events, flush_interval=3600)
    try:
        service.complete_client_metrics(RUN, "initech", error=ModelTimeout("no answer"))
        service.complete_client_metrics(RUN, "acme", {"Leads Processed": 1})
        service.update_client_metrics(RUN, "globex", {"Leads Processed": 1})
        service.complete_job_metrics(RUN)
    finally:
        service.close()
    heard = events.failed
    assert heard[0] == (RUN, "initech", "ModelTimeout: no answer", False)
    assert heard[1][:2] == (RUN, "globex") and "Still running when job" in str(heard[1][2])
    assert len(heard) == 2
    assert events.closed


# -- in a Flask app -------------------------------------------------------------------------


def test_client_failed_signal_and_client_completed_with_an_error(app: Flask) -> None:
    """client_completed(error=...) fails the run; client_failed is sent with the error."""
    heard: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        heard.append({"sender": sender, **kwargs})

    with client_failed.connected_to(receiver, sender=app):
        client_completed.send(
            app, run_id=RUN, client_id="initech", error=ModelTimeout("no answer"), notes="n"
        )
    run = get_state(app).service.get_client_run(RUN, "initech")
    assert run is not None and run.status is Status.FAILED and run.notes == "n"
    expected = {"sender": app, "run_id": RUN, "client_id": "initech", "error": "ModelTimeout: no answer"}
    assert heard == [expected]


def post_failing(app: Flask, client: FlaskClient) -> ClientRun:
    """POST /score, whose view raises (answered 500), and return initech's client run."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.post("/score", headers=HEADERS).status_code == 500
    run = get_state(app).service.get_client_run(RUN, "initech")
    assert run is not None
    return run


def test_tracked_complete_records_the_exception_of_a_view(app: Flask, client: FlaskClient) -> None:
    """With complete=True a view that raises fails the run with its exception in Error Details."""

    @app.post("/score")
    @tracked(complete=True)
    def score() -> str:
        current_run.add({"Leads Processed": 4})
        current_run.log_progress("scoring 4 leads")
        raise ModelTimeout("model timed out")

    run = post_failing(app, client)
    assert run.status is Status.FAILED
    assert run.error == "ModelTimeout: model timed out"
    assert "scoring 4 leads" in lines(run.progress_log)


def test_tracked_without_complete_records_the_exception_only(app: Flask, client: FlaskClient) -> None:
    """Without complete=True a view that raises records its exception; the run stays Running."""

    @app.post("/score")
    @tracked()
    def score() -> str:
        raise KeyError("profile")

    run = post_failing(app, client)
    assert run.status is Status.RUNNING
    assert run.error == "KeyError: 'profile'"
    assert lines(run.progress_log)[-1] == "error: KeyError: 'profile'"


def test_tracked_complete_names_a_5xx_response(app: Flask, client: FlaskClient) -> None:
    """With complete=True a 5xx response without an exception fails the run as "HTTP 503 response"."""

    @app.post("/score")
    @tracked(complete=True)
    def score() -> tuple[str, int]:
        return "busy", 503

    assert client.post("/score", headers=HEADERS).status_code == 503
    run = get_state(app).service.get_client_run(RUN, "initech")
    assert run is not None and run.status is Status.FAILED and run.error == "HTTP 503 response"


def test_log_progress_on_the_extension_and_current_app(app: Flask) -> None:
    """jobmetrics.log_progress and the module-level log_progress append to the same log."""
    import flask_jobmetrics

    ext = get_state(app).extension
    assert isinstance(ext, JobMetrics)
    ext.log_progress(RUN, "acme", "one")
    with app.app_context():
        flask_jobmetrics.log_progress(RUN, "acme", "two")
    run = get_state(app).service.get_client_run(RUN, "acme")
    assert run is not None and lines(run.progress_log)[-2:] == ["one", "two"]


# -- Airtable -------------------------------------------------------------------------------


@pytest.fixture
def airtable_app(make_app: AppFactory, tmp_path: Path, fake_airtable: FakeAirtable) -> Flask:
    return make_app(
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
        **airtable_config(fake_airtable),
        JOBMETRICS_PROGRESS_INTERVAL=0,
    )


def test_error_notes_and_log_ride_on_the_rows_publish(
    airtable_app: Flask, fake_airtable: FakeAirtable
) -> None:
    """Error Details, System Notes and the Progress Log are published with the row, in the
    same write requests as without them; internal fields are not published."""
    ext = get_state(airtable_app).extension
    assert isinstance(ext, JobMetrics)
    ext.start_job(RUN)
    ext.update_client_metrics(RUN, "initech", {"Leads Processed": 3})
    ext.log_progress(RUN, "initech", "scoring batch 1")
    ext.complete_client_metrics(RUN, "initech", error=ModelTimeout("no answer"), notes="model v2")
    ext.complete_job_metrics(RUN)
    report = ext.flush(timeout=10)
    assert report.done
    records = [r["fields"] for r in fake_airtable.records(BASE_ID, "Client Run Results")]
    assert len(records) == 1
    record = records[0]
    assert record["Error Details"] == "ModelTimeout: no answer"
    assert record["System Notes"] == "model v2"
    assert lines(record["Progress Log"]) == [
        "started (first update)",
        "scoring batch 1",
        "completed with status Failed (Leads Processed 3); error: ModelTimeout: no answer",
    ]
    assert not [name for name in record if name.startswith("_")]
    assert fake_airtable.request_count(kind="write") == 2  # one upsert per table, the log included
