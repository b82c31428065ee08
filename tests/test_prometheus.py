"""The Prometheus exposition: series and values, retention of finished runs, and the route."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from flask_jobmetrics import JobMetrics, StoreError
from flask_jobmetrics.prometheus import DEFAULT_RETENTION, JobMetricsCollector, exposition
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.state import get_state

from .support import START, Clock

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(service: MetricsService, **options: object) -> Series:
    """Every sample of one scrape, keyed by (name, labels)."""
    body, content_type = exposition(service, **options)  # type: ignore[arg-type]
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def runs_of(series: Series) -> set[str]:
    return {dict(labels)["run_id"] for name, labels in series if name == "jobmetrics_job_status"}


def _running_job(service: MetricsService, clock: Clock, run_id: str = "230615-120000") -> str:
    job = service.start_job(run_id)
    service.update_client_metrics(
        job.run_id, "acme", {"Leads Processed": 40, "Profiles Scored": 36, "Total Tokens": 9000}
    )
    service.update_client_metrics(job.run_id, "globex", {"Leads Processed": 3})
    clock.advance(90)
    service.complete_client_metrics(job.run_id, "acme")
    return job.run_id


def test_a_running_job_is_exported_with_its_client_totals(service: MetricsService, clock: Clock) -> None:
    """A Running job exports per-client metrics and status, client counts, aggregates and durations."""
    run = _running_job(service, clock)
    clock.advance(30)
    series = scrape(service)
    assert value(series, "jobmetrics_store_up") == 1
    assert value(series, "jobmetrics_exported_runs") == 1
    assert (
        value(series, "jobmetrics_client_metric", run_id=run, client_id="acme", metric="total_tokens") == 9000
    )
    assert (
        value(series, "jobmetrics_client_metric", run_id=run, client_id="acme", metric="leads_processed")
        == 40
    )
    assert (
        value(
            series,
            "jobmetrics_client_metric",
            run_id=run,
            client_id="acme",
            metric="profiles_successfully_scored",
        )
        == 36
    )
    assert (
        value(series, "jobmetrics_client_metric", run_id=run, client_id="globex", metric="leads_processed")
        == 3
    )
    assert value(series, "jobmetrics_client_status", run_id=run, client_id="acme", status="Completed") == 1
    assert value(series, "jobmetrics_client_status", run_id=run, client_id="acme", status="Running") == 0
    assert value(series, "jobmetrics_client_status", run_id=run, client_id="globex", status="Running") == 1
    assert value(series, "jobmetrics_job_status", run_id=run, status="Running") == 1
    assert value(series, "jobmetrics_job_status", run_id=run, status="Completed") == 0
    assert value(series, "jobmetrics_job_clients", run_id=run, state="total") == 2
    assert value(series, "jobmetrics_job_clients", run_id=run, state="done") == 1
    assert value(series, "jobmetrics_job_clients", run_id=run, state="running") == 1
    assert value(series, "jobmetrics_job_clients", run_id=run, state="failed") == 0
    assert value(series, "jobmetrics_job_metric", run_id=run, metric="total_tokens") == 9000
    assert value(series, "jobmetrics_job_metric", run_id=run, metric="leads_processed") == 43
    assert value(series, "jobmetrics_job_start_time_seconds", run_id=run) == START.timestamp()
    assert value(series, "jobmetrics_job_end_time_seconds", run_id=run) is None
    assert value(series, "jobmetrics_job_duration_seconds", run_id=run) == 120
    assert value(series, "jobmetrics_client_duration_seconds", run_id=run, client_id="acme") == 90
    assert value(series, "jobmetrics_client_duration_seconds", run_id=run, client_id="globex") == 120


def test_a_finished_job_is_exported_until_the_retention_has_passed(
    service: MetricsService, clock: Clock
) -> None:
    """A finished run is exported for DEFAULT_RETENTION after its end, then not; Running ones stay."""
    assert timedelta(hours=1) == DEFAULT_RETENTION
    finished = _running_job(service, clock, "230615-120000")
    service.complete_job_metrics(finished)
    ended = clock.now
    running = _running_job(service, clock, "230615-120100")

    clock.now = ended + DEFAULT_RETENTION
    series = scrape(service)
    assert runs_of(series) == {finished, running}
    assert value(series, "jobmetrics_job_status", run_id=finished, status="Completed with Errors") == 1
    assert value(series, "jobmetrics_job_end_time_seconds", run_id=finished) == ended.timestamp()
    assert value(series, "jobmetrics_job_clients", run_id=finished, state="failed") == 1

    clock.now = ended + DEFAULT_RETENTION + timedelta(seconds=1)
    series = scrape(service)
    assert runs_of(series) == {running}
    assert not any(dict(labels).get("run_id") == finished for _, labels in series)
    assert value(series, "jobmetrics_exported_runs") == 1


def test_retention_and_clock_can_be_given_to_the_collector(service: MetricsService, clock: Clock) -> None:
    """``retention=`` and ``clock=`` replace the default retention and the service's clock."""
    run = _running_job(service, clock)
    service.complete_job_metrics(run)
    ended = clock.now
    assert run in runs_of(
        scrape(service, retention=timedelta(minutes=5), clock=lambda: ended + timedelta(minutes=4))
    )
    assert (
        runs_of(scrape(service, retention=timedelta(minutes=5), clock=lambda: ended + timedelta(minutes=6)))
        == set()
    )


