"""Publishing to Airtable, against FakeAirtable through the real pyairtable client."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import JobMetrics
from flask_jobmetrics.cli import jobmetrics_cli
from flask_jobmetrics.config import Settings
from flask_jobmetrics.signals import publish_failed, records_published
from flask_jobmetrics.state import get_state
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, retire_emulator

from .support import AppFactory, airtable_config, client_rows

RUN = "230615-120000"
CLIENTS = "Client Run Results"
JOBS = "Job Tracking"


@pytest.fixture
def make_app(make_app: AppFactory, tmp_path: Path, fake_airtable: FakeAirtable) -> AppFactory:
    """Apps on an SQLite file in tmp_path, publishing to ``fake_airtable``."""
    return functools.partial(
        make_app,
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
        **airtable_config(fake_airtable),
        JOBMETRICS_PROGRESS_INTERVAL=0,
        JOBMETRICS_AIRTABLE_RATE_LIMIT_PAUSE=0.3,
        JOBMETRICS_AIRTABLE_TIMEOUT=(2, 0.5),
    )


def run_job(app: Flask, clients: int, *, leads: Callable[[int], int] = lambda i: i + 1) -> str:
    ext = get_state(app).extension
    with app.app_context():
        ext.start_job(RUN)
        for i in range(clients):
            ext.update_client_metrics(
                RUN, f"client-{i:02d}", {"Leads Processed": leads(i), "Total Tokens": 100 * i}
            )
        for i in range(clients):
            ext.complete_client_metrics(RUN, f"client-{i:02d}")
        ext.complete_job_metrics(RUN, notes="batch done")
    return RUN


def test_thirty_clients_take_three_plus_one_write_requests(
    make_app: AppFactory, fake_airtable: FakeAirtable
) -> None:
    """30 clients -> exactly 3 + 1 write requests after completion and flush; one exact row per client."""
    app = make_app()
    run_job(app, 30)
    report = get_state(app).extension.flush(timeout=30)
    assert (report.pending, report.dead) == (0, 0)
    assert fake_airtable.request_count(kind="write") == 4
    assert fake_airtable.request_count(kind="read") == 0
    rows = client_rows(fake_airtable)
    assert len(rows) == 30
    for i in range(30):
        row = rows[f"client-{i:02d}"]
        assert row["Run ID"] == f"{RUN}-client-{i:02d}"
        assert (row["Leads Processed"], row["Status"]) == (i + 1, "Completed")
        assert row.get("Total Tokens", 0) == 100 * i
        assert row["End Time"].endswith("Z")
    (job,) = [r["fields"] for r in fake_airtable.records(BASE_ID, JOBS)]
    assert (job["Run ID"], job["Status"], job["System Notes"]) == (RUN, "Completed", "batch done")
    assert job["Leads Processed"] == sum(range(1, 31)) and job["Clients Processed"] == 30


def test_updates_never_read_and_return_before_airtable_sees_them(
    make_app: AppFactory, fake_airtable: FakeAirtable
) -> None:
    """update_client_metrics makes no Airtable request; the row reaches Airtable on flush, never read."""
    app = make_app(JOBMETRICS_PROGRESS_INTERVAL=60)
    ext = get_state(app).extension
    for n in range(5):
        ext.update_client_metrics(RUN, "acme", {"Leads Processed": 1})
        assert fake_airtable.request_count(kind="write") == 0, f"update {n} wrote to Airtable"
    ext.flush(timeout=30)
    assert fake_airtable.request_count(kind="read") == 0
    assert client_rows(fake_airtable)["acme"]["Leads Processed"] == 5


def test_transient_failures_land_every_row_exactly_once(
    make_app: AppFactory, fake_airtable: FakeAirtable
) -> None:
    """503s, a 429, a dropped connection and a read timeout: every row lands once with exact values."""
    app = make_app()
    fake_airtable.fail_next(2, status=503)
    fake_airtable.fail_next(1, status=429)
    fake_airtable.drop_next(1)
    fake_airtable.delay_next(1, 1.0, apply=True)
    run_job(app, 25, leads=lambda i: 3 * i + 1)
    report = get_state(app).extension.flush(timeout=60)
    assert (report.pending, report.dead) == (0, 0)
    rows = client_rows(fake_airtable)
    assert {k: v["Leads Processed"] for k, v in rows.items()} == {
        f"client-{i:02d}": 3 * i + 1 for i in range(25)
    }
    assert len(fake_airtable.records(BASE_ID, JOBS)) == 1
    assert fake_airtable.max_requests_in_any_second() <= 5


def test_a_refused_row_is_dead_lettered_alone_and_retried_after_a_fix(
    make_app: AppFactory, fake_airtable: FakeAirtable
) -> None:
    """A 422 for one row dead-letters only it; the rest land; `outbox --retry-dead` sends it after the fix."""
    app = make_app()
    failures: list[dict[str, Any]] = []
    published: list[str] = []

    def on_failed(sender: Flask, **kw: Any) -> None:
        failures.append(kw)

    def on_published(sender: Flask, **kw: Any) -> None:
        published.extend(r["Run ID"] for r in kw["records"])

    fake_airtable.fail_records(lambda fields: fields.get("Client ID") == "client-07", message="bad value")
    with publish_failed.connected_to(on_failed, app), records_published.connected_to(on_published, app):
        run_job(app, 10)
        report = get_state(app).extension.flush(timeout=30)
    assert (report.pending, report.dead) == (0, 1)
    assert sorted(client_rows(fake_airtable)) == [f"client-{i:02d}" for i in range(10) if i != 7]
    assert [f["records"][0]["Client ID"] for f in failures if f["table"] == CLIENTS][-1] == "client-07"
    assert "INVALID_VALUE_FOR_COLUMN" in failures[-1]["error"]
    assert f"{RUN}-client-00" in published

    fake_airtable.clear_faults()
    runner = app.test_cli_runner()
    shown = runner.invoke(jobmetrics_cli, ["outbox"])
    assert "client-07" in shown.output and "INVALID_VALUE_FOR_COLUMN" in shown.output
    revived = runner.invoke(jobmetrics_cli, ["outbox", "--retry-dead"])
    assert revived.exit_code == 0, revived.output
    assert get_state(app).extension.flush(timeout=30).dead == 0
    assert "client-07" in client_rows(fake_airtable)


def test_a_missing_field_is_left_out_with_one_warning(
    make_app: AppFactory, fake_airtable: FakeAirtable, caplog: pytest.LogCaptureFixture
) -> None:
    """A field the table lacks is left out of writes: the rest lands, one warning, no 422 at all."""
    fake_airtable.remove_field(BASE_ID, CLIENTS, "Total Tokens")
    app = make_app()
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run_job(app, 12)
        get_state(app).extension.flush(timeout=30)
    rows = client_rows(fake_airtable)
    assert len(rows) == 12 and all("Total Tokens" not in r for r in rows.values())
    assert all(entry.status != 422 for entry in fake_airtable.requests)
    warnings = [r.getMessage() for r in caplog.records if "'Total Tokens'" in r.getMessage()]
    assert len(warnings) == 1


def test_a_field_removed_later_costs_one_422(make_app: AppFactory, fake_airtable: FakeAirtable) -> None:
    """A field removed after start-up: one 422 UNKNOWN_FIELD_NAME, then it is left out of every write."""
    app = make_app()
    ext = get_state(app).extension
    ext.complete_client_metrics(RUN, "first", {"Leads Processed": 1, "Total Tokens": 5})
    ext.flush(timeout=30)
    fake_airtable.remove_field(BASE_ID, CLIENTS, "Total Tokens")
    for name in ("second", "third"):
        ext.complete_client_metrics(RUN, name, {"Leads Processed": 2, "Total Tokens": 5})
        ext.flush(timeout=30)
    assert sum(entry.status == 422 for entry in fake_airtable.requests) == 1
    assert set(client_rows(fake_airtable)) == {"first", "second", "third"}


def test_progress_interval_publishes_running_rows(make_app: AppFactory, fake_airtable: FakeAirtable) -> None:
    """With progress on, a running row is published (Running) and later republished with its final status."""
    app = make_app(JOBMETRICS_PROGRESS_INTERVAL=0.01)
    ext = get_state(app).extension
    ext.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    ext.flush(timeout=30)
    assert client_rows(fake_airtable)["acme"]["Status"] == "Running"
    ext.complete_client_metrics(RUN, "acme", {"Leads Processed": 1})
    ext.flush(timeout=30)
    row = client_rows(fake_airtable)["acme"]
    assert (row["Status"], row["Leads Processed"]) == ("Completed", 3)


@pytest.mark.slow
def test_two_processes_share_the_rate_limit(tmp_path: Path, fake_airtable: FakeAirtable) -> None:
    """Two processes publishing through one SQLite store never send Airtable more than 5 requests a second."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    store = f"sqlite:///{tmp_path}/shared.sqlite3"
    runs = ["230615-120000", "230615-130000"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.publish_worker", store, fake_airtable.url, run, "40"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
            env=env,
        )
        for run in runs
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("pending=0 dead=0" in out for out in outputs), outputs
    assert fake_airtable.max_requests_in_any_second(BASE_ID) <= 5
    assert all(entry.status != 429 for entry in fake_airtable.requests)
    rows = [r["fields"]["Run ID"] for r in fake_airtable.records(BASE_ID, CLIENTS)]
    assert sorted(rows) == sorted(f"{run}-c{i:03d}" for run in runs for i in range(40))
    assert sorted(r["fields"]["Run ID"] for r in fake_airtable.records(BASE_ID, JOBS)) == runs


