"""The app while its store is unreachable: it starts, buffers, answers 503 where it must, recovers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify

import flask_jobmetrics as fjm
from flask_jobmetrics import ConfigurationError, JobMetrics, StoreError
from flask_jobmetrics.exceptions import StoreUnavailableError
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.deferred import DeferredStore
from flask_jobmetrics.stores.memory import MemoryStore

from .faults import RedisServer
from .gunicorn_support import free_port

RUN = "230615-120000"
LEADS = "Leads Processed"


def _app(tmp_path: Path, url: str) -> Flask:
    app = Flask("outage", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, JOBMETRICS_STORE_URL=url)
    ext = JobMetrics(app)

    @app.post("/runs/<run_id>/clients/<client_id>/leads")
    @ext.tracked()
    @ext.counts(LEADS)
    def leads(run_id: str, client_id: str) -> Any:
        return jsonify(ok=True)

    @app.post("/runs/<run_id>/clients/<client_id>/done")
    @ext.tracked(complete=True)
    @ext.counts(LEADS)
    def done(run_id: str, client_id: str) -> Any:
        return jsonify(ok=True)

    @app.post("/jobs")
    def start() -> Any:
        return jsonify(run_id=ext.start_job().run_id)

    return app


@pytest.fixture
def down(tmp_path: Path) -> Iterator[tuple[Flask, RedisServer]]:
    """An app initialised while its Redis (not started yet) is down."""
    server = RedisServer(tmp_path)
    app = _app(tmp_path, f"redis://127.0.0.1:{server.port}/0")
    yield app, server
    app.extensions["jobmetrics"].service.close()
    server.stop()


@pytest.mark.slow
def test_init_app_with_redis_down_starts_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """init_app with Redis down does not raise; one error names the server and what to do."""
    port = free_port()
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        app = _app(tmp_path, f"redis://127.0.0.1:{port}/0")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"127.0.0.1:{port}" in errors[0] and "tried again" in errors[0]
    with app.app_context():
        health = fjm.health()
    assert health.store_available is False and f"127.0.0.1:{port}" in (health.store_error or "")
    app.extensions["jobmetrics"].service.close()


@pytest.mark.slow
def test_updates_are_buffered_and_stored_once_the_store_is_back(down: tuple[Flask, RedisServer]) -> None:
    """While the store is down a counted request answers 200 and is buffered; once Redis is up,
    it is stored and health says so."""
    app, server = down
    client = app.test_client()
    for _ in range(3):
        assert client.post(f"/runs/{RUN}/clients/acme/leads").status_code == 200
    service = app.extensions["jobmetrics"].service
    assert len(service.buffer) == 1
    server.start()
    assert isinstance(service.store, DeferredStore)
    service.store.retry_interval = 0  # instead of waiting 5 s for the next attempt
    service.flush()
    row = service.store.get_client(RUN, "acme")
    assert row is not None and row.fields[LEADS] == 3
    assert service.health().store_available is True


@pytest.mark.slow
def test_routes_that_need_the_store_answer_503_json(down: tuple[Flask, RedisServer]) -> None:
    """A completion and a view calling the store answer 503 store_unavailable JSON with
    Retry-After, and record nothing; the same requests work once the store is back."""
    app, server = down
    client = app.test_client()
    for path in (f"/runs/{RUN}/clients/acme/done", "/jobs"):
        response = client.post(path)
        assert response.status_code == 503
        assert response.is_json and response.get_json()["error"] == "store_unavailable"
        assert response.headers["Retry-After"] == "5"
        assert "127.0.0.1" not in response.get_data(as_text=True)  # no store details for senders
    service = app.extensions["jobmetrics"].service
    assert len(service.buffer) == 0
    server.start()
    service.store.retry_interval = 0
    assert client.post(f"/runs/{RUN}/clients/acme/done").status_code == 200
    row = service.store.get_client(RUN, "acme")
    assert row is not None and row.completed and row.fields[LEADS] == 1


def test_a_burst_of_503s_is_logged_once(
    down: tuple[Flask, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty requests refused with 503 within the outage log's interval give one warning line."""
    app, _ = down
    app.extensions["jobmetrics"].service.outage.interval = 3600.0  # however slow the machine
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        statuses = {client.post(f"/runs/{RUN}/clients/c{i}/done").status_code for i in range(20)}
    assert statuses == {503}
    lines = [r.getMessage() for r in caplog.records if "503" in r.getMessage()]
    assert len(lines) == 1 and "answered 503 to POST /runs/" in lines[0], lines


