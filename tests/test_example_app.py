"""The example webhook server (example_app): its routes, its configuration and its demo."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import create_app, jobmetrics
from example_app.background import background_work
from example_app.batch import run_batch
from example_app.demo import demo_command
from example_app.scoring import CLIENTS
from flask_jobmetrics import ClientRun, Status
from flask_jobmetrics.decorators import sign
from flask_jobmetrics.signals import client_metrics_updated
from flask_jobmetrics.state import get_state

SECRETS = {"acme": "acme-secret", "globex": "globex-secret", "umbrella": "umbrella-secret"}
RUN = "230615-120000"
RUN_ID_FORM = re.compile(r"^\d{6}-\d{6}$")
HARVESTED = "Total Posts Harvested"


def _clean_env(monkeypatch: pytest.MonkeyPatch, instance: Path) -> None:
    """No JOBMETRICS_* settings from the outer environment; the instance folder in tmp_path."""
    for name in list(os.environ):
        if name.startswith("JOBMETRICS"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EXAMPLE_APP_INSTANCE", str(instance))


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The example app on an SQLite store in ``tmp_path``, with webhook secrets for three clients."""
    _clean_env(monkeypatch, tmp_path / "instance")
    example = create_app(
        {
            "TESTING": True,
            "JOBMETRICS_STORE_URL": f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}",
            "JOBMETRICS_WEBHOOK_SECRETS": SECRETS,
        }
    )
    yield example
    assert background_work(example).join(timeout=30)
    get_state(example).service.close()


def client_run(app: Flask, run_id: str, client_id: str) -> ClientRun | None:
    """The client run after every buffered update reached the store."""
    with app.app_context():
        jobmetrics.flush()
        return jobmetrics.get_client_run(run_id, client_id)


def harvested(app: Flask, run_id: str, client_id: str) -> int:
    run = client_run(app, run_id, client_id)
    return 0 if run is None else int(run.metrics.get(HARVESTED, 0))


