"""End to end with real processes: the example app under gunicorn with 4 workers.

Eight client threads (one ``requests.Session`` each) send thousands of signed harvest
webhooks for the same run and clients, redeliveries included, so updates of one client
land in every worker; one request then completes the job in whichever worker takes it.
The store is a real ``redis-server`` on loopback or one SQLite file; Airtable is a
``FakeAirtable`` in this process with Airtable's limit of 5 requests/s on (real clock).
Results are read back from the store by an app in this process, from the emulator, and
with ``flask jobmetrics outbox``. The only waiting is polling with deadlines (server
start-up, in ``gunicorn_support``) and ``flush(timeout=...)``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from example_app.harvest import harvest_delivery, sample_posts
from example_app.posts import TOKENS_PER_POST, UNSCORABLE_EVERY
from example_app.scoring import TOKENS_PER_LEAD
from flask_jobmetrics import JobMetrics
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, add_jobmetrics_tables

from .gunicorn_support import ROOT, gunicorn_server

pytestmark = pytest.mark.slow  # gunicorn workers

CLIENTS = ("acme", "globex", "umbrella", "wayne")
SECRETS = {client: f"{client}-secret-{n}" for n, client in enumerate(CLIENTS)}
THREADS = 8
EVENTS_PER_CLIENT = 550  # 2,200 unique events, plus every 10th sent again: 2,420 requests
JOB_TABLE, CLIENT_TABLE = "Job Tracking", "Client Run Results"
FLUSH_TIMEOUT = 60.0

HARVESTED = "Total Posts Harvested"
EXAMINED = "Posts Examined for Scoring"
POSTS_SCORED = "Posts Successfully Scored"
POST_TOKENS = "Post Scoring Tokens"
LEADS = "Leads Processed"
PROFILES_EXAMINED = "Profiles Examined for Scoring"
PROFILES_SCORED = "Profiles Successfully Scored"
PROFILE_TOKENS = "Profile Scoring Tokens"
TOTAL_TOKENS = "Total Tokens"


# -- what is sent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One harvest webhook event (a redelivery is the same Event sent again)."""

    client: str
    event_id: str
    posts: int


def harvest_events(per_client: int = EVENTS_PER_CLIENT) -> tuple[list[Event], list[Event]]:
    """(unique events, the send list: every event once, every 10th twice), shuffled reproducibly."""
    unique = [
        Event(client, f"evt-{client}-{n:05d}", 1 + (n * 7 + len(client)) % 5)
        for client in CLIENTS
        for n in range(per_client)
    ]
    sends = unique + unique[::10]
    random.Random(20240501).shuffle(sends)
    return unique, sends


def posts_per_client(events: list[Event]) -> dict[str, int]:
    """Total posts per client of ``events`` (each event counted as often as it occurs)."""
    totals = dict.fromkeys(CLIENTS, 0)
    for event in events:
        totals[event.client] += event.posts
    return totals


def scored_posts(harvested: int) -> int:
    """Posts the example app's stand-in scorer scores out of ``harvested`` (every 7th is not)."""
    return harvested - harvested // UNSCORABLE_EVERY


# -- sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lead:
    """One ``POST /score-lead/<client>/<number>``: a plain, non-idempotent update (+1 lead)."""

    client: str
    number: int


NO_ANSWER = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


