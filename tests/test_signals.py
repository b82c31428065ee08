"""The input and output signals (API.md §6)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app

from flask_jobmetrics import RejectedMetric, Status, signals
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.state import get_state

from .support import AppFactory

RUN = "230615-120000"
ONE_LEAD = {"Leads Processed": 1}


def service_of(app: Flask) -> MetricsService:
    return get_state(app).service


@pytest.fixture
def other_app(make_app: AppFactory, tmp_path: Path) -> Flask:
    """A second app with its own JobMetrics state on its own memory store."""
    return make_app(name="jobmetrics_other", instance=tmp_path / "other")


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "flask_jobmetrics" and r.levelno >= logging.ERROR
    ]


def test_client_metrics_updated_drives_only_the_sending_app(app: Flask, other_app: Flask) -> None:
    """client_metrics_updated sent with app A merges into A's service and leaves app B untouched."""
    signals.client_metrics_updated.send(app, run_id=RUN, client_id="acme", metrics={"Leads Processed": 5})
    signals.client_metrics_updated.send(app, run_id=RUN, client_id="acme", metrics={"leads_processed": 2})
    service_of(app).flush()
    service_of(other_app).flush()
    run = service_of(app).get_client_run(RUN, "acme")
    assert run is not None
    assert run.metrics["Leads Processed"] == 7
    assert service_of(other_app).get_client_run(RUN, "acme") is None


def test_client_completed_drives_only_the_sending_app(app: Flask, other_app: Flask) -> None:
    """client_completed sent with app B completes B's client run only."""
    for each in (app, other_app):
        signals.client_metrics_updated.send(each, run_id=RUN, client_id="acme", metrics=ONE_LEAD)
    signals.client_completed.send(
        other_app, run_id=RUN, client_id="acme", metrics={"Posts Processed": 3}, success=True
    )
    completed = service_of(other_app).get_client_run(RUN, "acme")
    running = service_of(app).get_client_run(RUN, "acme")
    assert completed is not None
    assert completed.status is Status.COMPLETED
    assert completed.metrics["Posts Processed"] == 3
    assert running is not None
    assert running.status is Status.RUNNING


def test_client_completed_with_success_false_and_totals(app: Flask) -> None:
    """success=False marks the client Failed; totals=True replaces the accumulated sums."""
    signals.client_metrics_updated.send(app, run_id=RUN, client_id="acme", metrics={"Leads Processed": 5})
    signals.client_completed.send(
        app, run_id=RUN, client_id="acme", metrics={"Leads Processed": 9}, success=False, totals=True
    )
    run = service_of(app).get_client_run(RUN, "acme")
    assert run is not None
    assert run.status is Status.FAILED
    assert run.metrics["Leads Processed"] == 9


def test_job_completed_drives_only_the_sending_app(app: Flask, other_app: Flask) -> None:
    """job_completed sent with app A completes A's job (with its notes) and not B's."""
    for each in (app, other_app):
        service_of(each).start_job(RUN)
    signals.job_completed.send(app, run_id=RUN, success=True, notes="nightly run")
    done, still = service_of(app).get_job_run(RUN), service_of(other_app).get_job_run(RUN)
    assert done is not None
    assert done.status is Status.COMPLETED
    assert "nightly run" in done.notes
    assert still is not None
    assert still.status is Status.RUNNING


def test_the_current_app_proxy_is_accepted_as_sender(app: Flask) -> None:
    """Sending with current_app (a proxy) reaches the app behind it."""
    with app.app_context():
        signals.client_metrics_updated.send(current_app, run_id=RUN, client_id="acme", metrics=ONE_LEAD)
    run = service_of(app).get_client_run(RUN, "acme")
    assert run is not None
    assert run.metrics["Leads Processed"] == 1