def deliver(
    client: FlaskClient,
    client_id: str,
    payload: dict[str, Any],
    *,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a harvest webhook signed with ``secret`` (default: the client's), run ID in X-Run-ID."""
    body = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", "X-Run-ID": RUN} if headers is None else dict(headers)
    sent["X-Signature"] = sign(body, secret if secret is not None else SECRETS[client_id])
    return client.post(f"/webhooks/harvest/{client_id}", data=body, headers=sent)


# -- configuration ----------------------------------------------------------------------------


def test_jobmetrics_environment_variables_configure_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JOBMETRICS_* variables reach init_app: JSON secrets, numbers, flags; a numeric token stays text."""
    _clean_env(monkeypatch, tmp_path / "instance")
    monkeypatch.setenv("JOBMETRICS_STORE_URL", "memory://")
    monkeypatch.setenv("JOBMETRICS_WEBHOOK_SECRETS", '{"acme": "s3cret"}')
    monkeypatch.setenv("JOBMETRICS_BUFFER_TTL", "12")
    monkeypatch.setenv("JOBMETRICS_DASHBOARD", "1")
    monkeypatch.setenv("JOBMETRICS_DASHBOARD_TOKEN", "12345")
    example = create_app()
    try:
        settings = get_state(example).settings
        assert settings.store_url == "memory://"
        assert dict(settings.webhook_secrets) == {"acme": b"s3cret"}
        assert settings.buffer_ttl == 12
        assert settings.dashboard is True
        assert settings.dashboard_token == "12345"
        assert example.instance_path == str(tmp_path / "instance")
    finally:
        get_state(example).service.close()


# -- /run-batch-score: plain calls in a background thread -------------------------------------


def test_run_batch_score_answers_202_and_scores_every_client_in_a_background_thread(
    app: Flask, client: FlaskClient
) -> None:
    """POST /run-batch-score → 202 with the run ID; the thread scores 12 clients and completes the job."""
    response = client.post("/run-batch-score")
    assert response.status_code == 202
    run_id = response.get_json()["run_id"]
    assert RUN_ID_FORM.match(run_id)
    assert response.get_json()["clients"] == list(CLIENTS)
    assert len(background_work(app).threads) == 1
    assert background_work(app).join(timeout=30)

    with app.app_context():
        job = jobmetrics.get_job_run(run_id)
        assert job is not None
        assert job.status is Status.COMPLETED_WITH_ERRORS
        assert sorted(job.client_ids) == sorted(CLIENTS)
        statuses = {c: jobmetrics.get_client_run(run_id, c).status for c in CLIENTS}  # type: ignore[union-attr]
        acme = jobmetrics.get_client_run(run_id, "acme")
    assert statuses == {
        c: Status.FAILED if c == "initech" else Status.NO_LEADS if n == 0 else Status.COMPLETED
        for c, n in CLIENTS.items()
    }
    assert job.metrics["Clients Processed"] == 12 and job.metrics["Clients With Errors"] == 1
    assert acme is not None
    assert acme.metrics["Leads Processed"] == 120
    assert acme.metrics["Profiles Successfully Scored"] == 108
    assert acme.metrics["Total Tokens"] == 27_000


def test_run_batch_score_for_some_clients_can_leave_the_runs_open(app: Flask, client: FlaskClient) -> None:
    """{"clients": [...], "complete": false} scores only those clients and leaves them and the job Running."""
    response = client.post(
        "/run-batch-score", json={"clients": ["acme", "initech", "hooli"], "complete": False}
    )
    assert response.status_code == 202
    run_id = response.get_json()["run_id"]
    assert background_work(app).join(timeout=30)

    with app.app_context():
        job = jobmetrics.get_job_run(run_id)
        runs = {c: jobmetrics.get_client_run(run_id, c) for c in ("acme", "initech", "hooli")}
    assert job is not None and job.status is Status.RUNNING
    assert sorted(job.client_ids) == ["acme", "hooli", "initech"]
    assert {c: r.status for c, r in runs.items() if r is not None} == {
        "acme": Status.RUNNING,
        "initech": Status.FAILED,
        "hooli": Status.RUNNING,
    }
    assert runs["initech"] is not None and runs["initech"].metrics["Leads Processed"] == 40
    assert runs["initech"].error == "ScorerCrashed: model timeout while scoring lead 50 of initech"


def test_run_batch_score_refuses_unknown_clients_and_starts_nothing(app: Flask, client: FlaskClient) -> None:
    """Unknown client IDs or a malformed body → 400 naming the problem; no job is started."""
    unknown = client.post("/run-batch-score", json={"clients": ["acme", "nobody"]})
    assert unknown.status_code == 400
    assert "nobody" in unknown.get_json()["message"]
    assert client.post("/run-batch-score", json={"clients": "acme"}).status_code == 400
    assert client.post("/run-batch-score", json={"complete": "no"}).status_code == 400
    with app.app_context():
        assert jobmetrics.list_job_runs() == []
    assert background_work(app).threads == []


# -- /score-lead: the client_metrics_updated signal --------------------------------------------


def test_score_lead_reports_through_the_signal_into_the_client_run(app: Flask, client: FlaskClient) -> None:
    """Scored leads go out as client_metrics_updated (run from X-Run-ID or ?runId=) and land in the run."""
    sent: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        sent.append(kwargs)

    with client_metrics_updated.connected_to(receiver, app):
        scored = client.post("/score-lead/acme/7", headers={"X-Run-ID": RUN})
        unscored = client.post(f"/score-lead/acme/acme-lead-0010?runId={RUN}")
    assert scored.status_code == 200 and unscored.status_code == 200
    assert scored.get_json() == {
        "run_id": RUN,
        "client_id": "acme",
        "lead_id": "acme-lead-0007",
        "scored": True,
        "score": 59,
        "tokens": 250,
    }
    assert unscored.get_json()["scored"] is False
    assert [(s["run_id"], s["client_id"]) for s in sent] == [(RUN, "acme"), (RUN, "acme")]

    run = client_run(app, RUN, "acme")
    assert run is not None
    assert run.status is Status.RUNNING
    assert run.metrics["Leads Processed"] == 2
    assert run.metrics["Profiles Examined for Scoring"] == 2
    assert run.metrics["Profiles Successfully Scored"] == 1
    assert run.metrics["Total Tokens"] == 250


def test_score_lead_needs_a_valid_run_id_and_a_known_client(app: Flask, client: FlaskClient) -> None:
    """No or a malformed run ID → 400 naming X-Run-ID; an unknown client or lead → 404; nothing recorded."""
    missing = client.post("/score-lead/acme/7")
    assert missing.status_code == 400 and "X-Run-ID" in missing.get_json()["message"]
    malformed = client.post("/score-lead/acme/7", headers={"X-Run-ID": "2023-06-15"})
    assert malformed.status_code == 400 and "X-Run-ID" in malformed.get_json()["message"]
    assert client.post("/score-lead/nobody/7", headers={"X-Run-ID": RUN}).status_code == 404
    assert client.post("/score-lead/acme/globex-lead-0007", headers={"X-Run-ID": RUN}).status_code == 404
    assert client_run(app, RUN, "acme") is None


# -- /webhooks/harvest: the tracked and signed decorators, idempotent by event ID -------------


def test_harvest_webhook_counts_posts_and_a_redelivered_event_once(app: Flask, client: FlaskClient) -> None:
    """A signed delivery → 200, counted; the same event redelivered → 200, counted once; a new event adds."""
    payload = {"event_id": "evt-1", "run_id": RUN, "posts": [{"url": f"p{n}"} for n in range(5)]}
    first = deliver(client, "globex", payload)
    assert first.status_code == 200
    assert first.get_json()["total_posts_harvested"] == 5
    assert first.headers["X-Run-ID"] == RUN

    again = deliver(client, "globex", payload)
    assert again.status_code == 200
    assert again.get_json()["total_posts_harvested"] == 5
    assert harvested(app, RUN, "globex") == 5

    more = deliver(client, "globex", {"event_id": "evt-2", "posts": [{"url": "p9"}, {"url": "p10"}]})
    assert more.status_code == 200
    assert harvested(app, RUN, "globex") == 7
    # The same event ID for another client is another client's event.
    assert deliver(client, "umbrella", payload).status_code == 200
    assert harvested(app, RUN, "umbrella") == 5
    assert harvested(app, RUN, "globex") == 7


def test_harvest_webhook_with_a_bad_signature_is_401_and_records_nothing(
    app: Flask, client: FlaskClient
) -> None:
    """A wrong secret, another client's secret, or no signature → 401; nothing is recorded."""
    payload = {"event_id": "evt-1", "run_id": RUN, "posts": [1, 2, 3]}
    assert deliver(client, "globex", payload, secret="wrong").status_code == 401
    assert deliver(client, "globex", payload, secret=SECRETS["acme"]).status_code == 401
    unsigned = client.post("/webhooks/harvest/globex", json=payload, headers={"X-Run-ID": RUN})
    assert unsigned.status_code == 401
    assert unsigned.get_json()["error"] == "invalid_signature"
    assert client_run(app, RUN, "globex") is None
    # The refused deliveries did not use up the event ID: the genuine one still counts.
    assert deliver(client, "globex", payload).status_code == 200
    assert harvested(app, RUN, "globex") == 3


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Type": "application/json"}, id="missing"),
        pytest.param({"Content-Type": "application/json", "X-Run-ID": "2023-06-15"}, id="malformed"),
    ],
)
def test_harvest_webhook_without_a_valid_run_id_is_400_naming_the_header(
    app: Flask, client: FlaskClient, headers: dict[str, str]
) -> None:
    """A missing or malformed X-Run-ID → 400 whose message names the header; nothing recorded."""
    response = deliver(client, "globex", {"event_id": "evt-1", "posts": [1]}, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_run_context"
    assert "X-Run-ID" in response.get_json()["message"]
    with app.app_context():
        jobmetrics.flush()
        assert jobmetrics.list_job_runs() == []


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        pytest.param({"posts": [1]}, "event_id", id="no-event-id"),
        pytest.param({"event_id": "evt-1", "posts": 3}, "posts", id="posts-not-a-list"),
        pytest.param({"event_id": "evt-1", "run_id": "230615-120001", "posts": []}, "run_id", id="other-run"),
        pytest.param(["evt-1"], "JSON object", id="not-an-object"),
    ],
)
def test_harvest_webhook_with_a_bad_payload_is_400_and_records_nothing(
    app: Flask, client: FlaskClient, payload: Any, problem: str
) -> None:
    """A signed delivery whose payload lacks an event ID, a posts list, or names another run → 400."""
    response = deliver(client, "globex", payload)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_payload"
    assert problem in response.get_json()["message"]
    assert client_run(app, RUN, "globex") is None


