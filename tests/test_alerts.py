"""Alerts to a Slack-compatible webhook, against a local HTTP receiver (real HTTP), with an
injected clock: batched per minute, retried with backoff, never on the caller's thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from flask_jobmetrics import Status
from flask_jobmetrics.alerts import Alerter
from flask_jobmetrics.state import get_state
from flask_jobmetrics.testing import FakeAirtable

from .support import AppFactory, Clock, airtable_config

RUN = "230615-120000"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POSTed JSON body, answers the queued
    statuses first (then 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[tuple[int, dict[str, str]]] = []
        self.received = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status, headers = receiver.statuses.pop(0) if receiver.statuses else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                receiver.received.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def alerter(receiver: Receiver, clock: Clock) -> Iterator[Alerter]:
    """An alerter posting to ``receiver`` on the test clock, driven by ``run_once`` (no thread)."""
    made = Alerter(receiver.url, clock=clock.timestamp, timeout=(2, 2), background=False)
    yield made
    made.stop()


def test_the_alerts_of_a_minute_go_as_one_post(alerter: Alerter, receiver: Receiver, clock: Clock) -> None:
    """Alerts within a minute are one Slack-compatible {"text": ...} POST, sent once the minute is over."""
    alerter.client_failed(RUN, "initech", "ModelTimeout: no answer")
    clock.advance(20)
    alerter.run_stalled(RUN, ["globex"])
    clock.advance(20)
    assert alerter.run_once() == 0 and receiver.bodies == []  # the minute is not over
    clock.advance(21)
    assert alerter.run_once() == 2
    assert receiver.texts() == [
        "flask_jobmetrics:\n"
        f"Client run failed: initech in run {RUN}: ModelTimeout: no answer\n"
        f"Job run stalled and was closed: {RUN}; still running, now Failed: globex"
    ]
    assert alerter.pending() == 0 and alerter.run_once() == 0


def test_a_failing_receiver_is_retried_with_backoff(
    alerter: Alerter, receiver: Receiver, clock: Clock
) -> None:
    """A 503 and then a lost connection are retried later and later; the alerts go out once."""
    receiver.statuses = [(503, {})]
    alerter.job_failed(RUN, "scorer crashed")
    clock.advance(61)
    assert alerter.run_once() == 0
    first = alerter.due_in()
    assert first is not None and 4 <= first <= 6
    assert alerter.run_once() == 0 and len(receiver.bodies) == 1  # backing off: no request
    clock.advance(first + 0.001)
    down = Alerter(
        "http://127.0.0.1:9/unreachable", clock=clock.timestamp, timeout=(0.5, 0.5), background=False
    )
    down.add("nobody listens")
    clock.advance(61)
    assert down.run_once() == 0 and down.pending() == 1
    clock.advance((down.due_in() or 0) + 0.001)
    assert down.run_once() == 0
    second = down.due_in()
    assert second is not None and 8 <= second <= 12  # doubled
    assert alerter.run_once() == 1
    assert receiver.texts()[-1] == f"flask_jobmetrics:\nJob run failed: {RUN}: scorer crashed"
    assert len(receiver.bodies) == 2


def test_retry_after_of_a_429_is_honoured(alerter: Alerter, receiver: Receiver, clock: Clock) -> None:
    """A 429 with Retry-After: 120 waits that long before the next try."""
    receiver.statuses = [(429, {"Retry-After": "120"})]
    alerter.add("one")
    clock.advance(61)
    alerter.run_once()
    assert (alerter.due_in() or 0) >= 119
    clock.advance(120)
    assert alerter.run_once() == 1


def test_a_refused_post_is_dropped_and_logged(
    alerter: Alerter, receiver: Receiver, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 is not retried: the alerts are logged as dropped and the next batch goes out."""
    receiver.statuses = [(400, {})]
    alerter.add("refused")
    clock.advance(61)
    assert alerter.run_once() == 0 and alerter.pending() == 0
    assert "refused the alerts (HTTP 400" in caplog.text
    alerter.add("next")
    clock.advance(61)
    assert alerter.run_once() == 1 and receiver.texts()[-1].endswith("next")