def test_an_app_without_init_app_is_ignored(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A signal sent with an app that has no JobMetrics changes nothing and raises nothing."""
    bare = Flask("bare")
    signals.client_metrics_updated.send(bare, run_id=RUN, client_id="acme", metrics={"Leads Processed": 1})
    assert service_of(app).get_client_run(RUN, "acme") is None
    assert errors_of(caplog) == []


def test_a_missing_kwarg_logs_one_error_naming_it(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """client_metrics_updated without metrics logs exactly one error naming 'metrics'; the sender goes on."""
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        signals.client_metrics_updated.send(app, run_id=RUN, client_id="acme")  # must not raise
    errors = errors_of(caplog)
    assert len(errors) == 1
    assert "missing kwarg 'metrics'" in errors[0]
    assert "client-metrics-updated" in errors[0]
    assert service_of(app).get_client_run(RUN, "acme") is None


def test_a_wrongly_typed_or_unexpected_kwarg_logs_one_error(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-bool success and a misspelt kwarg are named in one error; nothing is completed."""
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        signals.client_completed.send(app, run_id=RUN, client_id="acme", success="yes", metrix={})
    errors = errors_of(caplog)
    assert len(errors) == 1
    assert "kwarg 'success' must be True or False" in errors[0]
    assert "unexpected kwarg 'metrix'" in errors[0]
    assert service_of(app).get_client_run(RUN, "acme") is None


def test_a_service_error_is_logged_with_run_and_client_not_raised(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A run ID whose client part disagrees logs InvalidRunIdError with the client; the sender goes on."""
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        signals.client_metrics_updated.send(app, run_id=f"{RUN}-globex", client_id="acme", metrics=ONE_LEAD)
        signals.job_completed.send(app, run_id="230615-999999")
    errors = errors_of(caplog)
    assert len(errors) == 2
    assert "InvalidRunIdError" in errors[0]
    assert "[CLIENT:acme]" in errors[0]
    assert "InvalidRunIdError" in errors[1]


def test_signals_from_a_background_thread_with_an_app_context_land(app: Flask) -> None:
    """Scorer code in a thread that pushed app.app_context() sends signals; the metrics reach the store."""

    def scorer() -> None:
        with app.app_context():
            sender = current_app._get_current_object()  # type: ignore[attr-defined]
            for chunk in (40, 40, 20):
                signals.client_metrics_updated.send(
                    sender, run_id=RUN, client_id="acme", metrics={"Profiles Examined": chunk}
                )

    thread = threading.Thread(target=scorer)
    thread.start()
    thread.join()
    service = service_of(app)
    service.flush()
    run = service.get_client_run(RUN, "acme")
    assert run is not None
    assert run.metrics["Profiles Examined for Scoring"] == 100
    row = service.store.get_client(RUN, "acme")
    assert row is not None
    assert row.fields["Profiles Examined for Scoring"] == 100


def test_signals_from_a_thread_without_an_app_context_land(app: Flask) -> None:
    """A thread with no app context sends with the app itself; the receiver needs nothing more."""
    thread = threading.Thread(
        target=signals.client_completed.send,
        args=(app,),
        kwargs={"run_id": RUN, "client_id": "acme", "metrics": {"Leads Processed": 2}},
    )
    thread.start()
    thread.join()
    run = service_of(app).get_client_run(RUN, "acme")
    assert run is not None
    assert run.status is Status.COMPLETED
    assert run.metrics["Leads Processed"] == 2


def test_metrics_rejected_is_sent_for_an_invalid_value(app: Flask, other_app: Flask) -> None:
    """An invalid value sends metrics_rejected(app, run_id, client_id, rejected); the valid ones merge."""
    received: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append((sender, kwargs))

    with signals.metrics_rejected.connected_to(receiver):
        service_of(app).update_client_metrics(RUN, "acme", {"Leads Processed": -3, "Posts Processed": 2})
        signals.client_metrics_updated.send(
            other_app, run_id=RUN, client_id="acme", metrics={"Total Tokens": float("nan")}
        )
    assert [sender for sender, _ in received] == [app, other_app]
    kwargs = received[0][1]
    assert set(kwargs) == {"run_id", "client_id", "rejected"}
    assert (kwargs["run_id"], kwargs["client_id"]) == (RUN, "acme")
    assert [r.metric for r in kwargs["rejected"]] == ["Leads Processed"]
    assert isinstance(kwargs["rejected"][0], RejectedMetric)
    assert received[1][1]["rejected"][0].metric == "Total Tokens"
    run = service_of(app).get_client_run(RUN, "acme")
    assert run is not None
    assert run.metrics["Posts Processed"] == 2
    assert "Leads Processed" not in run.metrics


def test_a_failing_metrics_rejected_receiver_does_not_lose_the_update(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A metrics_rejected receiver that raises is logged; the valid metrics are still merged."""

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("observer bug")

    metrics = {"Leads Processed": "x", "Posts Processed": 1}
    caplog.set_level(logging.ERROR, logger="flask_jobmetrics")
    with signals.metrics_rejected.connected_to(broken):
        run = service_of(app).update_client_metrics(RUN, "acme", metrics)
    assert run.metrics["Posts Processed"] == 1
    assert any("metrics-rejected receiver failed" in e for e in errors_of(caplog))


def test_signal_names_are_kebab_case() -> None:
    """Every signal has a kebab-case name in the package's private namespace."""
    names = {
        s.name
        for s in (
            signals.client_metrics_updated,
            signals.client_completed,
            signals.job_completed,
            signals.metrics_rejected,
            signals.records_published,
            signals.publish_failed,
        )
    }
    assert names == {
        "client-metrics-updated",
        "client-completed",
        "job-completed",
        "metrics-rejected",
        "records-published",
        "publish-failed",
    }