def test_memory_store_after_a_restart_adds_to_what_airtable_shows(
    tmp_path: Path, fake_airtable_factory: Callable[..., FakeAirtable]
) -> None:
    """memory:// reads each row once before its first publish: a restart never shrinks the counts."""
    fake = fake_airtable_factory(rate_limit=None)
    config = {
        "TESTING": True,
        "JOBMETRICS_STORE_URL": "memory://",
        **airtable_config(fake),
        "JOBMETRICS_PROGRESS_INTERVAL": 0,
    }
    for life, leads in enumerate((7, 3)):  # two lives of the process, each with an empty memory store
        app = Flask(f"life{life}", instance_path=str(tmp_path))
        app.config.update(config)
        ext = JobMetrics(app)
        ext.update_client_metrics(
            RUN, "acme", {"Leads Processed": leads, "Start Time": f"2023-06-15T12:0{life}:00Z"}
        )
        ext.complete_client_metrics(RUN, "acme")
        ext.flush(timeout=30)
        ext.state().service.close()
    (row,) = [r["fields"] for r in fake.records(BASE_ID, CLIENTS)]
    assert row["Leads Processed"] == 10
    assert row["Start Time"] == "2023-06-15T12:00:00.000Z"
    assert fake.request_count(kind="read") == 4  # one read per row (client and job) and life