@dataclass
class Outcome:
    """What the client threads saw."""

    acked: list[Event] = field(default_factory=list)
    acked_leads: list[Lead] = field(default_factory=list)
    #: Lead requests that got no (complete) answer: they may or may not have been counted.
    unanswered_leads: list[Lead] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def storm(
    base_url: str,
    run_id: str,
    sends: Sequence[Event | Lead],
    *,
    retries: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Send ``sends`` from THREADS threads (a Session each); a 200 acknowledges the request.

    A webhook that gets no (complete) answer because its worker died is sent again, same
    bytes, up to ``retries`` times (its event ID makes that safe); a lead request is not
    retried (nothing would make a retry safe) and lands in ``unanswered_leads``. Any other
    failure is recorded in ``Outcome.errors``.
    """
    outcome = Outcome()
    done = itertools.count(1)

    def post(session: requests.Session, url: str, body: bytes, headers: dict[str, str]) -> int | None:
        try:
            response = session.post(url, data=body, headers=headers, timeout=60)
        except NO_ANSWER as exc:
            with outcome.lock:
                outcome.failures[type(exc).__name__] += 1
            return None
        with outcome.lock:
            outcome.statuses[response.status_code] += 1
            if response.status_code != 200:
                outcome.errors.append(f"{url}: {response.status_code} {response.text[:200]}")
        return response.status_code

    def send_event(event: Event, session: requests.Session) -> None:
        posts = sample_posts(event.client, event.posts)
        delivery = harvest_delivery(event.client, run_id, event.event_id, posts, SECRETS[event.client])
        for _ in range(retries + 1):
            status = post(session, base_url + delivery.path, delivery.body, delivery.headers)
            if status == 200:
                with outcome.lock:
                    outcome.acked.append(event)
            if status is not None:
                return
        with outcome.lock:
            outcome.errors.append(f"{event}: no answer after {retries + 1} attempts")

    def send_lead(lead: Lead, session: requests.Session) -> None:
        url = f"{base_url}/score-lead/{lead.client}/{lead.number}?runId={run_id}"
        status = post(session, url, b"", {})
        with outcome.lock:
            if status == 200:
                outcome.acked_leads.append(lead)
            elif status is None:
                outcome.unanswered_leads.append(lead)

    def worker(part: Sequence[Event | Lead]) -> None:
        with requests.Session() as session:
            for item in part:
                try:
                    if isinstance(item, Event):
                        send_event(item, session)
                    else:
                        send_lead(item, session)
                except Exception as exc:  # a thread must not die silently
                    with outcome.lock:
                        outcome.errors.append(f"{item}: {exc!r}")
                if on_progress is not None:
                    on_progress(next(done))

    threads = [threading.Thread(target=worker, args=(sends[n::THREADS],)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "client threads still running after 300 s"
    return outcome


def post_json(url: str, body: Mapping[str, Any], timeout: float = 60) -> dict[str, Any]:
    """POST ``body`` and return the JSON answer (asserting a 2xx)."""
    response = requests.post(url, json=body, timeout=timeout)
    assert response.ok, f"{url}: {response.status_code} {response.text}"
    data: dict[str, Any] = response.json()
    return data


# -- environment, store, Airtable -----------------------------------------------------------


def server_env(store_url: str, instance: Path, **settings: object) -> dict[str, str]:
    """The gunicorn environment: ours without JOBMETRICS_*, then the given settings.

    ``settings`` are JOBMETRICS_ keys without the prefix; non-strings are passed as JSON,
    which is how ``example_app/config.py`` reads numbers and mappings.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMETRICS_")}
    env["JOBMETRICS_OUTBOX"] = "true"  # the workers leave publishing to a sender of their own
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["EXAMPLE_APP_INSTANCE"] = str(instance)
    env["JOBMETRICS_STORE_URL"] = store_url
    env["JOBMETRICS_WEBHOOK_SECRETS"] = json.dumps(SECRETS)
    for key, value in settings.items():
        env[f"JOBMETRICS_{key}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def airtable_settings(fake: FakeAirtable) -> dict[str, object]:
    return {"AIRTABLE_API_KEY": API_KEY, "AIRTABLE_BASE_ID": BASE_ID, "AIRTABLE_ENDPOINT_URL": fake.url}


@contextmanager
def local_app(store_url: str, instance: Path, **config: object) -> Iterator[JobMetrics]:
    """A JobMetrics app in this process on the same store (``config``: JOBMETRICS_ keys)."""
    app = Flask(f"multiworker_{uuid.uuid4().hex[:8]}", instance_path=str(instance))
    app.config.update(TESTING=True, JOBMETRICS_STORE_URL=store_url, JOBMETRICS_OUTBOX=True)
    app.config.update({f"JOBMETRICS_{k}": v for k, v in config.items()})
    ext = JobMetrics(app)
    try:
        yield ext
    finally:
        ext.state(app).service.close()


@pytest.fixture
def fake() -> Iterator[FakeAirtable]:
    """FakeAirtable with the jobmetrics base, 5 requests/s per base, real clock."""
    emulator = FakeAirtable(API_KEY, rate_limit=5.0)
    add_jobmetrics_tables(emulator)
    emulator.start()
    yield emulator
    emulator.stop()


def outbox_cli(env: Mapping[str, str]) -> str:
    """``flask --app example_app jobmetrics outbox`` on the server's store (no Airtable keys)."""
    quiet = {k: v for k, v in env.items() if not k.startswith("JOBMETRICS_AIRTABLE_")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("flask")), "--app", "example_app", "jobmetrics", "outbox"],
        cwd=ROOT,
        env=quiet,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def rows_by_key(fake: FakeAirtable) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(job rows' fields, client rows' fields grouped by Client ID) in the emulator."""
    jobs = [r["fields"] for r in fake.records(BASE_ID, JOB_TABLE)]
    clients: dict[str, list[dict[str, Any]]] = {}
    for record in fake.records(BASE_ID, CLIENT_TABLE):
        clients.setdefault(record["fields"].get("Client ID", ""), []).append(record["fields"])
    return jobs, clients


def assert_airtable_paced(fake: FakeAirtable) -> None:
    """Never more than 5 requests in any second for the base, and never a 429."""
    assert fake.request_count(base_id=BASE_ID) > 0
    assert fake.max_requests_in_any_second(BASE_ID) <= 5
    assert [r for r in fake.requests if r.status == 429] == []


def expected_post_fields(harvested: int) -> dict[str, int]:
    scored = scored_posts(harvested)
    return {
        HARVESTED: harvested,
        EXAMINED: harvested,
        POSTS_SCORED: scored,
        POST_TOKENS: scored * TOKENS_PER_POST,
        TOTAL_TOKENS: scored * TOKENS_PER_POST,
    }


def pick(fields: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    return {name: fields.get(name) for name in names}


# -- the storm scenario on each store -------------------------------------------------------


def run_harvest_storm(store_url: str, tmp_path: Path, fake: FakeAirtable, **settings: object) -> None:
    """Start a job, storm the 4 workers with webhooks, complete the job in one request, check.

    The workers publish (they hold Airtable's settings); an app in this process waits with
    ``flush`` until the outbox is empty, then gunicorn is stopped with SIGTERM.
    """
    instance = tmp_path / "instance"
    env = server_env(store_url, instance, **airtable_settings(fake), **settings)
    with local_app(store_url, instance) as local:
        run_id = local.start_job(notes="multi-worker harvest").run_id
    unique, sends = harvest_events()
    totals = posts_per_client(unique)

    with gunicorn_server(env, tmp_path / "gunicorn.log") as server:
        outcome = storm(server.url, run_id, sends)
        assert outcome.errors == [], outcome.errors[:5]
        assert outcome.statuses == {200: len(sends)}
        done = post_json(server.url + "/run-post-scoring", {"run_id": run_id, "complete_job": True})
        assert done["job_status"] == "Completed"
        assert {c["client_id"]: c["posts_examined"] for c in done["clients"]} == totals
        with local_app(store_url, instance, **airtable_settings(fake)) as sender:
            report = sender.flush(timeout=FLUSH_TIMEOUT)
        assert (report.pending, report.dead) == (0, 0), report
        assert server.stop() == 0, server.log()

    log = server.log()
    assert "Traceback" not in log, log
    assert "could not merge" not in log, log
    assert outbox_cli(env).splitlines()[:2] == ["Pending:       0", "Dead letters:  0"]

    with local_app(store_url, instance) as check:
        job = check.get_job_run(run_id)
        assert job is not None and job.status.value == "Completed"
        for client, harvested in totals.items():
            run = check.get_client_run(run_id, client)
            assert run is not None and run.status.value == "Completed"
            assert pick(run.metrics, expected_post_fields(harvested)) == expected_post_fields(harvested)
        assert job.metrics[HARVESTED] == sum(totals.values())
        assert job.metrics["Clients Processed"] == len(CLIENTS)

    jobs, clients = rows_by_key(fake)
    assert [j["Run ID"] for j in jobs] == [run_id]
    assert jobs[0]["Status"] == "Completed"
    assert jobs[0][HARVESTED] == sum(totals.values())
    assert jobs[0][POSTS_SCORED] == sum(scored_posts(h) for h in totals.values())
    assert sorted(clients) == sorted(CLIENTS)
    for client, harvested in totals.items():
        assert len(clients[client]) == 1, clients[client]
        row = clients[client][0]
        assert row["Run ID"] == f"{run_id}-{client}"
        assert row["Status"] == "Completed"
        assert pick(row, expected_post_fields(harvested)) == expected_post_fields(harvested)
    assert_airtable_paced(fake)


def test_gunicorn_redis_store_exact_totals(redis_url: str, tmp_path: Path, fake: FakeAirtable) -> None:
    """4 gunicorn workers on Redis: exact totals in the store and Airtable, one row each, <= 5 req/s."""
    run_harvest_storm(redis_url, tmp_path, fake, FLUSH_INTERVAL=0.2, PROGRESS_INTERVAL=1)


def test_gunicorn_sqlite_store_exact_totals(tmp_path: Path, fake: FakeAirtable) -> None:
    """4 gunicorn workers on one SQLite file: exact totals in the store and Airtable, one row each."""
    url = f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}"
    run_harvest_storm(url, tmp_path, fake, FLUSH_INTERVAL=0.2, PROGRESS_INTERVAL=0)


# -- SIGKILL --------------------------------------------------------------------------------

LEAD_CLIENT = "stark"  # scored through /score-lead during the SIGKILL storm; no posts
LEAD_REQUESTS = 400


def test_sigkill_worker_loses_no_acknowledged_update(tmp_path: Path, fake: FakeAirtable) -> None:
    """With JOBMETRICS_FLUSH_INTERVAL=0, every update answered 200 before SIGKILLs of workers counts.

    Three workers (one at a time, gunicorn replaces each) are SIGKILLed during the storm, at
    1/4, 1/2 and 3/4 of the requests; a kill may or may not catch a request in flight.

    The bound: a 200 is sent only after the update was committed to the store (the harvest
    route's idempotent update always goes straight to the store; with a flush interval of 0
    the buffered kind, /score-lead's, is written through before the response too). So a
    SIGKILL loses only updates of requests the killed worker had not answered, and each of
    those was either committed whole or not at all. Webhooks without an answer are sent
    again with the same bytes and their event ID makes a committed one count zero times:
    posts harvested == posts of the acknowledged unique events, exactly. Lead requests are
    not retried: acknowledged <= leads processed <= acknowledged + unanswered.
    """
    store_url = f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}"
    instance = tmp_path / "instance"
    # The workers do not publish: this process is the dedicated Airtable sender.
    env = server_env(store_url, instance, FLUSH_INTERVAL=0, PROGRESS_INTERVAL=0)
    with local_app(store_url, instance) as local:
        run_id = local.start_job(notes="multi-worker SIGKILL").run_id
    unique, events = harvest_events()
    sends: list[Event | Lead] = [*events, *(Lead(LEAD_CLIENT, n) for n in range(1, LEAD_REQUESTS + 1))]
    random.Random(11).shuffle(sends)
    killed: list[int] = []

    with gunicorn_server(env, tmp_path / "gunicorn.log") as server:
        started = set(server.worker_pids())
        kill_at = {len(sends) // 4, len(sends) // 2, 3 * len(sends) // 4}
        killing = threading.Lock()

        def kill_a_worker(count: int) -> None:
            if count not in kill_at:
                return
            with killing:
                victim = next(pid for pid in server.worker_pids() if pid not in killed)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        outcome = storm(server.url, run_id, sends, retries=5, on_progress=kill_a_worker)
        assert len(killed) == 3 and killed[0] in started
        assert outcome.errors == [], outcome.errors[:5]
        acked = {event.event_id: event for event in outcome.acked}
        assert len(acked) == len(unique)  # with retries, every event was acknowledged in the end
        done = post_json(server.url + "/run-post-scoring", {"run_id": run_id, "complete_job": True})
        assert done["job_status"] == "Completed"
        assert server.stop() == 0, server.log()
        assert not set(killed) & set(server.worker_pids())

    totals = posts_per_client(list(acked.values()))
    low, high = len(outcome.acked_leads), len(outcome.acked_leads) + len(outcome.unanswered_leads)
    with local_app(store_url, instance, **airtable_settings(fake)) as sender:
        report = sender.flush(timeout=FLUSH_TIMEOUT)
        assert (report.pending, report.dead) == (0, 0), report
        for client, harvested in totals.items():
            run = sender.get_client_run(run_id, client)
            assert run is not None
            assert pick(run.metrics, expected_post_fields(harvested)) == expected_post_fields(harvested)
        leads_run = sender.get_client_run(run_id, LEAD_CLIENT)
        assert leads_run is not None
        leads = leads_run.metrics[LEADS]
        assert low <= leads <= high, (low, leads, high, outcome.failures)
    jobs, clients = rows_by_key(fake)
    assert len(jobs) == 1 and jobs[0][HARVESTED] == sum(totals.values())
    assert {c: [r.get(HARVESTED, 0) for r in rows] for c, rows in clients.items()} == {
        **{c: [h] for c, h in totals.items()},
        LEAD_CLIENT: [0],
    }
    assert [r[LEADS] for r in clients[LEAD_CLIENT]] == [leads]
    assert_airtable_paced(fake)


# -- buffered updates spread over the workers -----------------------------------------------

LEAD_COUNTS = {"acme": 120, "globex": 40, "umbrella": 63, "wayne": 150}


def expected_lead_fields(leads: int) -> dict[str, int]:
    scored = leads - leads // 10
    return {
        LEADS: leads,
        PROFILES_EXAMINED: leads,
        PROFILES_SCORED: scored,
        PROFILE_TOKENS: scored * TOKENS_PER_LEAD,
        TOTAL_TOKENS: scored * TOKENS_PER_LEAD,
    }


@dataclass(frozen=True)
class BufferedRun:
    run_id: str
    #: Client rows in the store after the drain: client -> fields.
    store_rows: dict[str, dict[str, Any]]
    #: The job row after the drain, and in Airtable.
    job_fields: dict[str, Any]
    airtable_jobs: list[dict[str, Any]]
    airtable_clients: dict[str, list[dict[str, Any]]]
    fake: FakeAirtable


@pytest.fixture(scope="module")
def buffered_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BufferedRun]:
    """Score every lead of 4 clients through /score-lead (buffered, nothing leaves by time),
    complete the job in one request, stop gunicorn with SIGTERM, publish from this process."""
    tmp_path = tmp_path_factory.mktemp("buffered")
    store_url = f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}"
    instance = tmp_path / "instance"
    env = server_env(store_url, instance, FLUSH_INTERVAL=30, BUFFER_TTL=30, PROGRESS_INTERVAL=0)
    with local_app(store_url, instance) as local:
        run_id = local.start_job(notes="multi-worker buffered").run_id
    leads = [Lead(client, n) for client, count in LEAD_COUNTS.items() for n in range(1, count + 1)]
    random.Random(7).shuffle(leads)

    fake = FakeAirtable(API_KEY, rate_limit=5.0)
    add_jobmetrics_tables(fake)
    fake.start()
    try:
        with gunicorn_server(env, tmp_path / "gunicorn.log") as server:
            outcome = storm(server.url, run_id, leads)
            assert outcome.errors == [], outcome.errors[:5]
            assert len(outcome.acked_leads) == len(leads)
            post_json(server.url + "/run-post-scoring", {"run_id": run_id, "complete_job": True})
            assert server.stop() == 0, server.log()
        assert "Traceback" not in server.log(), server.log()
        with local_app(store_url, instance, **airtable_settings(fake)) as sender:
            report = sender.flush(timeout=FLUSH_TIMEOUT)
            assert (report.pending, report.dead) == (0, 0), report
            rows = {c: dict(r.metrics) for c in LEAD_COUNTS if (r := sender.get_client_run(run_id, c))}
            job = sender.get_job_run(run_id)
            assert job is not None
        jobs, clients = rows_by_key(fake)
        yield BufferedRun(run_id, rows, dict(job.metrics), jobs, clients, fake)
    finally:
        fake.stop()


def test_sigterm_drains_every_workers_buffer(buffered_run: BufferedRun) -> None:
    """SIGTERM to gunicorn drains each worker's buffer: every client's lead counts are exact."""
    for client, leads in LEAD_COUNTS.items():
        fields = buffered_run.store_rows[client]
        assert pick(fields, expected_lead_fields(leads)) == expected_lead_fields(leads), client
        rows = buffered_run.airtable_clients[client]
        assert len(rows) == 1, rows
        assert pick(rows[0], expected_lead_fields(leads)) == expected_lead_fields(leads), client
    assert len(buffered_run.airtable_jobs) == 1
    assert_airtable_paced(buffered_run.fake)


def test_job_totals_include_updates_buffered_in_other_workers(buffered_run: BufferedRun) -> None:
    """The job row's totals equal the sum of its client rows when the completion ran in another worker."""
    expected = {
        name: sum(expected_lead_fields(leads)[name] for leads in LEAD_COUNTS.values())
        for name in expected_lead_fields(0)
    }
    assert pick(buffered_run.job_fields, expected) == expected
    assert pick(buffered_run.airtable_jobs[0], expected) == expected
