"""The app while its store is unreachable: it starts, buffers, answers 503 where it must, recovers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, jsonify

import flask_jobmetrics as fjm
from flask_jobmetrics import ConfigurationError, JobMetrics, StoreError, StoreUnavailableError
from flask_jobmetrics.airtable.publisher import Publisher
from flask_jobmetrics.alerts import Alerter
from flask_jobmetrics.config import read_settings
from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.events import EventFanOut
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores import load_store
from flask_jobmetrics.stores.base import Store
from flask_jobmetrics.stores.deferred import RETRY_INTERVAL, DeferredStore
from flask_jobmetrics.stores.memory import MemoryStore
from flask_jobmetrics.stores.redis import RedisStore
from flask_jobmetrics.stores.sqlite import SQLiteStore
from flask_jobmetrics.testing import FakeAirtable

from .faults import FaultProxy, RedisServer
from .gunicorn_support import free_port
from .support import Clock, airtable_config

RUN = "230615-120000"
LEADS = "Leads Processed"


def _app(tmp_path: Path, url: str, **config: Any) -> Flask:
    app = Flask("outage", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, JOBMETRICS_STORE_URL=url, **config)
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
    """An app initialised while its Redis (not started yet) is down, trying it on every call."""
    server = RedisServer(tmp_path)
    app = _app(tmp_path, f"redis://127.0.0.1:{server.port}/0", JOBMETRICS_STORE_RETRY_INTERVAL=0)
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
        assert "may not have been recorded" in response.get_json()["message"]
    service = app.extensions["jobmetrics"].service
    assert len(service.buffer) == 0
    server.start()
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


# -- permanent store errors answer 500, passing ones 503 -------------------------------------


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[Flask, RedisServer]]:
    """An app on a Redis of its own that is up."""
    server = RedisServer(tmp_path).start()
    app = _app(tmp_path, f"redis://127.0.0.1:{server.port}/0")
    yield app, server
    app.extensions["jobmetrics"].service.close()
    server.stop()


@pytest.mark.slow
def test_a_store_error_a_retry_cannot_fix_answers_500(up: tuple[Flask, RedisServer]) -> None:
    """When Redis starts asking for a password the app was not given, a view and a completion
    answer 500 store_error JSON without Retry-After (not 503: retrying cannot help)."""
    app, server = up
    client = app.test_client()
    admin = redis.Redis(port=server.port)
    admin.config_set("requirepass", "s3cret")
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal")  # the app's connections log in again
    for path in ("/jobs", f"/runs/{RUN}/clients/acme/done"):
        response = client.post(path)
        assert response.status_code == 500
        assert response.is_json and response.get_json()["error"] == "store_error"
        assert "Retry-After" not in response.headers
        assert "127.0.0.1" not in response.get_data(as_text=True)


@pytest.mark.slow
def test_a_redis_turned_replica_is_unavailable(up: tuple[Flask, RedisServer]) -> None:
    """A Redis that became a replica (a failover) refuses writes with READONLY: the store
    raises StoreUnavailableError and a completion answers 503, to be retried."""
    app, server = up
    admin = redis.Redis(port=server.port)
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        store = app.extensions["jobmetrics"].service.store
        with pytest.raises(StoreUnavailableError, match="read only"):
            store.ensure_job(RUN, {})
        response = app.test_client().post(f"/runs/{RUN}/clients/acme/done")
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")


# -- write-through while the store fails -------------------------------------------------------


@pytest.mark.slow
def test_a_write_through_whose_reply_is_lost_is_stored_once(tmp_path: Path) -> None:
    """With flush_interval=0, an update whose merge ran but whose replies were lost (redis-py's
    retries too) returns, is held, and is stored exactly once when it is re-sent."""
    server = RedisServer(tmp_path).start()
    proxy = FaultProxy(server.port)
    service = MetricsService(
        RedisStore(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.5"), flush_interval=0
    )
    try:
        service.update_client_metrics(RUN, "warmup", {LEADS: 1})  # loads the merge script
        proxy.arm("drop_reply", times=3)
        view = service.update_client_metrics(RUN, "acme", {LEADS: 1})  # accepted, not raised
        assert view.metrics[LEADS] == 1
        assert proxy.broken == 3
        assert service.health().store_available is False and len(service.buffer) == 1
        service.flush()  # what the flusher does: the sealed batch again, with its token
        row = RedisStore(f"redis://127.0.0.1:{server.port}/0").get_client(RUN, "acme")
        assert row is not None and row.fields[LEADS] == 1
        assert service.health().store_available is True and len(service.buffer) == 0
    finally:
        service.close()
        proxy.close()
        server.stop()


@pytest.mark.slow
def test_a_write_through_route_answers_200_while_redis_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With JOBMETRICS_FLUSH_INTERVAL=0 and Redis stopped, a counted request answers 200 (its
    update is held, the outage logged) and is stored once Redis is back."""
    server = RedisServer(tmp_path).start()
    app = _app(tmp_path, f"redis://127.0.0.1:{server.port}/0", JOBMETRICS_FLUSH_INTERVAL=0)
    service = app.extensions["jobmetrics"].service
    try:
        server.stop()
        with caplog.at_level(logging.WARNING):
            assert app.test_client().post(f"/runs/{RUN}/clients/acme/leads").status_code == 200
        assert "Connection refused" in caplog.text  # the outage log's first line
        assert service.health().store_available is False and len(service.buffer) == 1
        server.start()
        service.flush()
        row = service.store.get_client(RUN, "acme")
        assert row is not None and row.fields[LEADS] == 1
    finally:
        service.close()
        server.stop()