def test_run_formula_matches_the_runs_rows_whatever_the_quotes(
    fake_airtable_factory: Callable[..., FakeAirtable],
) -> None:
    """Client IDs with quotes and backslashes: the read-back formula matches the run's rows, no others."""
    from pyairtable import Api

    from flask_jobmetrics.airtable.seed import run_formula
    from flask_jobmetrics.airtable.targets import Target

    fake = fake_airtable_factory(rate_limit=None)
    table = Api(API_KEY, endpoint_url=fake.url, retry_strategy=None).table(BASE_ID, CLIENTS)
    hostile = ["x' OR 1=1 OR '", 'a\\", "b', "c\\", "d'", "e\\'f", "plain"]
    other = "230615-120001"
    table.batch_create([{"Run ID": f"{run}-{c}", "Client ID": c} for run in (RUN, other) for c in hostile])
    found = table.all(formula=run_formula(Target("client", CLIENTS, table), RUN))
    assert sorted(r["fields"]["Client ID"] for r in found) == sorted(hostile)
    assert {r["fields"]["Run ID"] for r in found} == {f"{RUN}-{c}" for c in hostile}


def _publishing_to(fake: FakeAirtable, tmp_path: Path) -> Settings:
    """Settings that publish to ``fake``."""
    from flask_jobmetrics.config import read_settings

    return read_settings(airtable_config(fake), str(tmp_path))