def test_a_store_failure_is_reported_as_store_down(
    service: MetricsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store fails during a scrape only ``jobmetrics_store_up 0`` is exported."""

    def broken(**_: object) -> list[object]:
        raise StoreError("redis is gone")

    monkeypatch.setattr(service, "list_job_runs", broken)
    assert scrape(service) == {("jobmetrics_store_up", frozenset()): 0}


def test_the_collector_registers_on_an_auto_describing_registry(
    service: MetricsService, clock: Clock
) -> None:
    """``describe()`` names the families without reading the store: a normal registry accepts it."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobMetricsCollector(service))
    _running_job(service, clock)
    assert registry.get_sample_value("jobmetrics_exported_runs") == 1


@pytest.fixture
def dashboard_app(tmp_path: Path) -> Iterator[Flask]:
    flask_app = Flask("prometheus_test", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(
        TESTING=True,
        JOBMETRICS_STORE_URL="memory://",
        JOBMETRICS_DASHBOARD=True,
        JOBMETRICS_DASHBOARD_TOKEN="tok",
    )
    JobMetrics(flask_app)
    yield flask_app
    get_state(flask_app).service.close()


def test_the_metrics_route_serves_the_exposition_behind_the_dashboard_auth(dashboard_app: Flask) -> None:
    """``/jobmetrics/metrics`` needs the dashboard token and answers the text exposition."""
    get_state(dashboard_app).service.start_job("230615-120000")
    client = dashboard_app.test_client()
    assert client.get("/jobmetrics/metrics").status_code == 401
    response = client.get("/jobmetrics/metrics", headers={"Authorization": "Bearer tok"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert 'jobmetrics_job_status{run_id="230615-120000",status="Running"} 1.0' in response.get_data(
        as_text=True
    )


def test_the_metrics_route_answers_501_without_prometheus_client(
    dashboard_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without prometheus_client installed the route answers 501 naming the ``prometheus`` extra."""
    for name in [m for m in sys.modules if m.partition(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes its import fail
    monkeypatch.delitem(sys.modules, "flask_jobmetrics.prometheus")
    response = dashboard_app.test_client().get("/jobmetrics/metrics", headers={"Authorization": "Bearer tok"})
    assert response.status_code == 501
    assert "flask-jobmetrics[prometheus]" in response.get_data(as_text=True)
