"""current_run, the request hooks and bind_run (API.md §7)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_jobmetrics import InvalidClientIdError, bind_run, current_run
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.state import get_state

RUN = "230615-120000"
HEADERS = {"X-Run-ID": RUN, "X-Client-ID": "acme"}


def service_of(app: Flask) -> MetricsService:
    return get_state(app).service


def stored_metrics(app: Flask, run_id: str, client_id: str) -> dict[str, Any] | None:
    """The client row's fields in the store, after flushing this process's buffer."""
    service = service_of(app)
    service.flush()
    row = service.store.get_client(run_id, client_id)
    return None if row is None else dict(row.fields)


@pytest.fixture
def seen(app: Flask) -> dict[str, Any]:
    """Routes that report what current_run held; the dict collects it."""
    seen: dict[str, Any] = {}

    def record() -> dict[str, Any]:
        seen.update(run_id=current_run.run_id, client_id=current_run.client_id, problem=current_run.problem)
        return {"ok": True}

    app.add_url_rule("/plain", "plain", record)
    app.add_url_rule("/runs/<run_id>/clients/<client_id>", "by_view_args", lambda run_id, client_id: record())

    @app.post("/work")
    def work() -> dict[str, Any]:
        seen["added_before_end"] = service_of(app).buffer.stats().added
        for _ in range(3):
            current_run.add({"Leads Processed": 2})
        current_run.add({"profile_tokens": 100, "Profile Scoring Tokens": 50})
        seen["pending"] = current_run.pending
        return {"ok": True}

    return seen


def test_headers_give_the_run_context_and_the_response_echoes_the_run_id(
    client: FlaskClient, seen: dict[str, Any]
) -> None:
    """X-Run-ID and X-Client-ID fill current_run; the response carries X-Run-ID."""
    response = client.get("/plain", headers=HEADERS)
    assert response.status_code == 200
    assert (seen["run_id"], seen["client_id"], seen["problem"]) == (RUN, "acme", None)
    assert response.headers["X-Run-ID"] == RUN


def test_query_parameters_and_view_arguments_give_the_run_context(
    client: FlaskClient, seen: dict[str, Any]
) -> None:
    """runId/clientId, run_id/client_id query parameters and <run_id>/<client_id> view arguments work."""
    client.get(f"/plain?runId={RUN}&clientId=acme")
    assert (seen["run_id"], seen["client_id"]) == (RUN, "acme")
    client.get(f"/plain?run_id={RUN}&client_id=globex")
    assert (seen["run_id"], seen["client_id"]) == (RUN, "globex")
    response = client.get(f"/runs/{RUN}/clients/initech")
    assert (seen["run_id"], seen["client_id"]) == (RUN, "initech")
    assert response.headers["X-Run-ID"] == RUN


def test_a_client_form_run_id_gives_the_client(client: FlaskClient, seen: dict[str, Any]) -> None:
    """X-Run-ID in the client form <base>-<client> sets both IDs."""
    client.get("/plain", headers={"X-Run-ID": f"{RUN}-Guy-Wilson"})
    assert (seen["run_id"], seen["client_id"]) == (RUN, "Guy-Wilson")


def test_a_malformed_run_id_is_not_an_error_on_an_untracked_route(
    client: FlaskClient, seen: dict[str, Any]
) -> None:
    """A route that does not need the context answers; the problem names the header and value."""
    response = client.get("/plain", headers={"X-Run-ID": "yesterday", "X-Client-ID": "acme"})
    assert response.status_code == 200
    assert "X-Run-ID" not in response.headers
    assert seen["run_id"] is None
    assert "header X-Run-ID" in seen["problem"]
    assert "'yesterday'" in seen["problem"]


def test_sources_that_disagree_are_a_problem(client: FlaskClient, seen: dict[str, Any]) -> None:
    """A header naming client acme and a view argument naming globex leave no client."""
    client.get(f"/runs/{RUN}/clients/globex", headers={"X-Client-ID": "acme"})
    assert seen["client_id"] is None
    assert "header X-Client-ID 'acme'" in seen["problem"]
    assert "view argument client_id 'globex'" in seen["problem"]


def test_the_configured_header_names_are_used(tmp_path: Any) -> None:
    """JOBMETRICS_RUN_ID_HEADER renames the request and the response header."""
    from flask_jobmetrics import JobMetrics

    app = Flask("renamed", instance_path=str(tmp_path))
    app.config.update(
        JOBMETRICS_STORE_URL="memory://",
        JOBMETRICS_RUN_ID_HEADER="X-Job-Run",
        JOBMETRICS_CLIENT_ID_HEADER="X-Tenant",
    )
    ext = JobMetrics(app)
    app.add_url_rule("/ids", "ids", lambda: {"ids": [current_run.run_id, current_run.client_id]})
    try:
        response = app.test_client().get("/ids", headers={"X-Job-Run": RUN, "X-Tenant": "acme"})
        assert response.get_json() == {"ids": [RUN, "acme"]}
        assert response.headers["X-Job-Run"] == RUN
        assert "X-Run-ID" not in response.headers
    finally:
        ext.state(app).service.close()


def test_metrics_added_in_a_request_are_merged_once_at_its_end(
    app: Flask, client: FlaskClient, seen: dict[str, Any]
) -> None:
    """Several add() calls are combined by aggregation and reach the buffer as ONE update."""
    assert client.post("/work", headers=HEADERS).status_code == 200
    assert seen["added_before_end"] == 0
    assert seen["pending"] == {"Leads Processed": 6, "Profile Scoring Tokens": 150}
    assert service_of(app).buffer.stats().added == 1
    fields = stored_metrics(app, RUN, "acme")
    assert fields is not None
    assert (fields["Leads Processed"], fields["Profile Scoring Tokens"]) == (6, 150)


def test_add_without_a_valid_context_raises_the_problem(app: Flask, client: FlaskClient) -> None:
    """current_run.add() in a request without a client ID raises InvalidClientIdError naming the header."""
    problems: list[str] = []

    @app.get("/add")
    def add() -> str:
        try:
            current_run.add({"Leads Processed": 1})
        except InvalidClientIdError as exc:
            problems.append(str(exc))
        return "done"

    client.get("/add", headers={"X-Run-ID": RUN})
    assert len(problems) == 1
    assert "X-Client-ID" in problems[0]


def test_an_invalid_value_is_rejected_at_add_and_the_rest_is_merged(app: Flask, client: FlaskClient) -> None:
    """add() with one bad value merges the valid ones and never the bad one."""

    @app.get("/bad")
    def bad() -> str:
        current_run.add({"Leads Processed": 3, "Posts Processed": "lots"})
        return "ok"

    client.get("/bad", headers=HEADERS)
    fields = stored_metrics(app, RUN, "acme")
    assert fields is not None
    assert fields["Leads Processed"] == 3
    assert "Posts Processed" not in fields


# -- bind_run -------------------------------------------------------------------------------


def run_in_thread(target: Any) -> None:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=guarded)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_bind_run_in_a_thread_logs_with_the_run_and_merges_on_exit(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """In a thread without any context, bind_run's logger carries run/client and the block's metrics land."""

    def scorer() -> None:
        with bind_run(RUN, "acme", app=app, process="lead_scoring") as run:
            current_run.logger.info("scoring")
            current_run.add({"Profiles Examined": 10})
            run.add({"Profiles Examined": 5})
            assert service_of(app).buffer.stats().added == 0

    with caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
        run_in_thread(scorer)
    record = next(r for r in caplog.records if r.getMessage().endswith("scoring"))
    context = record.__dict__["jobmetrics"]
    assert context == {"scope": "CLIENT", "client_id": "acme", "run_id": RUN, "process": "lead_scoring"}
    assert "[CLIENT:acme] [RUN:230615-120000] [lead_scoring]" in record.getMessage()
    fields = stored_metrics(app, RUN, "acme")
    assert fields is not None
    assert fields["Profiles Examined for Scoring"] == 15


def test_bind_run_merges_what_was_added_before_an_exception(app: Flask) -> None:
    """Metrics added before a failure in the block still count; the exception propagates."""

    def scorer() -> None:
        with bind_run(RUN, "acme", app=app):
            current_run.add({"Leads Processed": 4})
            raise RuntimeError("scorer crashed")

    with pytest.raises(RuntimeError, match="scorer crashed"):
        scorer()
    fields = stored_metrics(app, RUN, "acme")
    assert fields is not None
    assert fields["Leads Processed"] == 4


def test_bind_run_contexts_of_two_threads_do_not_leak(app: Flask) -> None:
    """Two threads inside bind_run at the same time each see only their own run and client."""
    both_inside = threading.Barrier(2)
    seen: dict[str, tuple[str | None, str | None]] = {}

    def scorer(client_id: str) -> None:
        with bind_run(RUN, client_id, app=app):
            both_inside.wait()
            seen[client_id] = (current_run.run_id, current_run.client_id)
            current_run.add({"Leads Processed": len(client_id)})
            both_inside.wait()

    threads = [threading.Thread(target=scorer, args=(c,)) for c in ("acme", "globex")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"acme": (RUN, "acme"), "globex": (RUN, "globex")}
    acme, globex = stored_metrics(app, RUN, "acme"), stored_metrics(app, RUN, "globex")
    assert acme is not None
    assert globex is not None
    assert (acme["Leads Processed"], globex["Leads Processed"]) == (4, 6)


def test_bind_run_nests_and_restores_the_outer_context(app: Flask) -> None:
    """An inner bind_run is current inside its block only."""
    with bind_run(RUN, "acme", app=app):
        with bind_run(RUN, "globex", app=app):
            assert current_run.client_id == "globex"
        assert current_run.client_id == "acme"


def test_current_run_outside_any_context_raises(app: Flask) -> None:
    """current_run in a thread with no request and no bind_run raises RuntimeError naming bind_run."""

    def outside() -> None:
        with pytest.raises(RuntimeError, match="bind_run"):
            _ = current_run.run_id

    run_in_thread(outside)


def test_bind_run_checks_its_ids(app: Flask) -> None:
    """A malformed run ID raises at once; a client form that disagrees with client_id raises."""
    with pytest.raises(ValueError, match="run ID"), bind_run("last tuesday", "acme", app=app):
        pass
    with pytest.raises(ValueError, match="belongs to client"), bind_run(f"{RUN}-acme", "globex", app=app):
        pass


def test_added_values_are_normalized_once(tmp_path: Any) -> None:
    """current_run.add() normalizes a value when added; the end of the request merges it as it is."""
    from flask_jobmetrics import JobMetrics, MetricSpec

    calls: list[Any] = []

    def normalize(value: Any) -> int:
        calls.append(value)
        return int(value)

    app = Flask("once", instance_path=str(tmp_path))
    app.config.update(JOBMETRICS_STORE_URL="memory://")
    ext = JobMetrics(app)
    ext.register_metric(MetricSpec(name="widgets", field="Widgets", normalize=normalize))

    @app.post("/work")
    def work() -> dict[str, bool]:
        current_run.add({"widgets": "2"})
        current_run.add({"widgets": "3"})
        return {"ok": True}

    try:
        assert app.test_client().post("/work", headers=HEADERS).status_code == 200
        assert calls == ["2", "3"]
        fields = stored_metrics(app, RUN, "acme")
        assert fields is not None and fields["Widgets"] == 5
    finally:
        ext.state(app).service.close()


def test_a_request_that_never_reads_its_run_context_is_left_alone(app: Flask, client: FlaskClient) -> None:
    """A route that never asks for current_run gets no run context and no X-Run-ID header."""
    from flask import request

    from flask_jobmetrics.context import _ENVIRON_KEY

    seen: list[bool] = []

    @app.post("/untouched")
    def untouched() -> str:
        seen.append(_ENVIRON_KEY in request.environ)
        return "ok"

    response = client.post("/untouched", headers=HEADERS)
    assert response.status_code == 200 and seen == [False]
    assert "X-Run-ID" not in response.headers
    assert service_of(app).buffer.stats().added == 0


def test_a_tracked_route_that_aborts_still_names_the_run(app: Flask, client: FlaskClient) -> None:
    """The error response of a tracked view that raised an HTTPException carries X-Run-ID."""
    from flask import abort

    from flask_jobmetrics import JobMetrics

    @app.post("/conflict")
    @JobMetrics.tracked()
    def conflict() -> str:
        abort(409)

    response = client.post("/conflict", headers=HEADERS)
    assert response.status_code == 409
    assert response.headers["X-Run-ID"] == RUN


def test_current_run_add_read_in_a_request_adds_to_that_request_from_a_thread(
    app: Flask, client: FlaskClient
) -> None:
    """``add = current_run.add`` is the request's own context's method, bound when it is
    read: called from a worker thread before the request ends, it adds to that request."""

    @app.post("/threaded")
    def threaded() -> dict[str, Any]:
        add = current_run.add
        worker = threading.Thread(target=add, args=({"Leads Processed": 4},))
        worker.start()
        worker.join()
        return {"ok": True}

    assert client.post("/threaded", headers=HEADERS).status_code == 200
    fields = stored_metrics(app, RUN, "acme")
    assert fields is not None and fields["Leads Processed"] == 4