def test_example_app_answers_503_while_the_store_is_down(tmp_path: Path) -> None:
    """The example app's routes answer 503 JSON, not an HTML 500, while Redis is down."""
    from example_app import create_app

    app = create_app({"TESTING": True, "JOBMETRICS_STORE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        response = app.test_client().post("/run-batch-score")
        assert response.status_code == 503
        assert response.get_json()["error"] == "store_unavailable"
        assert response.headers["Retry-After"] == "5"
    finally:
        app.extensions["jobmetrics"].service.close()


@pytest.mark.parametrize(
    "url", ["redis-ish://x", "sqlite:///", "postgres://db/x", "redis://h:1/0?retention=-1"]
)
def test_configuration_errors_still_fail_at_init_app(tmp_path: Path, url: str) -> None:
    """A bad store URL (scheme, path, value) raises StoreError at init_app."""
    with pytest.raises((StoreError, ConfigurationError)):
        _app(tmp_path, url)


@pytest.mark.slow
def test_init_app_on_a_read_only_directory_starts(tmp_path: Path) -> None:
    """With the SQLite file's directory read-only (an unprivileged process), init_app starts the
    app, health says the store is unavailable, and updates are buffered."""
    shared = Path(tempfile.mkdtemp(prefix="jm-ro-"))
    try:
        shared.chmod(0o555)
        report = _in_unprivileged_child(shared / "jobmetrics.sqlite3", tmp_path)
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)
    assert report["available"] is False and "read-only" in report["error"]
    assert report["buffered"] == 1


def _in_unprivileged_child(path: Path, tmp_path: Path) -> dict[str, Any]:
    """init_app on ``path`` in a forked child that runs as nobody (root ignores file modes)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        report: dict[str, Any] = {"crashed": True}
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            app = Flask("ro", instance_path=str(tmp_path))
            app.config.update(JOBMETRICS_STORE_URL=f"sqlite:///{path}")
            JobMetrics(app)
            with app.app_context():
                fjm.update_client_metrics(RUN, "acme", {LEADS: 1})
                health = fjm.health()
            report = {
                "available": health.store_available,
                "error": health.store_error,
                "buffered": health.buffered,
            }
        except BaseException as exc:
            report = {"crashed": repr(exc)}
        finally:
            os.write(write_fd, json.dumps(report).encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    return result


def test_health_follows_the_last_store_call(tmp_path: Path) -> None:
    """health() says unavailable after a delivery failed (database locked), available again
    once a merge went through; it counts what is buffered."""
    import sqlite3

    from flask_jobmetrics.service import MetricsService
    from flask_jobmetrics.stores.sqlite import SQLiteStore

    path = tmp_path / "jobmetrics.sqlite3"
    service = MetricsService(
        SQLiteStore(f"sqlite:///{path}", timeout=0.1), buffer_ttl=3600, flush_interval=3600
    )
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        service.update_client_metrics(RUN, "acme", {LEADS: 1})
        assert service.health().store_available is True
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError):
            service.flush()
        health = service.health()
        assert (health.store_available, health.buffered) == (False, 1) and "locked" in (
            health.store_error or ""
        )
        holder.execute("ROLLBACK")
        service.flush()
        assert service.health() == fjm.Health(store_available=True, store_error=None, buffered=0)
    finally:
        holder.close()
        service.close()


@pytest.mark.slow
def test_the_dashboard_says_the_store_is_unavailable(tmp_path: Path) -> None:
    """With Redis down since start-up, the dashboard's API answers 503 store_unavailable."""
    app = Flask("outage_dashboard", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        JOBMETRICS_STORE_URL=f"redis://127.0.0.1:{free_port()}/0",
        JOBMETRICS_DASHBOARD=True,
        JOBMETRICS_DASHBOARD_TOKEN="t0ken",
    )
    ext = JobMetrics(app)
    try:
        response = app.test_client().get("/jobmetrics/api/runs", headers={"Authorization": "Bearer t0ken"})
        assert response.status_code == 503
        assert response.get_json()["error"] == "store_unavailable"
    finally:
        ext.state(app).service.close()


def test_an_outage_is_logged_in_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    """While the store is down, the first failure is logged, then one line a minute with how
    many calls failed and what is kept, and one line when the store is back (injected clock)."""
    now = [datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)]
    up = [False]

    def opener() -> MemoryStore:
        if not up[0]:
            raise StoreUnavailableError("Redis at 127.0.0.1:1: connection refused")
        return MemoryStore()

    store = DeferredStore(
        "memory://", opener, StoreUnavailableError("down"), durable=False, shared=False, retry_interval=0.0
    )
    service = MetricsService(store, clock=lambda: now[0], buffer_ttl=3600, flush_interval=3600)
    service.buffer.stop(drain=False)  # the test sweeps, not the flusher thread
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        service.update_client_metrics(RUN, "acme", {LEADS: 1})  # reading the row fails: the first line
        with pytest.raises(StoreError):
            service.flush()  # raised to the caller, not logged
        for _ in range(120):  # a sweep every 0.5 s for a minute
            now[0] += timedelta(seconds=0.5)
            service.buffer.sweep()
        now[0] += timedelta(seconds=1)
        up[0] = True
        service.buffer.sweep()
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_jobmetrics"]
    assert len(lines) == 3, lines
    assert "update buffered without reading the row" in lines[0] and "connection refused" in lines[0]
    assert "still unavailable after 60 s: 120 more calls failed" in lines[1]
    assert "1 buffered entries kept" in lines[1] and "connection refused" in lines[1]
    assert "available again after 61 s (121 calls failed)" in lines[2]
    assert service.store.get_client(RUN, "acme").fields[LEADS] == 1  # type: ignore[union-attr]
    service.close()