# -- the deferred store and the update path while the store is down -----------------------------


def _refused(url: str, attempts: list[int]) -> Store:
    """Open ``url`` (a Redis no one listens to), counting the attempts."""
    attempts.append(1)
    return load_store(url)


def test_the_deferred_store_raises_a_fresh_error_each_time() -> None:
    """While the store stays down, each call raises an error whose traceback does not grow."""
    clock = Clock()
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as first:
        load_store(url)
    store = DeferredStore(
        url, lambda: load_store(url), first.value, durable=True, shared=True, clock=clock.timestamp
    )
    depths = []
    for _ in range(50):
        with pytest.raises(StoreUnavailableError) as raised:
            store.get_client(RUN, "acme")
        depths.append(len(traceback.extract_tb(raised.value.__traceback__)))
        assert raised.value is not store.error
    assert len(set(depths)) == 1
    assert str(raised.value) == str(first.value)


def test_the_deferred_store_reads_clients_in_bulk_from_the_store_it_opened(clock: Clock) -> None:
    """Once open, the deferred store's bulk reads answer what the store it opened holds."""
    opened = MemoryStore()
    opened.merge_clients(
        [ClientDelta(RUN, c, {LEADS: ("sum", n)}) for n, c in enumerate(("acme", "globex"), 1)]
    )
    store = DeferredStore(
        "memory://",
        lambda: opened,
        StoreUnavailableError("down"),
        durable=False,
        shared=False,
        clock=clock.timestamp,
    )
    clock.advance(RETRY_INTERVAL)
    assert store.get_clients_of("globex", [RUN, "230615-130000"]) == opened.get_clients_of("globex", [RUN])
    assert store.get_clients_of("globex", [RUN])[RUN].fields[LEADS] == 2
    assert store.list_clients_of([RUN]) == opened.list_clients_of([RUN])


def test_updates_do_not_read_an_unavailable_store_on_every_call(clock: Clock) -> None:
    """While the store is unavailable, updates of keys never seen try to read it once per
    retry interval, not once per update."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    attempts: list[int] = []
    with pytest.raises(StoreUnavailableError) as first:
        load_store(url)
    store = DeferredStore(
        url, lambda: _refused(url, attempts), first.value, durable=True, shared=True, retry_interval=0
    )
    service = MetricsService(store, buffer_ttl=3600, flush_interval=3600, clock=clock)
    try:
        for i in range(20):
            service.update_client_metrics(RUN, f"c{i}", {LEADS: 1})
        assert len(attempts) == 1
        clock.advance(RETRY_INTERVAL)
        for i in range(20, 40):
            service.update_client_metrics(RUN, f"c{i}", {LEADS: 1})
        assert len(attempts) == 2
        assert len(service.buffer) == 40
    finally:
        service.buffer.stop(drain=False)


# -- close() when the final drain fails ---------------------------------------------------------


class _CountingSQLiteStore(SQLiteStore):
    """The SQLite store, counting its close() calls."""

    closed = 0

    def close(self) -> None:
        self.closed += 1
        super().close()


def test_close_stops_everything_when_the_final_drain_fails(
    tmp_path: Path, fake_airtable: FakeAirtable
) -> None:
    """close() with the store locked for the drain raises the drain's error, yet stops the
    watchdog, the Airtable sender and the alerter and closes the store; the update stays buffered."""
    path = tmp_path / "jobmetrics.sqlite3"
    store = _CountingSQLiteStore(f"sqlite:///{path}", timeout=0.1)
    alerts = Alerter(f"http://127.0.0.1:{free_port()}/hook", timeout=(0.5, 0.5))
    publisher = Publisher(store, read_settings(airtable_config(fake_airtable), str(tmp_path)))
    service = MetricsService(
        store,
        buffer_ttl=3600,
        flush_interval=3600,
        stale_after=3600,
        publisher=publisher,
        events=EventFanOut(alerts),
    )
    before = set(threading.enumerate())
    service.start_watchdog()
    publisher.wake()
    alerts.client_failed(RUN, "acme", "boom")
    names = {"jobmetrics-watchdog", "jobmetrics-airtable", "jobmetrics-alerts"}
    started = [t for t in threading.enumerate() if t not in before and t.name in names]
    assert {t.name for t in started} == names
    service.update_client_metrics(RUN, "acme", {LEADS: 1})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            service.close()
    finally:
        holder.close()
    assert not [t.name for t in started if t.is_alive()]
    assert store.closed == 1
    assert len(service.buffer) == 1