# -- /run-post-scoring: plain calls ------------------------------------------------------------


def test_run_post_scoring_scores_the_harvested_posts_and_completes_each_client(
    app: Flask, client: FlaskClient
) -> None:
    """Posts examined = harvested; every 7th cannot be scored; 120 tokens a scored post; clients completed."""
    with app.app_context():
        run_id = run_batch(jobmetrics, ["globex", "umbrella", "initech", "hooli"], complete=False).run_id
    headers = {"Content-Type": "application/json", "X-Run-ID": run_id}
    assert (
        deliver(client, "globex", {"event_id": "g1", "posts": list(range(10))}, headers=headers).status_code
        == 200
    )
    assert (
        deliver(client, "globex", {"event_id": "g2", "posts": list(range(5))}, headers=headers).status_code
        == 200
    )
    assert (
        deliver(client, "umbrella", {"event_id": "u1", "posts": list(range(7))}, headers=headers).status_code
        == 200
    )

    response = client.post("/run-post-scoring", json={"run_id": run_id})
    assert response.status_code == 200
    results = {r["client_id"]: r for r in response.get_json()["clients"]}
    assert response.get_json()["job_status"] == "Running"
    # globex: posts 1..15, 7 and 14 unscorable; umbrella: posts 1..7, 7 unscorable.
    assert (results["globex"]["posts_examined"], results["globex"]["posts_scored"]) == (15, 13)
    assert results["globex"]["post_tokens"] == 13 * 120
    assert (results["umbrella"]["posts_examined"], results["umbrella"]["posts_scored"]) == (7, 6)
    assert results["initech"]["skipped"] == "its client run Failed"
    assert results["hooli"]["status"] == "No Leads To Score"

    globex = client_run(app, run_id, "globex")
    assert globex is not None and globex.status is Status.COMPLETED
    assert globex.metrics["Posts Examined for Scoring"] == 15
    assert globex.metrics["Posts Successfully Scored"] == 13
    assert globex.metrics["Post Scoring Tokens"] == 1_560
    assert globex.metrics["Total Tokens"] == 9_000 + 1_560  # 40 leads, 36 scored, then the posts
    umbrella = client_run(app, run_id, "umbrella")
    assert umbrella is not None and umbrella.metrics["Post Scoring Tokens"] == 720
    initech = client_run(app, run_id, "initech")
    assert initech is not None and initech.status is Status.FAILED

    # Scoring again finds nothing new; completing the job aggregates everything.
    again = client.post("/run-post-scoring", json={"run_id": run_id, "complete_job": True})
    assert again.status_code == 200
    assert all(r["posts_examined"] == 0 for r in again.get_json()["clients"])
    assert again.get_json()["job_status"] == "Completed with Errors"
    with app.app_context():
        job = jobmetrics.get_job_run(run_id)
    assert job is not None
    assert job.metrics["Posts Examined for Scoring"] == 22
    assert job.metrics["Posts Successfully Scored"] == 19