def test_alerts_never_post_on_the_callers_thread(receiver: Receiver) -> None:
    """add() only queues; the background thread posts (here with a window of 0 s)."""
    posted_from: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(lambda r, *a, **k: posted_from.append(threading.current_thread().name))
    alerter = Alerter(receiver.url, window=0.0, session=session, timeout=(2, 2))
    try:
        alerter.add("from a thread")
        assert receiver.received.wait(timeout=10)
    finally:
        alerter.stop()
    assert posted_from == ["jobmetrics-alerts"]
    assert receiver.texts() == ["flask_jobmetrics:\nfrom a thread"]


def test_the_oldest_alerts_give_way_when_too_many_wait(receiver: Receiver, clock: Clock) -> None:
    """Beyond max_pending the oldest alerts are dropped, and the post says how many."""
    alerter = Alerter(receiver.url, clock=clock.timestamp, max_pending=3, timeout=(2, 2), background=False)
    for n in range(5):
        alerter.add(f"alert {n}")
    clock.advance(61)
    assert alerter.run_once() == 3
    alerter.stop()
    assert receiver.texts() == ["flask_jobmetrics:\nalert 2\nalert 3\nalert 4\n(2 older alerts dropped)"]


def _adding_during_posts(alerter: Alerter, *batches: list[str]) -> requests.Session:
    """A session that, as each response arrives (the post still under way), adds the next batch."""
    session = requests.Session()
    waiting = list(batches)

    def add(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        for line in waiting.pop(0) if waiting else []:
            alerter.add(line)

    session.hooks["response"].append(add)
    return session


def test_alerts_added_during_a_post_are_kept_when_the_queue_is_full(receiver: Receiver, clock: Clock) -> None:
    """Lines added while a full queue is being posted wait for the next post; none is lost uncounted."""
    alerter = Alerter(receiver.url, clock=clock.timestamp, max_pending=3, timeout=(2, 2), background=False)
    alerter.session = _adding_during_posts(alerter, ["new 0", "new 1", "new 2"])
    for n in range(3):
        alerter.add(f"alert {n}")
    clock.advance(61)
    assert alerter.run_once() == 3
    assert alerter.pending() == 3
    clock.advance(61)
    assert alerter.run_once() == 3
    assert receiver.texts() == [
        "flask_jobmetrics:\nalert 0\nalert 1\nalert 2",
        "flask_jobmetrics:\nnew 0\nnew 1\nnew 2",
    ]


def test_a_retried_batch_goes_back_in_front_and_overflow_is_counted(receiver: Receiver, clock: Clock) -> None:
    """A batch to retry is queued again before the lines added during its post; what no longer
    fits gives way oldest first and the next post counts it."""
    alerter = Alerter(receiver.url, clock=clock.timestamp, max_pending=3, timeout=(2, 2), background=False)
    alerter.session = _adding_during_posts(alerter, ["new 0", "new 1"])
    receiver.statuses = [(503, {})]
    alerter.add("alert 0")
    alerter.add("alert 1")
    clock.advance(61)
    assert alerter.run_once() == 0 and alerter.pending() == 3
    clock.advance((alerter.due_in() or 0) + 0.001)
    assert alerter.run_once() == 3
    assert receiver.texts()[-1] == "flask_jobmetrics:\nalert 1\nnew 0\nnew 1\n(1 older alerts dropped)"


# -- from the app ---------------------------------------------------------------------------


def posted_lines(app: Flask, receiver: Receiver, count: int) -> list[str]:
    """Post the app's waiting alerts now; ``count`` lines go out as one post: its lines."""
    alerter = get_state(app).alerter
    assert alerter is not None and alerter.run_once(force=True) == count
    (text,) = receiver.texts()
    return text.splitlines()[1:]


def test_the_app_alerts_on_failed_clients_failed_and_stalled_jobs(
    make_app: AppFactory, receiver: Receiver, clock: Clock
) -> None:
    """With JOBMETRICS_ALERT_WEBHOOK_URL a failed client, a failed job and a stalled job each
    post a line, with a link to the run's dashboard page when SERVER_NAME is set."""
    app = make_app(
        JOBMETRICS_ALERT_WEBHOOK_URL=receiver.url,
        JOBMETRICS_DASHBOARD=True,
        JOBMETRICS_STALE_AFTER=3600,
        SERVER_NAME="ops.example.com",
        clock=clock,
    )
    service = get_state(app).service
    service.complete_client_metrics(RUN, "initech", error=TimeoutError("no answer"))
    service.complete_job_metrics(RUN, success=False, notes="aborted")
    stalled = "230616-120000"
    service.start_job(stalled)
    service.update_client_metrics(stalled, "globex", {"Leads Processed": 1})
    service.flush()
    clock.advance(3601)
    assert service.close_stalled() == [stalled]
    link = f"<http://ops.example.com/jobmetrics/runs/{RUN}|open run {RUN}>"
    assert posted_lines(app, receiver, 3) == [
        f"Client run failed: initech in run {RUN}: TimeoutError: no answer {link}",
        f"Job run failed: {RUN}: aborted {link}",
        f"Job run stalled and was closed: {stalled}; still running, now Failed: globex"
        f" <http://ops.example.com/jobmetrics/runs/{stalled}|open run {stalled}>",
    ]
    assert get_state(app).service.get_job_run(stalled).status is Status.COMPLETED_WITH_ERRORS  # type: ignore[union-attr]


def test_a_dead_lettered_row_alerts(
    make_app: AppFactory, receiver: Receiver, tmp_path: Path, fake_airtable: FakeAirtable
) -> None:
    """A row Airtable refuses for good (422) posts an alert naming the row and the error."""
    app = make_app(
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
        **airtable_config(fake_airtable),
        JOBMETRICS_PROGRESS_INTERVAL=0,
        JOBMETRICS_ALERT_WEBHOOK_URL=receiver.url,
    )
    fake_airtable.fail_records(lambda fields: fields.get("Client ID") == "acme", message="bad value")
    service = get_state(app).service
    service.complete_client_metrics(RUN, "acme", {"Leads Processed": 1})
    report = service.flush(timeout=30)
    assert report.dead == 1
    assert posted_lines(app, receiver, 1) == [
        f"Airtable refused {RUN} acme in Client Run Results (dead-lettered):"
        " INVALID_VALUE_FOR_COLUMN: bad value"
    ]


def test_a_bad_alert_url_is_a_clear_error(make_app: AppFactory) -> None:
    """JOBMETRICS_ALERT_WEBHOOK_URL must be an http(s) URL: ConfigurationError names the key."""
    from flask_jobmetrics import ConfigurationError

    with pytest.raises(ConfigurationError, match="JOBMETRICS_ALERT_WEBHOOK_URL"):
        make_app(JOBMETRICS_ALERT_WEBHOOK_URL="hooks.slack.com/services/x")


def test_a_stalled_job_posts_one_line_naming_its_clients(
    make_app: AppFactory, receiver: Receiver, clock: Clock
) -> None:
    """A job the watchdog closes with 200 running clients posts one line (no line per client),
    naming the first ten clients and how many more; the client_failed signal is still sent
    for each."""
    from flask_jobmetrics import signals

    app = make_app(JOBMETRICS_ALERT_WEBHOOK_URL=receiver.url, JOBMETRICS_STALE_AFTER=3600, clock=clock)
    service = get_state(app).service
    clients = [f"client{n:03d}" for n in range(200)]
    for client in clients:
        service.update_client_metrics(RUN, client, {"Leads Processed": 1})
    service.flush()
    clock.advance(3601)
    failed: list[str] = []

    def heard(sender: Any, **kwargs: Any) -> None:
        failed.append(kwargs["client_id"])

    with signals.client_failed.connected_to(heard, sender=app):
        assert service.close_stalled() == [RUN]
    assert sorted(failed) == clients
    assert posted_lines(app, receiver, 1) == [
        f"Job run stalled and was closed: {RUN}; still running, now Failed: {', '.join(clients[:10])}"
        " and 190 more"
    ]
