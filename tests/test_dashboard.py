"""The dashboard blueprint and its JSON API, through Flask's test client on the memory store."""

from __future__ import annotations

import functools
import re
import time
from collections import Counter
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from itsdangerous.encoding import base64_encode, int_to_bytes

from flask_jobmetrics import StoreError, StoreUnavailableError
from flask_jobmetrics.dashboard import api, views
from flask_jobmetrics.dashboard.auth import COOKIE_NAME, session_serializer
from flask_jobmetrics.dashboard.charts import TOP_BARS, shorten
from flask_jobmetrics.dashboard.present import NAME_CHARS, PAGE_SIZE
from flask_jobmetrics.models import Status
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.state import get_state
from flask_jobmetrics.stores.base import Store

from .big_run import client_ids, expected_failures, score
from .support import AppFactory, Clock, MakeStore

ACME = {
    "Leads Processed": 1200,
    "Profiles Examined": 1200,
    "Profiles Scored": 1100,
    "Posts Harvested": 50,
    "Posts Examined": 40,
    "Posts Scored": 30,
    "Total Tokens": 123456,
}
#: What a client may add to the run JSON (its ID, status, times, numbers and text previews).
RUN_JSON_BYTES_PER_CLIENT = 500
GLOBEX = {"Leads Processed": 7, "Profiles Examined": 7, "Profiles Scored": 5, "Total Tokens": 900}


@pytest.fixture
def make_app(make_app: AppFactory, clock: Clock) -> AppFactory:
    """Apps with the dashboard on (unless overridden), on the test clock."""
    return functools.partial(make_app, clock=clock, JOBMETRICS_DASHBOARD=True)


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def service(app: Flask) -> MetricsService:
    return get_state(app).service


def _job(
    service: MetricsService, clock: Clock, run_id: str = "230615-120000", *, finish: bool = False
) -> str:
    """A job with acme (completed), globex (still running), and hooli (no leads)."""
    job = service.start_job(run_id, notes="Nightly scoring")
    service.update_client_metrics(job.run_id, "acme", ACME)
    service.update_client_metrics(job.run_id, "globex", GLOBEX)
    clock.advance(125)
    service.complete_client_metrics(job.run_id, "acme")
    service.complete_client_metrics(job.run_id, "hooli")
    if finish:
        service.complete_job_metrics(job.run_id, notes="done")
    return job.run_id


def _two_jobs(service: MetricsService, clock: Clock, *, finish_second: bool = False) -> tuple[str, str]:
    """A finished job at 12:00 and, an hour later, a second one (still running unless told)."""
    old = _job(service, clock, "230615-120000", finish=True)
    clock.advance(3600)
    return old, _job(service, clock, "230615-130000", finish=finish_second)


class _Cells(HTMLParser):
    """The text of every ``<td>``/``<th>`` of the table row with the given id."""

    def __init__(self, row_id: str) -> None:
        super().__init__()
        self.row_id = row_id
        self.in_row = False
        self.cell: list[str] | None = None
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and dict(attrs).get("id") == self.row_id:
            self.in_row = True
        elif self.in_row and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.in_row = False
        elif self.in_row and tag in ("td", "th") and self.cell is not None:
            self.cells.append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def cells(html: str, row_id: str) -> list[str]:
    parser = _Cells(row_id)
    parser.feed(html)
    return parser.cells


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def run_links(html: str) -> list[str]:
    """The run IDs the runs table links, in order (the trend charts link them too)."""
    return re.findall(
        r'<td class="client mono" data-label="Run ID"><a href="/jobmetrics/runs/([0-9-]+)"', html
    )


# -- HTML pages ----------------------------------------------------------------------------------