def test_run_post_scoring_defaults_to_the_newest_run_and_refuses_unknown_runs(
    app: Flask, client: FlaskClient
) -> None:
    """Without run_id the newest job run is scored; an unknown run → 404; a malformed one → 400."""
    assert client.post("/run-post-scoring").status_code == 404
    with app.app_context():
        run_id = run_batch(jobmetrics, ["stark"], complete=False).run_id
    newest = client.post("/run-post-scoring")
    assert newest.status_code == 200
    assert newest.get_json()["run_id"] == run_id
    assert client.post("/run-post-scoring", json={"run_id": "230101-000000"}).status_code == 404
    assert client.post("/run-post-scoring", json={"run_id": "yesterday"}).status_code == 400


# -- the demo --------------------------------------------------------------------------------


def _client_rows(output: str, heading: str) -> list[list[str]]:
    """The rows of the table under ``heading`` (after its column titles and rule), split on spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_demo_runs_the_whole_story_and_prints_the_summary(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo scores leads, harvests (redelivery ignored, forgery refused), scores posts, and summarizes."""
    _clean_env(monkeypatch, tmp_path / "demo-instance")
    result = app.test_cli_runner().invoke(demo_command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "batch lead scoring over 12 clients" in out
    assert re.search(r"^Status:\s+Completed with Errors$", out, re.MULTILINE)
    assert re.search(r"^\s+Total Posts Harvested\s+74$", out, re.MULTILINE)
    assert re.search(r"<- redelivered \(same event ID\): ignored$", out, re.MULTILINE)
    assert re.search(
        r"-> 401\s+harvested:\s+0\s+<- signed with the wrong secret: nothing recorded$", out, re.M
    )
    assert "JOBMETRICS_DASHBOARD=1 .venv/bin/flask --app example_app run" in out
    assert "http://127.0.0.1:5000/jobmetrics/" in out
    rows = {row[0]: row[1:] for row in _client_rows(out, "Client runs (")}
    assert sorted(rows) == sorted(CLIENTS)
    acme, globex = rows["acme"], rows["globex"]
    assert acme[0] == "Completed"
    assert (acme[4], acme[5], acme[6], acme[10]) == ("120", "120", "108", "27,000")
    assert (globex[7], globex[8], globex[9]) == ("9", "9", "8")  # harvested once despite the redelivery
    assert rows["initech"][0] == "Failed"
    assert (tmp_path / "demo-instance" / "jobmetrics.sqlite3").is_file()


def test_demo_with_fake_airtable_prints_one_row_per_client_and_the_request_count(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fake-airtable publishes to a FakeAirtable: one job row, one row per client, and the write count."""
    _clean_env(monkeypatch, tmp_path / "demo-instance")
    result = app.test_cli_runner().invoke(demo_command, ["--fake-airtable"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    run_id = re.search(r"^Run:\s+(\d{6}-\d{6})$", out, re.MULTILINE)
    assert run_id is not None
    jobs = _client_rows(out, "Job Tracking (")
    assert [row[0] for row in jobs] == [run_id.group(1)]
    assert " ".join(jobs[0][1:4]) == "Completed with Errors"
    clients = _client_rows(out, "Client Run Results (")
    assert sorted(row[1] for row in clients) == sorted(CLIENTS)  # each client exactly once
    assert all(row[0] == f"{run_id.group(1)}-{row[1]}" for row in clients)
    acme = next(row for row in clients if row[1] == "acme")
    assert acme[2:5] == ["Completed", "120", "108"] and acme[-1] == "27,000"
    assert "Error Details of initech: ScorerCrashed: model timeout while scoring lead 50 of initech" in out
    writes = re.search(r"^It took (\d+) write requests? \(batch_upsert", out, re.MULTILINE)
    assert writes is not None and 2 <= int(writes.group(1)) <= 13
    assert "One row per client: yes (12 clients, 12 rows)." in out
    assert not (tmp_path / "demo-instance" / "jobmetrics.sqlite3").exists()  # a temporary store