def test_a_row_changed_while_being_sent_is_sent_once_more_only_if_it_changed_again(
    tmp_path: Path, fake_airtable_factory: Callable[..., FakeAirtable]
) -> None:
    """A write landing between reading the outbox and reading the row: its content is sent once, not twice."""
    from flask_jobmetrics.airtable.publisher import Publisher
    from flask_jobmetrics.deltas import ClientDelta
    from flask_jobmetrics.stores.base import ClientRow
    from flask_jobmetrics.stores.sqlite import SQLiteStore

    class ConcurrentWriter(SQLiteStore):
        """A store where another writer completes the row just as the publisher reads it."""

        raced = False

        def get_client(self, run_id: str, client_id: str) -> ClientRow | None:
            if not self.raced:
                self.raced = True
                self.merge_client(
                    ClientDelta(run_id, client_id, {"Leads Processed": ("sum", 1)}, complete=True)
                )
            return super().get_client(run_id, client_id)

    fake = fake_airtable_factory(rate_limit=None)
    settings = _publishing_to(fake, tmp_path)
    store = ConcurrentWriter(f"sqlite:///{tmp_path}/race.sqlite3")
    store.merge_client(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 4)}))
    publisher = Publisher(store, settings)
    assert publisher.flush(timeout=10).pending == 0
    assert client_rows(fake)["acme"]["Leads Processed"] == 5
    assert fake.request_count(kind="write") == 2  # the client row once, the job row once
    store.close()


def test_a_stopped_publisher_hands_its_lease_on(make_app: AppFactory) -> None:
    """When one app's publisher stops, another process's sender can take over at once."""
    app = make_app()
    service = get_state(app).service
    publisher = service.publisher
    assert publisher is not None
    service.complete_client_metrics(RUN, "acme", {"Leads Processed": 1})
    service.flush(timeout=10)
    now = publisher.clock()
    assert not service.store.acquire_lease(publisher.lease.name, "someone-else", 30.0, now)
    publisher.stop()
    assert service.store.acquire_lease(publisher.lease.name, "someone-else", 30.0, publisher.clock())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_sends_under_its_own_name(make_app: AppFactory) -> None:
    """A worker forked from a process whose sender holds the lease (gunicorn ``--preload``)
    asks for the sender and flush leases as another process, not as its parent."""
    from .test_forksafe import in_child

    publisher = get_state(make_app()).service.publisher
    assert publisher is not None
    publisher.run_once()
    parents = (publisher.lease.owner, publisher.flush_lease.owner)
    answer = in_child(lambda: str(not set(parents) & set(_owners(publisher))))
    assert answer == "True"
    assert _owners(publisher) == parents


def _owners(publisher: Any) -> tuple[str, str]:
    return (publisher.lease.owner, publisher.flush_lease.owner)


def test_an_app_left_running_is_quiet_once_its_emulator_is_retired(
    make_app: AppFactory, fake_airtable_factory: Callable[..., FakeAirtable], caplog: pytest.LogCaptureFixture
) -> None:
    """An app still pointed at an emulator the plugin retired keeps its rows and logs no connection errors."""
    fake = fake_airtable_factory()
    service = get_state(make_app(JOBMETRICS_AIRTABLE_ENDPOINT_URL=fake.url)).service
    retire_emulator(fake)
    caplog.set_level(logging.DEBUG)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 1})
    assert service.flush(timeout=0.5).pending == 2  # the client row and its job row wait in the outbox
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage().lower()] == []