def test_runs_list_shows_runs_newest_first_with_their_numbers(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """The runs list links every run, newest first, with status, duration, clients done, failed, tokens."""
    old, new = _two_jobs(service, clock)
    response = client.get("/jobmetrics/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert run_links(html) == [new, old]
    rows = re.findall(r"<tr data-status=[^>]*>\s*<td class=\"client mono\".*?</tr>", html, re.S)
    first, second = ([_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows)
    assert first == [new, "Running", "2023-06-15 13:02:05", "2m 05s", "2 / 3", "0", "1,207", "124,356"]
    assert second == [
        old,
        "Completed with Errors",
        "2023-06-15 12:00:00",
        "2m 05s",
        "3 / 3",
        "1",
        "1,207",
        "124,356",
    ]


class CountingStore:
    """A store that counts the calls made to it, by method; the store it wraps answers each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.store, name)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)

        return call


def _runs_cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr data-status=[^>]*>\s*<td class=\"client mono\".*?</tr>", html, re.S)
    return [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_runs_list_reads_the_job_rows_and_one_bulk_read_of_the_running_ones_clients(
    client: FlaskClient, service: MetricsService, clock: Clock, make_store: MakeStore
) -> None:
    """The runs list and /api/runs make two store reads whatever the number of runs (memory,
    SQLite, Redis): the job rows, then the clients of the running ones in one call; their
    numbers are those the service shows run by run."""
    counting = CountingStore(make_store(clock=clock.timestamp))
    service.store = counting  # type: ignore[assignment]
    runs = []
    for day in range(1, 7):
        runs.append(_job(service, clock, f"2306{day:02d}-120000", finish=day % 3 != 0))
        clock.advance(60)
    service.flush()
    counting.calls.clear()
    html = client.get("/jobmetrics/").get_data(as_text=True)
    assert counting.calls == {"list_jobs": 1, "list_clients_of": 1}
    counting.calls.clear()
    listed = client.get("/jobmetrics/api/runs").get_json()["runs"]
    assert counting.calls == {"list_jobs": 1, "list_clients_of": 1}
    assert listed == [job.model_dump(mode="json") for job in service.list_job_runs()]
    expected = []
    for run in reversed(runs):
        clients = service.list_client_runs(run)
        done = sum(1 for c in clients if c.status is not Status.RUNNING)
        expected.append([run, f"{done} / {len(clients)}"])
    assert [cells[0:1] + cells[4:5] for cells in _runs_cells(html)] == expected
    assert [cells[4] for cells in _runs_cells(html)] == ["2 / 3", "3 / 3", "3 / 3", "2 / 3", "3 / 3", "3 / 3"]


def test_runs_list_of_finished_runs_reads_no_client_row(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """With no run Running, the runs list is read from the job rows alone."""
    counting = CountingStore(service.store)
    service.store = counting  # type: ignore[assignment]
    _two_jobs(service, clock, finish_second=True)
    service.flush()
    counting.calls.clear()
    assert client.get("/jobmetrics/").status_code == 200
    assert counting.calls == {"list_jobs": 1}


def test_run_page_reads_the_job_row_and_its_clients_once(
    client: FlaskClient, service: MetricsService, clock: Clock, make_store: MakeStore
) -> None:
    """The run page, its summary and /api/runs/<id> of a running job each read its row once and
    its client rows once (memory, SQLite, Redis), and show what the service gives for it."""
    counting = CountingStore(make_store(clock=clock.timestamp))
    service.store = counting  # type: ignore[assignment]
    run = _job(service, clock)
    service.flush()
    service.update_client_metrics(run, "globex", {"Total Tokens": 100})  # still in the buffer
    for path in (f"/jobmetrics/runs/{run}", f"/jobmetrics/runs/{run}/summary"):
        counting.calls.clear()
        assert client.get(path).status_code == 200
        assert counting.calls == {"get_job": 1, "list_clients": 1}
    counting.calls.clear()
    answer = client.get(f"/jobmetrics/api/runs/{run}").get_json()
    assert counting.calls == {"get_job": 1, "list_clients": 1}
    job = service.get_job_run(run)
    assert job is not None and job.metrics["Total Tokens"] == 123456 + 900 + 100
    assert answer["job"] == job.model_dump(mode="json")
    assert answer["clients"] == [api.client_summary(c) for c in service.list_client_runs(run)]


def test_client_page_reads_the_job_rows_and_the_clients_rows_in_one_call(
    client: FlaskClient, service: MetricsService, clock: Clock, make_store: MakeStore
) -> None:
    """The client page makes two store reads whatever the number of runs (memory, SQLite,
    Redis): the job rows, then the client's row in each run that has it; it lists the runs the
    service gives for the client."""
    counting = CountingStore(make_store(clock=clock.timestamp))
    service.store = counting  # type: ignore[assignment]
    runs = [_job(service, clock, f"2306{day:02d}-120000", finish=day % 2 == 0) for day in range(1, 6)]
    service.complete_client_metrics(service.start_job("230610-120000").run_id, "initech")
    service.flush()
    counting.calls.clear()
    html = client.get("/jobmetrics/clients/globex").get_data(as_text=True)
    assert counting.calls == {"list_jobs": 1, "get_clients_of": 1}
    assert re.findall(r'<tr id="run-([0-9-]+)"', html) == list(reversed(runs))
    for run in runs:
        found = service.get_client_run(run, "globex")
        assert found is not None
        assert cells(html, f"run-{run}")[:2] == [run, found.status.value]


def test_run_page_shows_each_client_row_with_its_numbers(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """The run page shows per-client status, start, duration and every counter, plus progress and charts."""
    run = _job(service, clock)
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert cells(html, "client-acme") == [
        "acme", "Completed", "12:00:00", "2m 05s",
        "1,200", "1,200", "1,100", "50", "40", "30", "123,456", "",
    ]  # fmt: skip
    assert cells(html, "client-globex")[:4] == ["globex", "Running", "12:00:00", "2m 05s"]
    assert cells(html, "client-globex")[4:11] == ["7", "7", "5", "0", "0", "0", "900"]
    assert cells(html, "client-hooli")[1] == "No Leads To Score"
    assert '<span id="jm-progress-text">2 / 3</span>' in html
    assert '<progress id="jm-progress" class="progress progress-running" value="2" max="3">' in html
    tokens = re.search(r'<svg id="chart-tokens".*?</svg>', html, re.S)
    scored = re.search(r'<svg id="chart-scored".*?</svg>', html, re.S)
    assert tokens is not None and scored is not None
    assert re.findall(r'data-client="([^"]+)" data-value="([^"]+)"', tokens.group(0)) == [
        ("acme", "123456"),
        ("globex", "900"),
    ]
    assert re.findall(r'data-client="([^"]+)" data-value="([^"]+)"', scored.group(0)) == [
        ("acme", "1130"),
        ("globex", "5"),
    ]


def test_every_value_is_escaped(client: FlaskClient, service: MetricsService) -> None:
    """Notes and echoed parameters containing markup are rendered as text, never as HTML."""
    evil = "<script>alert(1)</script>"
    job = service.start_job("230615-120000", notes=evil)
    service.update_client_metrics(job.run_id, "acme", {"Leads Processed": 1})
    service.complete_job_metrics(job.run_id, notes=evil)
    pages = [
        client.get(f"/jobmetrics/runs/{job.run_id}").get_data(as_text=True),
        client.get("/jobmetrics/").get_data(as_text=True),
        client.get("/jobmetrics/", query_string={"status": evil}).get_data(as_text=True),
    ]
    for html in pages:
        assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2]


def test_run_page_and_api_show_error_details_notes_and_progress_log(
    client: FlaskClient, service: MetricsService
) -> None:
    """A failed client's Error Details, System Notes and Progress Log are on the run page
    (escaped) and in the client's JSON; the run JSON has the error and notes, not the log;
    its client page shows the error."""
    run = service.start_job("230615-120000").run_id
    service.log_progress(run, "initech", "scoring <batch 1>")
    error = TimeoutError("model <timeout>")
    service.complete_client_metrics(run, "initech", error=error, notes="retry later")
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert 'id="details-initech"' in html
    assert "TimeoutError: model &lt;timeout&gt;" in html
    assert "retry later" in html
    assert "scoring &lt;batch 1&gt;" in html
    assert "<timeout>" not in html
    body = client.get(f"/jobmetrics/api/runs/{run}").get_json()
    initech = body["clients"][0]
    assert initech["error"] == "TimeoutError: model <timeout>"
    assert initech["notes"] == "retry later"
    assert initech["details"] is True
    assert "progress_log" not in initech
    assert "_last_update" not in initech["metrics"]
    whole = client.get(f"/jobmetrics/api/runs/{run}/clients/initech").get_json()["client"]
    assert whole == service.get_client_run(run, "initech").model_dump(mode="json")  # type: ignore[union-attr]
    assert "scoring <batch 1>" in whole["progress_log"]
    client_page = client.get("/jobmetrics/clients/initech").get_data(as_text=True)
    assert "TimeoutError: model &lt;timeout&gt;" in client_page


def test_run_page_answers_400_for_a_malformed_run_id_and_404_for_an_unknown_one(client: FlaskClient) -> None:
    """A malformed run ID is a 400 page, a well-formed unknown one a 404 page."""
    bad = client.get("/jobmetrics/runs/not-a-run")
    unknown = client.get("/jobmetrics/runs/230615-120000")
    assert bad.status_code == 400 and bad.mimetype == "text/html"
    assert "run ID" in bad.get_data(as_text=True) or "run id" in bad.get_data(as_text=True).lower()
    assert unknown.status_code == 404 and unknown.mimetype == "text/html"
    assert "No job run &#39;230615-120000&#39;" in unknown.get_data(as_text=True)


def test_client_form_run_id_redirects_to_the_run_page_at_that_client(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """``/runs/<base>-<client>`` redirects to the run page anchored at the client's row."""
    run = _job(service, clock)
    response = client.get(f"/jobmetrics/runs/{run}-acme")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/jobmetrics/runs/{run}#client-acme"


def test_auto_refresh_is_present_only_while_the_run_is_running(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """A Running run's page asks the script to re-fetch it; a finished run's page does not."""
    run = _job(service, clock)
    running = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert f'data-refresh-ms="{views.REFRESH_INTERVAL_MS}"' in running
    assert 'data-refresh-state="live"' in running
    assert "/jobmetrics/static/jobmetrics.js" in running
    service.complete_job_metrics(run)
    finished = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert "data-refresh-ms" not in finished
    assert 'data-refresh-state="off"' in finished
    assert '<span class="badge badge-failed">Failed</span>' in finished  # globex was closed as Failed


def test_pages_send_security_headers_and_static_files_are_served(client: FlaskClient) -> None:
    """Dashboard responses carry a strict CSP and no-store; the CSS and script are served."""
    response = client.get("/jobmetrics/")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("jobmetrics.css", "jobmetrics.js"):
        static = client.get(f"/jobmetrics/static/{name}")
        assert static.status_code == 200 and len(static.data) > 100
        static.close()


def test_a_store_failure_is_a_503(client: FlaskClient, service: MetricsService, monkeypatch: Any) -> None:
    """When the store is unavailable the dashboard answers 503 with JSON for the API; another
    store error is a 500 store_error."""
    error: StoreError = StoreUnavailableError("database is locked")

    def broken(**_: Any) -> list[Any]:
        raise error

    monkeypatch.setattr(service.store, "list_jobs", broken)
    response = client.get("/jobmetrics/api/runs")
    assert response.status_code == 503
    assert response.get_json()["error"] == "store_unavailable"
    assert client.get("/jobmetrics/").status_code == 503
    error = StoreError("the file is not an SQLite database")
    response = client.get("/jobmetrics/api/runs")
    assert response.status_code == 500
    assert response.get_json()["error"] == "store_error"


# -- JSON API ------------------------------------------------------------------------------------


def test_api_runs_lists_job_runs_in_pydantic_json_mode(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """``/api/runs`` returns ``{"runs": [JobRun...]}`` with ISO datetimes and metrics by field name."""
    run = _job(service, clock)
    body = client.get("/jobmetrics/api/runs").get_json()
    assert list(body) == ["runs"]
    [job] = body["runs"]
    assert job == service.get_job_run(run).model_dump(mode="json")  # type: ignore[union-attr]
    assert job["run_id"] == run
    assert job["status"] == "Running"
    assert job["start_time"] == "2023-06-15T12:00:00Z"
    assert job["metrics"]["Total Tokens"] == 124356
    assert job["metrics"]["Profiles Successfully Scored"] == 1105
    assert job["client_ids"] == ["acme", "globex", "hooli"]


def test_api_run_returns_the_job_and_its_clients(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """``/api/runs/<id>`` returns ``{"job": JobRun, "clients": [client summary...]}``: each
    client's numbers, times and previews of its texts."""
    run = _job(service, clock)
    body = client.get(f"/jobmetrics/api/runs/{run}").get_json()
    assert set(body) == {"job", "clients"}
    assert body["job"]["run_id"] == run
    assert [c["client_id"] for c in body["clients"]] == ["acme", "globex", "hooli"]
    acme = body["clients"][0]
    assert set(acme) == {
        "client_id", "status", "completed", "start_time", "end_time", "metrics",
        "error", "notes", "reason", "details",
    }  # fmt: skip
    assert acme["status"] == "Completed"
    assert acme["completed"] is True
    assert acme["start_time"] == "2023-06-15T12:00:00Z"
    assert acme["end_time"] == "2023-06-15T12:02:05Z"
    assert acme["metrics"]["Posts Successfully Scored"] == 30
    assert acme["metrics"]["Total Tokens"] == 123456
    assert body["clients"][2]["status"] == "No Leads To Score"


def test_api_run_answers_404_for_an_unknown_run_and_400_for_a_malformed_id(client: FlaskClient) -> None:
    """An unknown run is ``404 {"error": "not_found"}``; a malformed run ID a 400 with a message."""
    unknown = client.get("/jobmetrics/api/runs/230615-120000")
    assert unknown.status_code == 404
    assert unknown.get_json()["error"] == "not_found"
    bad = client.get("/jobmetrics/api/runs/991399-250000")
    assert bad.status_code == 400
    assert bad.get_json()["error"] == "invalid_run_id"
    assert bad.get_json()["message"]


def test_api_client_run_answers_404_for_an_unknown_client_and_400_for_a_malformed_one(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """``/api/runs/<id>/clients/<client>``: an unknown client or run is a 404, a malformed ID a 400."""
    run = _job(service, clock)
    assert client.get(f"/jobmetrics/api/runs/{run}/clients/nobody").status_code == 404
    assert client.get("/jobmetrics/api/runs/230615-090000/clients/acme").status_code == 404
    bad = client.get(f"/jobmetrics/api/runs/{run}/clients/%20")
    assert (bad.status_code, bad.get_json()["error"]) == (400, "invalid_client_id")
    assert client.get("/jobmetrics/api/runs/not-a-run/clients/acme").get_json()["error"] == "invalid_run_id"


def test_run_json_cuts_long_errors_and_notes_to_previews(
    client: FlaskClient, service: MetricsService
) -> None:
    """A client's error and notes past PREVIEW_CHARS are cut (ending in an ellipsis) in the run
    JSON; a failed client without an error has its latest note as its reason."""
    run = service.start_job().run_id
    long_error = "ValueError: " + "x" * 500
    service.complete_client_metrics(run, "acme", error=long_error, notes="n" * 400)
    service.update_client_metrics(run, "globex", {"Leads Processed": 1})
    service.complete_job_metrics(run)
    acme, globex = client.get(f"/jobmetrics/api/runs/{run}").get_json()["clients"]
    assert acme["error"] == long_error[: api.PREVIEW_CHARS - 1] + "\u2026"
    assert len(acme["notes"]) == api.PREVIEW_CHARS and acme["notes"].endswith("\u2026")
    assert globex["status"] == "Failed" and globex["error"] is None
    assert globex["reason"].startswith("Still running when job")


def test_run_json_of_a_big_run_leaves_out_progress_logs_and_grows_little_per_client(
    client: FlaskClient, service: MetricsService
) -> None:
    """The run JSON of a 500-client run holds no Progress Log and grows by less than
    RUN_JSON_BYTES_PER_CLIENT per client over a 300-client one (measured: 446)."""
    sizes = {}
    for count, run_id in ((300, "230615-120000"), (500, "230616-120000")):
        run = service.start_job(run_id).run_id
        score(service, run, client_ids(count))
        service.complete_job_metrics(run)
        body = client.get(f"/jobmetrics/api/runs/{run}").get_data()
        assert b"progress_log" not in body and b"completed with status" not in body
        sizes[count] = len(body)
    assert (sizes[500] - sizes[300]) / 200 < RUN_JSON_BYTES_PER_CLIENT


def test_api_runs_honours_limit_and_status(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """``limit`` keeps the newest N runs; ``status`` (aliases accepted) keeps runs with that status."""
    runs = []
    for hour in range(12, 16):
        runs.append(_job(service, clock, f"230615-{hour}0000", finish=hour % 2 == 0))
        clock.advance(3600)

    def ids(**query: str) -> list[str]:
        response = client.get("/jobmetrics/api/runs", query_string=query)
        assert response.status_code == 200
        return [job["run_id"] for job in response.get_json()["runs"]]

    assert ids() == runs[::-1]
    assert ids(limit="2") == [runs[3], runs[2]]
    assert ids(status="Running") == [runs[3], runs[1]]
    assert ids(status="in progress", limit="1") == [runs[3]]
    assert ids(status="completed with errors") == [runs[2], runs[0]]
    assert ids(status="Failed") == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "100000"}, "invalid_limit"),
        ({"status": "Exploded"}, "invalid_status"),
    ],
)
def test_api_runs_rejects_a_bad_limit_or_status(
    client: FlaskClient, query: dict[str, str], code: str
) -> None:
    """A limit outside 1..1000 or an unknown status is a 400 naming the problem."""
    response = client.get("/jobmetrics/api/runs", query_string=query)
    assert response.status_code == 400
    assert response.get_json()["error"] == code
    assert next(iter(query)) in response.get_json()["message"]


# -- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/jobmetrics/", "/jobmetrics/api/runs", "/jobmetrics/metrics"])
def test_a_token_is_required_when_configured(make_app: AppFactory, path: str) -> None:
    """With a token, no or a wrong bearer token is a 401 with a Bearer challenge; the right one is 200."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="s3cret-token").test_client()
    missing = client.get(path)
    wrong = client.get(path, headers={"Authorization": "Bearer s3cret-tokeN"})
    basic = client.get(path, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
    right = client.get(path, headers={"Authorization": "Bearer s3cret-token"})
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "s3cret-token" not in response.get_data(as_text=True)
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert right.status_code == 200


def test_unauthorized_api_answers_json_and_pages_answer_html(make_app: AppFactory) -> None:
    """A 401 is JSON for the API and a short page for the HTML views."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="s3cret-token").test_client()
    api = client.get("/jobmetrics/api/runs")
    page = client.get("/jobmetrics/runs/230615-120000")
    assert api.get_json() == {"error": "unauthorized", "message": api.get_json()["message"]}
    assert page.mimetype == "text/html" and "401" in page.get_data(as_text=True)


def test_a_token_also_admits_remote_clients(make_app: AppFactory) -> None:
    """With a token configured, a remote client with the right token is answered."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="t").test_client()
    response = client.get(
        "/jobmetrics/api/runs",
        headers={"Authorization": "Bearer t"},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("address", "status"),
    [("127.0.0.1", 200), ("127.8.9.10", 200), ("::1", 200), ("10.1.2.3", 403), ("::ffff:10.0.0.1", 403)],
)
def test_without_a_token_only_loopback_clients_are_answered(
    client: FlaskClient, address: str, status: int
) -> None:
    """Without a token the dashboard answers 127.0.0.0/8 and ::1, and 403s everyone else."""
    for path in ("/jobmetrics/", "/jobmetrics/api/runs"):
        response = client.get(path, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == status
    if status == 403:
        refused = client.get("/jobmetrics/api/runs", environ_base={"REMOTE_ADDR": address})
        assert refused.get_json()["error"] == "forbidden"


def test_without_a_token_a_request_forwarded_by_a_local_proxy_is_refused(client: FlaskClient) -> None:
    """A loopback request carrying X-Forwarded-For came through a proxy: 403 without a token."""
    response = client.get("/jobmetrics/api/runs", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403
    assert "proxy" in response.get_json()["message"]


def test_the_dashboard_is_not_mounted_when_off(make_app: AppFactory) -> None:
    """With ``JOBMETRICS_DASHBOARD`` off every dashboard URL is a 404."""
    client = make_app(JOBMETRICS_DASHBOARD=False).test_client()
    for path in ("/jobmetrics/", "/jobmetrics/api/runs", "/jobmetrics/metrics"):
        assert client.get(path).status_code == 404


# -- a run at size: order, pages, charts -----------------------------------------------------------


def test_run_page_lists_failed_and_running_clients_first_and_pages_past_page_size(
    client: FlaskClient, service: MetricsService
) -> None:
    """The table starts with failed, then running clients; past PAGE_SIZE rows it pages (?page=)."""
    ids = client_ids(130)
    run = service.start_job().run_id
    score(service, run, ids)  # every FAIL_EVERY-th client stays Running
    service.flush()
    running = expected_failures(ids)
    first = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    rows = re.findall(r'<tr id="client-([^"]+)"', first)
    assert len(rows) == PAGE_SIZE
    assert rows[: len(running)] == sorted(running, key=str.casefold)
    assert f"1\N{EN DASH}{PAGE_SIZE} of 130" in first and "page=2" in first
    second = client.get(f"/jobmetrics/runs/{run}?page=2").get_data(as_text=True)
    assert len(re.findall(r'<tr id="client-', second)) == 130 - PAGE_SIZE
    assert client.get(f"/jobmetrics/runs/{run}?page=0").status_code == 400


def test_charts_draw_the_top_clients_and_one_line_for_the_others(
    client: FlaskClient, service: MetricsService
) -> None:
    """With more than TOP_BARS clients a chart draws the largest ones and sums the rest in a line
    without a bar, full names kept."""
    ids = client_ids(40)
    run = service.start_job().run_id
    score(service, run, ids)
    service.complete_job_metrics(run)
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    tokens = re.search(r'<svg id="chart-tokens".*?</svg>', html, re.S)
    assert tokens is not None
    assert len(re.findall(r'<rect class="bar ', tokens.group(0))) == TOP_BARS
    assert f"{40 - TOP_BARS} other clients" in tokens.group(0)
    assert len(re.findall(r'<rect class="chart-track"', tokens.group(0))) == TOP_BARS  # none for the others
    long_names = re.findall(r"<title>(A-Very-Long-Tenant-Name-Holdings-\d+): ", tokens.group(0))
    labels = re.findall(r'<text class="chart-label"[^>]*>([^<]+)</text>', tokens.group(0))
    assert long_names and len(set(labels)) == len(labels)  # elided in the middle: still distinct


def test_shorten_keeps_both_ends_of_a_long_name() -> None:
    """A long label keeps its start and its distinguishing end around one ellipsis."""
    assert shorten("A-Very-Long-Tenant-Name-Holdings-031", 20) == "A-Very-Lo…ldings-031"
    assert shorten("acme", 20) == "acme"


def test_a_failed_clients_reason_is_shown_under_its_status(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """A client closed as Failed shows the closing note under its status badge."""
    run = _job(service, clock, finish=True)  # globex was still running: closed as Failed
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert "closed as Failed." in cells(html, "client-globex")[1]
    assert cells(html, "client-acme")[1] == "Completed"


def test_an_error_column_appears_when_a_client_reports_error_details(
    client: FlaskClient, service: MetricsService
) -> None:
    """A client's Error Details get their own column next to the status, and are not repeated under it."""
    run = service.start_job().run_id
    service.complete_client_metrics(run, "acme", error="HTTP 429 from scoring API")
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert '<th data-key="error" data-type="text">Error</th>' in html
    assert cells(html, "client-acme")[1:3] == ["Failed", "HTTP 429 from scoring API"]


def test_long_client_ids_lose_their_middle_in_the_table_and_keep_the_whole_link(
    client: FlaskClient, service: MetricsService
) -> None:
    """Long IDs sharing a prefix show distinct middle-elided names; the link, its title and its
    accessible name stay whole."""
    ids = [f"A-Very-Long-Tenant-Name-Holdings-{i:03d}" for i in range(3)]
    run = service.start_job().run_id
    for client_id in [*ids, "acme"]:
        service.complete_client_metrics(run, client_id, {"Leads Processed": 1})
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    short = re.findall(r'<span class="name-short">([^<]+)</span>', html)
    assert short == [shorten(c, NAME_CHARS) for c in ids] and len(set(short)) == 3
    assert all(len(name) == NAME_CHARS for name in short)
    for client_id in ids:
        assert f'href="/jobmetrics/clients/{client_id}" title="{client_id}" aria-label="{client_id}">' in html
        assert f'<span class="name-full">{client_id}</span>' in html
    assert 'title="acme">acme</a>' in html


def test_details_list_clients_with_an_error_or_notes_not_every_progress_log(
    client: FlaskClient, service: MetricsService
) -> None:
    """Under the table: clients with an error or notes, not every client with only the service's log lines."""
    run = service.start_job().run_id
    service.complete_client_metrics(run, "acme", {"Leads Processed": 3})
    service.complete_client_metrics(run, "globex", {"Leads Processed": 3}, notes="re-run tomorrow")
    service.complete_client_metrics(run, "initech", error="model timeout")
    html = client.get(f"/jobmetrics/runs/{run}").get_data(as_text=True)
    assert re.findall(r'<details class="client-details" id="details-([^"]+)"', html) == ["initech", "globex"]


def test_client_page_shows_each_runs_error_notes_and_progress_log(
    client: FlaskClient, service: MetricsService
) -> None:
    """The client page lists, per run, its Error Details, notes and Progress Log; the newest and
    the newest failed are open."""
    old = service.start_job("230615-120000").run_id
    service.log_progress(old, "initech", "fetched 40 leads")
    service.complete_client_metrics(old, "initech", error="model timeout")
    middle = service.start_job("230616-120000").run_id
    service.complete_client_metrics(middle, "initech", {"Leads Processed": 2}, notes="quiet night")
    new = service.start_job("230617-120000").run_id
    service.complete_client_metrics(new, "initech", {"Leads Processed": 3}, notes="all good")
    html = client.get("/jobmetrics/clients/initech").get_data(as_text=True)
    details = re.findall(r'<details class="client-details" id="details-([0-9-]+)"( open)?>', html)
    assert details == [(new, " open"), (middle, ""), (old, " open")]
    old_part = html[html.index(f'id="details-{old}"') :]
    assert "model timeout" in old_part and "fetched 40 leads" in old_part


# -- client page and trends ------------------------------------------------------------------------


def test_client_page_lists_the_clients_runs_with_links_and_trends(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """/clients/<id> lists the client's runs newest first, each linking to its row, with trend charts."""
    old, new = _two_jobs(service, clock)
    html = client.get("/jobmetrics/clients/globex").get_data(as_text=True)
    assert re.findall(r'<tr id="run-([0-9-]+)"', html) == [new, old]
    assert cells(html, f"run-{old}")[:2] == [old, "Failed"]
    assert cells(html, f"run-{new}")[5:7] == ["5", "900"]  # items scored, tokens
    assert f'href="/jobmetrics/runs/{old}-globex"' in html
    for chart in ("client-tokens", "client-scored", "client-duration"):
        assert f'<svg id="{chart}"' in html
    assert len(re.findall(r'<rect class="col ', html)) == 6  # two runs in each of three charts


def test_client_page_answers_404_for_an_unknown_client_and_400_for_a_malformed_one(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """A client with no run is a 404 page that links back; a malformed client ID is a 400."""
    _job(service, clock)
    missing = client.get("/jobmetrics/clients/nobody")
    assert missing.status_code == 404 and "Back to the runs" in missing.get_data(as_text=True)
    assert client.get("/jobmetrics/clients/-bad-").status_code == 400


def test_runs_list_draws_trends_per_run_oldest_first(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """The runs list has tokens, items scored, failed clients and duration charts, one column per run."""
    first, second = _two_jobs(service, clock, finish_second=True)
    html = client.get("/jobmetrics/").get_data(as_text=True)
    for chart in ("trend-tokens", "trend-scored", "trend-failed", "trend-duration"):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', html, re.S)
        assert svg is not None
        assert re.findall(r'<a href="/jobmetrics/runs/([0-9-]+)"', svg.group(0)) == [first, second]
    failed = re.search(r'<svg id="trend-failed".*?</svg>', html, re.S)
    assert failed is not None and f"<title>{first}: 1</title>" in failed.group(0)


def test_runs_list_filters_by_start_date(client: FlaskClient, service: MetricsService, clock: Clock) -> None:
    """?since= and ?until= keep the runs started on those UTC dates; a bad date is a 400."""
    service.start_job("230615-120000")
    clock.advance(86400)
    service.start_job("230616-120000")
    assert run_links(client.get("/jobmetrics/?since=2023-06-16").get_data(as_text=True)) == ["230616-120000"]
    assert run_links(client.get("/jobmetrics/?until=2023-06-15").get_data(as_text=True)) == ["230615-120000"]
    empty = client.get("/jobmetrics/?since=2023-07-01").get_data(as_text=True)
    assert "No job runs match" in empty and "Show all runs" in empty
    assert client.get("/jobmetrics/?since=June").status_code == 400
    assert client.get("/jobmetrics/?since=2023-06-16&until=2023-06-15").status_code == 400


def test_an_empty_runs_list_says_how_to_make_a_run(client: FlaskClient) -> None:
    """With no runs at all the list shows how to start one."""
    html = client.get("/jobmetrics/").get_data(as_text=True)
    assert "No job runs yet." in html and "jobmetrics.start_job(" in html


# -- cheap refresh -------------------------------------------------------------------------------


def test_api_answers_304_while_a_run_is_unchanged(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """The run API sends an ETag; If-None-Match with it is a 304 until the run changes."""
    run = _job(service, clock)
    first = client.get(f"/jobmetrics/api/runs/{run}")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache, private"
    again = client.get(f"/jobmetrics/api/runs/{run}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    service.update_client_metrics(run, "globex", {"Leads Processed": 1})
    changed = client.get(f"/jobmetrics/api/runs/{run}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    listed = client.get("/jobmetrics/api/runs")
    assert (
        client.get("/jobmetrics/api/runs", headers={"If-None-Match": listed.headers["ETag"]}).status_code
        == 304
    )


def test_run_summary_is_the_fragment_the_live_refresh_swaps_in(
    client: FlaskClient, service: MetricsService, clock: Clock
) -> None:
    """/runs/<id>/summary is the status, cards and charts alone, with the refresh marker while running."""
    run = _job(service, clock)
    html = client.get(f"/jobmetrics/runs/{run}/summary").get_data(as_text=True)
    assert html.lstrip().startswith('<div id="jm-summary"') and "<table" not in html
    assert f'data-poll="/jobmetrics/api/runs/{run}"' in html and "data-refresh-ms" in html
    service.complete_job_metrics(run)
    assert "data-refresh-ms" not in client.get(f"/jobmetrics/runs/{run}/summary").get_data(as_text=True)


# -- access: login cookie and loopback ---------------------------------------------------------------


def test_login_form_sets_a_secure_httponly_samesite_cookie_that_admits_the_browser(
    make_app: AppFactory,
) -> None:
    """The right token in the login form sets the session cookie (not the token) and later requests pass."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="s3cret-token").test_client()
    assert client.get("/jobmetrics/login").status_code == 200
    response = client.post(
        "/jobmetrics/login", data={"token": "s3cret-token", "next": "/jobmetrics/api/runs"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/jobmetrics/api/runs"
    cookie = response.headers["Set-Cookie"]
    value = cookie.removeprefix(f"{COOKIE_NAME}=").partition(";")[0]
    assert session_serializer("s3cret-token").loads(value, max_age=43_200) == "dashboard"
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/jobmetrics", "Max-Age=43200"):
        assert attribute in cookie
    assert "s3cret-token" not in cookie
    assert client.get("/jobmetrics/api/runs").status_code == 200
    client.post("/jobmetrics/logout")
    assert client.get("/jobmetrics/api/runs").status_code == 401


def _signed_ago(seconds: int) -> type[TimestampSigner]:
    """A signer whose clock is ``seconds`` behind the system's (ahead if negative)."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    return Signer


def _with_cookie(app: Flask, value: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie(COOKIE_NAME, value, path="/jobmetrics")
    return client


def test_a_login_cookie_within_its_max_age_is_accepted(make_app: AppFactory) -> None:
    """A cookie signed with the token half an hour ago passes under a one-hour max age."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_SESSION_MAX_AGE=3600)
    value = session_serializer("t", signer=_signed_ago(1800)).dumps("dashboard")
    assert _with_cookie(app, value).get("/jobmetrics/").status_code == 200


def test_a_login_cookie_older_than_its_max_age_gets_the_sign_in_page(make_app: AppFactory) -> None:
    """An authentic cookie past the max age is a 401 with the sign-in link and says the session expired."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_SESSION_MAX_AGE=3600)
    value = session_serializer("t", signer=_signed_ago(3601)).dumps("dashboard")
    client = _with_cookie(app, value)
    page = client.get("/jobmetrics/runs/230615-120000")
    assert page.status_code == 401 and page.headers["WWW-Authenticate"] == 'Bearer realm="jobmetrics"'
    html = page.get_data(as_text=True)
    assert "session has expired" in html
    assert 'href="/jobmetrics/login?next=/jobmetrics/runs/230615-120000"' in html
    assert client.get("/jobmetrics/api/runs").get_json()["error"] == "unauthorized"


@pytest.mark.parametrize(("ahead", "status"), [(10, 200), (3600, 401)])
def test_a_login_cookie_stamped_ahead_passes_within_the_clock_skew_only(
    make_app: AppFactory, ahead: int, status: int
) -> None:
    """A cookie from a host whose clock runs seconds ahead passes; one stamped an hour ahead does not."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_SESSION_MAX_AGE=3600)
    value = session_serializer("t", signer=_signed_ago(-ahead)).dumps("dashboard")
    assert _with_cookie(app, value).get("/jobmetrics/").status_code == status


def _flip(text: str, at: int) -> str:
    return text[:at] + ("B" if text[at] == "A" else "A") + text[at + 1 :]


def _restamped(value: str) -> str:
    """The cookie with its timestamp moved to now, its signature kept."""
    payload, _, signature = value.split(".")
    return ".".join([payload, base64_encode(int_to_bytes(int(time.time()))).decode(), signature])


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda value: _flip(value, len(value) - 10), id="signature"),
        pytest.param(lambda value: _flip(value, 1), id="payload"),
        pytest.param(_restamped, id="timestamp"),
        pytest.param(lambda value: value.rsplit(".", 1)[0], id="no-signature"),
        pytest.param(lambda value: "0" * 64, id="not-signed"),
    ],
)
def test_a_tampered_login_cookie_is_no_cookie(make_app: AppFactory, forge: Callable[[str], str]) -> None:
    """A cookie changed in any part (an expired one restamped, too) is refused like a missing one."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_SESSION_MAX_AGE=3600)
    value = session_serializer("t", signer=_signed_ago(7200)).dumps("dashboard")
    page = _with_cookie(app, forge(value)).get("/jobmetrics/")
    assert page.status_code == 401 and "needs its token" in page.get_data(as_text=True)


def test_a_login_cookie_made_with_another_token_is_refused(make_app: AppFactory) -> None:
    """Changing the token signs every browser out: a cookie signed with the old one is a 401."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="new-token")
    value = session_serializer("old-token").dumps("dashboard")
    page = _with_cookie(app, value).get("/jobmetrics/")
    assert page.status_code == 401 and "needs its token" in page.get_data(as_text=True)


def test_the_login_form_says_how_long_the_browser_stays_signed_in(make_app: AppFactory) -> None:
    """The form names the session's length, and the cookie it sets carries the same max age."""
    client = make_app(
        JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_SESSION_MAX_AGE="5400"
    ).test_client()
    assert "stays signed in for 1h 30m" in client.get("/jobmetrics/login").get_data(as_text=True)
    assert "Max-Age=5400;" in client.post("/jobmetrics/login", data={"token": "t"}).headers["Set-Cookie"]


def test_login_refuses_a_wrong_token_a_foreign_origin_and_a_foreign_next(make_app: AppFactory) -> None:
    """A wrong token is a 401 form, a cross-site post a 403, and ``next`` never leaves the dashboard."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="s3cret-token").test_client()
    wrong = client.post("/jobmetrics/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "not the dashboard" in wrong.get_data(as_text=True)
    assert "Set-Cookie" not in wrong.headers
    foreign = client.post(
        "/jobmetrics/login", data={"token": "s3cret-token"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "Set-Cookie" not in foreign.headers
    fetched = client.post(
        "/jobmetrics/login", data={"token": "s3cret-token"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert fetched.status_code == 403
    away = client.post("/jobmetrics/login", data={"token": "s3cret-token", "next": "https://evil.example/"})
    assert away.headers["Location"] == "/jobmetrics/"


def test_refusal_pages_link_to_the_login_form_not_to_another_refusal(make_app: AppFactory) -> None:
    """A 401 page offers the login form (returning to the page asked for); a 403 page explains the way in."""
    client = make_app(JOBMETRICS_DASHBOARD_TOKEN="t").test_client()
    page = client.get("/jobmetrics/runs/230615-120000").get_data(as_text=True)
    assert 'href="/jobmetrics/login?next=/jobmetrics/runs/230615-120000"' in page
    assert "Back to the runs" not in page
    remote = make_app().test_client().get("/jobmetrics/", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    text = remote.get_data(as_text=True)
    assert remote.status_code == 403 and "SSH tunnel" in text and "Back to the runs" not in text


@pytest.mark.parametrize(
    ("loopback", "address", "headers", "status"),
    [
        (True, "127.0.0.1", {}, 200),
        (True, "::1", {}, 200),
        (True, "127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, 401),
        (True, "10.1.2.3", {}, 401),
        (False, "127.0.0.1", {}, 401),
    ],
)
def test_dashboard_loopback_admits_direct_loopback_browsers_despite_a_token(
    make_app: AppFactory, loopback: bool, address: str, headers: dict[str, str], status: int
) -> None:
    """With JOBMETRICS_DASHBOARD_LOOPBACK a direct loopback client needs no token; others still do."""
    app = make_app(JOBMETRICS_DASHBOARD_TOKEN="t", JOBMETRICS_DASHBOARD_LOOPBACK=loopback)
    response = app.test_client().get("/jobmetrics/", environ_base={"REMOTE_ADDR": address}, headers=headers)
    assert response.status_code == status