def test_publishing_signals_carry_what_the_docs_say(
    make_app: AppFactory, fake_airtable: FakeAirtable
) -> None:
    """records_published and publish_failed carry the records as sent (fields) and the error as a str."""
    app = make_app()
    sent: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    fake_airtable.fail_records(lambda fields: fields.get("Client ID") == "client-01", message="bad value")
    with (
        records_published.connected_to(lambda sender, **kw: sent.extend(kw["records"]), app),
        publish_failed.connected_to(lambda sender, **kw: failed.append(kw), app),
    ):
        run_job(app, 2)
        get_state(app).extension.flush(timeout=30)
    assert {record["Run ID"] for record in sent} == {RUN, f"{RUN}-client-00"}
    assert all("fields" not in record and "id" not in record for record in sent)
    assert [(type(f["error"]), f["records"][0]["Client ID"]) for f in failed] == [(str, "client-01")]
    assert failed[0]["error"].startswith("INVALID_VALUE_FOR_COLUMN: ")


def test_a_senders_requests_never_put_six_into_one_second(tmp_path: Path) -> None:
    """Whatever a request's delays, the sixth starts a second after the reply to the first came back."""
    from flask_jobmetrics.airtable.publisher import sender_record, wait_for_slot
    from flask_jobmetrics.config import read_settings
    from flask_jobmetrics.stores.memory import MemoryStore

    settings = read_settings(
        {"JOBMETRICS_AIRTABLE_API_KEY": API_KEY, "JOBMETRICS_AIRTABLE_BASE_ID": BASE_ID}, str(tmp_path)
    )
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    store = MemoryStore(clock=lambda: now[0])
    recent = sender_record(settings)
    delays = [0.0, 0.19, 0.0, 0.0, 0.0, 0.0, 0.4, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.3] * 3
    starts, replies = [], []
    for delay in delays:  # a request starts, takes `delay` to reach Airtable and come back
        wait_for_slot(store, settings, clock=lambda: now[0], sleep=sleep, recent=recent)
        starts.append(now[0])
        now[0] += delay
        replies.append(now[0])
    # A request reached Airtable between its start and its reply: the latest the first of six
    # can have arrived is its reply, the earliest the sixth can is its start.
    assert all(starts[j + 5] - replies[j] >= 1.0 - 1e-9 for j in range(len(delays) - 5))
    # Without delays it paces at the limit, plus the 2 % margin: six starts within 1.02 s.
    quick, store = sender_record(settings), MemoryStore(clock=lambda: now[0])
    first = now[0]
    for _ in range(6):
        wait_for_slot(store, settings, clock=lambda: now[0], sleep=sleep, recent=quick)
    assert now[0] - first <= 1.0 * 1.02 + 1e-9


def test_a_store_outage_is_logged_by_the_sender_in_a_few_lines(
    tmp_path: Path, fake_airtable_factory: Callable[..., FakeAirtable], caplog: pytest.LogCaptureFixture
) -> None:
    """Sender passes failing because the store is down log the first failure, one line a
    minute, and one line once a pass works again (injected clock), not one per pass."""
    from flask_jobmetrics.airtable.publisher import Publisher
    from flask_jobmetrics.exceptions import StoreUnavailableError
    from flask_jobmetrics.stores.deferred import DeferredStore
    from flask_jobmetrics.stores.sqlite import SQLiteStore

    up = [False]

    def opener() -> SQLiteStore:
        if not up[0]:
            raise StoreUnavailableError("Redis at 127.0.0.1:1: connection refused")
        return SQLiteStore(f"sqlite:///{tmp_path}/store.sqlite3")

    settings = _publishing_to(fake_airtable_factory(rate_limit=None), tmp_path)
    store = DeferredStore(
        "redis://", opener, StoreUnavailableError("down"), durable=True, shared=True, retry_interval=0.0
    )
    now = [1000.0]
    publisher = Publisher(store, settings, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        for _ in range(241):  # a pass every 0.25 s for a minute
            publisher.background_pass()
            now[0] += 0.25
        up[0] = True
        publisher.background_pass()
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_jobmetrics"]
    assert len(lines) == 3, lines
    assert "Airtable publishing pass failed" in lines[0] and "connection refused" in lines[0]
    assert "still unavailable after 60 s: 240 more calls failed" in lines[1]
    assert "available again after 60 s (241 calls failed)" in lines[2]
    publisher.stop()
    store.close()
