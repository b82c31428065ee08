"""The route decorators tracked, counts and signed (API.md §7)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient

from flask_jobmetrics import JobMetrics, Status, current_run
from flask_jobmetrics.decorators import counts, sign, sign_timestamped, signed, tracked
from flask_jobmetrics.models import ClientRun
from flask_jobmetrics.state import get_state

RUN = "230615-120000"
HEADERS = {"X-Run-ID": RUN, "X-Client-ID": "acme"}
SECRETS = {"acme": "acme-secret", "globex": "globex-secret"}


def client_run(app: Flask, client_id: str = "acme") -> ClientRun | None:
    service = get_state(app).service
    service.flush()
    return service.get_client_run(RUN, client_id)


# -- tracked --------------------------------------------------------------------------------


def test_tracked_refuses_a_malformed_run_id_with_400_naming_the_header(
    app: Flask, client: FlaskClient
) -> None:
    """A malformed X-Run-ID on a @tracked route → 400 JSON naming header and value; the view never runs."""
    calls: list[str] = []

    @app.get("/score")
    @tracked()
    def score() -> str:
        calls.append("ran")
        return "ok"

    response = client.get("/score", headers={"X-Run-ID": "2023-06-15", "X-Client-ID": "acme"})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_run_context"
    assert "X-Run-ID" in body["message"]
    assert "2023-06-15" in body["message"]
    assert calls == []


def test_tracked_refuses_a_missing_client_with_400(app: Flask, client: FlaskClient) -> None:
    """No client ID anywhere → 400 whose message names X-Client-ID and the query parameters."""

    @app.get("/score")
    @tracked()
    def score() -> str:
        return "ok"

    body = client.get("/score", headers={"X-Run-ID": RUN}).get_json()
    assert body["error"] == "invalid_run_context"
    assert "X-Client-ID" in body["message"]
    assert "clientId" in body["message"]


def test_tracked_gives_the_view_the_context_and_its_process(app: Flask, client: FlaskClient) -> None:
    """With valid IDs the view runs with current_run bound and its process named (default lead_scoring)."""

    @app.get("/runs/<run_id>/clients/<client_id>")
    @tracked(process="post_scoring")
    def view(run_id: str, client_id: str) -> dict[str, Any]:
        current_run.add({"Posts Scored": 2})
        return {"ids": [current_run.run_id, current_run.client_id], "process": current_run.logger.process}

    @app.get("/bare")
    @tracked()
    def bare() -> dict[str, Any]:
        return {"process": current_run.logger.process}

    response = client.get(f"/runs/{RUN}/clients/acme")
    assert response.get_json() == {"ids": [RUN, "acme"], "process": "post_scoring"}
    assert response.headers["X-Run-ID"] == RUN
    assert client.get("/bare", headers=HEADERS).get_json() == {"process": "lead_scoring"}
    run = client_run(app)
    assert run is not None
    assert run.metrics["Posts Successfully Scored"] == 2
    assert run.status is Status.RUNNING


def test_tracked_complete_marks_the_client_failed_when_the_view_raises(
    app: Flask, client: FlaskClient
) -> None:
    """complete=True: a raising view → client run Failed with the metrics added before; response 500."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.post("/score")
    @tracked(complete=True)
    def score() -> str:
        current_run.add({"Leads Processed": 3})
        raise RuntimeError("scorer crashed")

    assert client.post("/score", headers=HEADERS).status_code == 500
    run = client_run(app)
    assert run is not None
    assert run.status is Status.FAILED
    assert run.completed
    assert run.metrics["Leads Processed"] == 3


def test_tracked_complete_lets_the_exception_propagate(app: Flask, client: FlaskClient) -> None:
    """complete=True re-raises the view's exception (TESTING propagates it) after marking the run Failed."""

    @app.post("/score")
    @tracked(complete=True)
    def score() -> str:
        raise KeyError("lead")

    with pytest.raises(KeyError, match="lead"):
        client.post("/score", headers=HEADERS)
    run = client_run(app)
    assert run is not None
    assert run.status is Status.FAILED


def test_tracked_complete_completes_on_2xx_and_fails_on_5xx(app: Flask, client: FlaskClient) -> None:
    """complete=True: a 2xx response → Completed; a 5xx response → Failed."""

    @app.post("/ok")
    @tracked(complete=True)
    def ok() -> tuple[str, int]:
        current_run.add({"Leads Processed": 8})
        return "scored", 201

    @app.post("/unavailable")
    @tracked(complete=True)
    def unavailable() -> tuple[str, int]:
        return "try later", 503

    assert client.post("/ok", headers=HEADERS).status_code == 201
    run = client_run(app)
    assert run is not None
    assert run.status is Status.COMPLETED
    assert run.metrics["Leads Processed"] == 8
    assert client.post("/unavailable", headers={**HEADERS, "X-Client-ID": "globex"}).status_code == 503
    failed = client_run(app, "globex")
    assert failed is not None
    assert failed.status is Status.FAILED


def test_tracked_complete_leaves_the_client_running_on_4xx(app: Flask, client: FlaskClient) -> None:
    """complete=True: a 4xx (returned or aborted) completes nothing; the added metrics still merge."""

    @app.post("/bad")
    @tracked(complete=True)
    def bad() -> tuple[str, int]:
        current_run.add({"Leads Processed": 1})
        return "bad payload", 422

    @app.post("/missing")
    @tracked(complete=True)
    def missing() -> str:
        abort(404)

    assert client.post("/bad", headers=HEADERS).status_code == 422
    assert client.post("/missing", headers=HEADERS).status_code == 404
    run = client_run(app)
    assert run is not None
    assert run.status is Status.RUNNING
    assert not run.completed
    assert run.metrics["Leads Processed"] == 1


def test_tracked_complete_includes_counts_whatever_the_order(app: Flask, client: FlaskClient) -> None:
    """counts outside tracked(complete=True) still counts before the completion, not as a late update."""

    @app.post("/score")
    @counts("Leads Processed", 4)
    @tracked(complete=True)
    def score() -> str:
        return "ok"

    client.post("/score", headers=HEADERS)
    run = client_run(app)
    assert run is not None
    assert run.status is Status.COMPLETED
    assert run.metrics["Leads Processed"] == 4


def test_tracked_merges_the_views_counts_before_its_response_leaves(app: Flask, client: FlaskClient) -> None:
    """Without ``complete``, ``tracked`` merges what the view added once the view answered,
    before the response leaves the app (an ``after_request`` function sees it buffered),
    and names the run in the response."""
    seen: list[int] = []

    @app.post("/score")
    @tracked()
    def score() -> str:
        current_run.add({"Leads Processed": 2})
        return "ok"

    @app.after_request
    def look(response: Any) -> Any:
        pending = get_state(app).service.buffer.pending(RUN, "acme") or {}
        seen.append(pending.get("Leads Processed", (None, 0))[1])
        return response

    response = client.post("/score", headers=HEADERS)
    assert response.headers.getlist("X-Run-ID") == [RUN]
    assert seen == [2]


def test_tracked_keeps_a_run_id_header_the_view_set_in_any_case(app: Flask, client: FlaskClient) -> None:
    """A view that set the run ID header itself (in any letter case) keeps its own value,
    once; a view that did not gets the request's base run ID."""

    @app.post("/own")
    @tracked()
    def own() -> tuple[str, int, dict[str, str]]:
        return "ok", 200, {"x-run-id": "mine"}

    @app.post("/plain")
    @tracked()
    def plain() -> str:
        return "ok"

    assert client.post("/own", headers=HEADERS).headers.getlist("X-Run-ID") == ["mine"]
    assert client.post("/plain", headers={**HEADERS, "X-Run-ID": f"{RUN}-acme"}).headers.getlist(
        "X-Run-ID"
    ) == [RUN]


def test_a_request_made_inside_a_tracked_view_records_for_its_own_client(app: Flask) -> None:
    """A tracked view that makes a request itself (a batch view calling a route through a
    test client): inside that request ``current_run`` is its own request's context, so its
    metrics go to its own client, not to the outer view's."""

    @app.post("/inner")
    def inner() -> str:
        current_run.add({"Leads Processed": 1})
        return "ok"

    @app.post("/batch")
    @tracked()
    def batch() -> str:
        inner_headers = {"X-Run-ID": RUN, "X-Client-ID": "globex"}
        assert app.test_client().post("/inner", headers=inner_headers).status_code == 200
        current_run.add({"Leads Processed": 5})
        return "ok"

    assert app.test_client().post("/batch", headers=HEADERS).status_code == 200
    acme, globex = client_run(app), client_run(app, "globex")
    assert acme is not None and acme.metrics["Leads Processed"] == 5
    assert globex is not None and globex.metrics["Leads Processed"] == 1


def test_counts_outside_plain_tracked_still_count(app: Flask, client: FlaskClient) -> None:
    """counts outside tracked() adds after tracked merged the view's own metrics: the
    teardown merges that count too, so both are stored and the run stays Running."""

    @app.post("/score")
    @counts("Leads Processed", 4)
    @tracked()
    def score() -> str:
        current_run.add({"Leads Processed": 1})
        return "ok"

    client.post("/score", headers=HEADERS)
    client.post("/score", headers=HEADERS)
    run = client_run(app)
    assert run is not None
    assert run.status is Status.RUNNING
    assert run.metrics["Leads Processed"] == 10


def test_counts_adds_on_2xx_only(app: Flask, client: FlaskClient) -> None:
    """counts adds its value on each 2xx response and nothing on a 4xx or 5xx."""

    @app.post("/lead/<int:status>")
    @tracked()
    @counts("Leads Processed")
    def lead(status: int) -> tuple[str, int]:
        return "", status

    for status in (200, 204, 400, 500, 201):
        client.post(f"/lead/{status}", headers=HEADERS)
    run = client_run(app)
    assert run is not None
    assert run.metrics["Leads Processed"] == 3


def test_counts_with_a_callable_value(app: Flask, client: FlaskClient) -> None:
    """A callable value is called with the response and its result is added."""

    @app.post("/batch")
    @counts("Profiles Scored", value=lambda response: len(response.get_json()["scored"]))
    def batch() -> dict[str, list[int]]:
        return {"scored": [1, 2, 3, 4, 5]}

    client.post("/batch", headers=HEADERS)
    client.post("/batch", headers=HEADERS)
    run = client_run(app)
    assert run is not None
    assert run.metrics["Profiles Successfully Scored"] == 10


def test_counts_without_a_run_context_logs_and_answers(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """counts on a request with no run context keeps the response and logs an error naming the metric."""

    @app.get("/ping")
    @counts("Leads Processed")
    def ping() -> str:
        return "pong"

    response = client.get("/ping")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "pong")
    assert any("Leads Processed=1 not counted" in r.getMessage() for r in caplog.records)


def test_tracked_without_parentheses_is_refused_at_decoration() -> None:
    """@tracked without parentheses raises TypeError at import time, not a confusing error per request."""

    def view() -> str:
        return "ok"

    with pytest.raises(TypeError, match="parentheses"):
        tracked(view)  # type: ignore[arg-type]


def test_counts_rejects_a_bad_value_at_decoration() -> None:
    """counts() needs a number or a callable (not a bool) as value."""
    with pytest.raises(TypeError):
        counts("Leads Processed", value=True)


# -- signed ---------------------------------------------------------------------------------


@pytest.fixture
def webhook_app(tmp_path: Path) -> Any:
    """An app with webhook secrets for acme and globex and a signed, counted webhook route."""
    flask_app = Flask("webhooks", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(
        TESTING=True, JOBMETRICS_STORE_URL="memory://", JOBMETRICS_WEBHOOK_SECRETS=SECRETS
    )
    ext = JobMetrics(flask_app)

    @flask_app.post("/hooks/scored")
    @ext.tracked()
    @ext.signed
    @ext.counts("Posts Scored", value=lambda response: response.get_json()["posts"])
    def scored() -> dict[str, Any]:
        current_run.add({"Post Tokens": 500})
        return {"posts": len(json.loads(current_request_body()))}

    yield flask_app
    ext.state(flask_app).service.close()


def current_request_body() -> bytes:
    from flask import request

    return request.get_data()


BODY = json.dumps([{"id": 1}, {"id": 2}]).encode()


def test_signed_accepts_a_valid_signature_and_records(webhook_app: Flask) -> None:
    """A body signed with the client's secret → 200, and the view's metrics are recorded for that client."""
    response = webhook_app.test_client().post(
        "/hooks/scored", data=BODY, headers={**HEADERS, "X-Signature": sign(BODY, SECRETS["acme"])}
    )
    assert response.status_code == 200
    assert response.get_json() == {"posts": 2}
    run = client_run(webhook_app)
    assert run is not None
    assert (run.metrics["Posts Successfully Scored"], run.metrics["Post Scoring Tokens"]) == (2, 500)


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=" + "0" * 64, sign(BODY + b" ", SECRETS["acme"]), "md5=abc", "sha256=\u00e9"],
)
def test_signed_refuses_a_bad_signature_and_records_nothing(
    webhook_app: Flask, signature: str | None
) -> None:
    """A missing, wrong or malformed signature → 401 JSON, and no client run exists afterwards."""
    headers = {**HEADERS} if signature is None else {**HEADERS, "X-Signature": signature}
    response = webhook_app.test_client().post("/hooks/scored", data=BODY, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_signature"
    assert client_run(webhook_app) is None


def test_a_body_signed_by_client_a_cannot_record_for_client_b(webhook_app: Flask) -> None:
    """Signed with acme's secret but in globex's context → 401, nothing recorded for globex or acme."""
    headers = {"X-Run-ID": RUN, "X-Client-ID": "globex", "X-Signature": sign(BODY, SECRETS["acme"])}
    response = webhook_app.test_client().post("/hooks/scored", data=BODY, headers=headers)
    assert response.status_code == 401
    assert client_run(webhook_app, "globex") is None
    assert client_run(webhook_app, "acme") is None


def test_signed_refuses_an_unknown_client(webhook_app: Flask) -> None:
    """A client with no configured secret → 401, even with a well-formed signature."""
    headers = {"X-Run-ID": RUN, "X-Client-ID": "initech", "X-Signature": sign(BODY, "guess")}
    assert webhook_app.test_client().post("/hooks/scored", data=BODY, headers=headers).status_code == 401
    assert client_run(webhook_app, "initech") is None


def test_a_refused_request_discards_metrics_added_before_the_check(webhook_app: Flask) -> None:
    """Metrics added by an earlier hook of a request that then fails the signature are not recorded."""

    @webhook_app.before_request
    def early_count() -> None:
        current_run.add({"Leads Processed": 1})

    headers = {**HEADERS, "X-Signature": sign(b"other body", SECRETS["acme"])}
    assert webhook_app.test_client().post("/hooks/scored", data=BODY, headers=headers).status_code == 401
    assert client_run(webhook_app) is None


def test_sign_makes_the_header_value() -> None:
    """sign(body, secret) is 'sha256=' + the hex HMAC-SHA256, for str and bytes secrets."""
    value = sign(b"{}", "s3cret")
    assert value == sign(b"{}", b"s3cret")
    assert value.startswith("sha256=")
    assert len(value) == len("sha256=") + 64


def _post(app: Flask, signature: str, body: bytes = BODY) -> Any:
    return app.test_client().post("/hooks/scored", data=body, headers={**HEADERS, "X-Signature": signature})


def test_a_timestamped_signature_within_the_tolerance_records(webhook_app: Flask) -> None:
    """t=<now>,v1=<hmac of "t.body"> is accepted (a few seconds of clock skew either way too)."""
    now = int(time.time())
    assert _post(webhook_app, sign_timestamped(BODY, SECRETS["acme"])).status_code == 200
    assert _post(webhook_app, sign_timestamped(BODY, SECRETS["acme"], now - 200)).status_code == 200
    assert _post(webhook_app, sign_timestamped(BODY, SECRETS["acme"], now + 60)).status_code == 200
    run = client_run(webhook_app)
    assert run is not None and run.metrics["Posts Successfully Scored"] == 6


def test_a_replayed_timestamped_signature_is_refused(
    webhook_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery signed longer ago than JOBMETRICS_WEBHOOK_TOLERANCE (300 s) is a 401."""
    old = sign_timestamped(BODY, SECRETS["acme"], int(time.time()) - 301)
    assert _post(webhook_app, old).status_code == 401
    assert client_run(webhook_app) is None
    assert "tolerance 300 s" in caplog.text


@pytest.mark.parametrize(
    "signature",
    [
        "t=123",
        "v1=" + "0" * 64,
        "t=abc,v1=" + "0" * 64,
        "t=1,t=2,v1=" + "0" * 64,
        "t={now},v1=" + "0" * 64,
    ],
)
def test_malformed_or_wrong_timestamped_signatures_are_refused(webhook_app: Flask, signature: str) -> None:
    """A timestamped signature without t, without v1, with a bad t, or not matching → 401."""
    assert _post(webhook_app, signature.format(now=int(time.time()))).status_code == 401
    assert client_run(webhook_app) is None


def test_the_timestamp_is_signed_with_the_body(webhook_app: Flask) -> None:
    """Moving the timestamp of a captured signature forward (to replay it) breaks the HMAC."""
    old = int(time.time()) - 1000
    digest = sign_timestamped(BODY, SECRETS["acme"], old).split("v1=")[1]
    assert _post(webhook_app, f"t={int(time.time())},v1={digest}").status_code == 401


def test_several_v1_signatures_match_if_one_does(webhook_app: Flask) -> None:
    """While a secret rotates a sender may send one v1 per secret; one matching is enough."""
    good = sign_timestamped(BODY, SECRETS["acme"])
    t, v1 = good.split(",")
    assert _post(webhook_app, f"{t},v1={'0' * 64},{v1}").status_code == 200


def test_plain_signatures_can_be_refused(tmp_path: Path) -> None:
    """With JOBMETRICS_WEBHOOK_REQUIRE_TIMESTAMP a plain sha256= signature is a 401."""
    flask_app = Flask("strict_hooks", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(
        TESTING=True,
        JOBMETRICS_STORE_URL="memory://",
        JOBMETRICS_WEBHOOK_SECRETS=SECRETS,
        JOBMETRICS_WEBHOOK_REQUIRE_TIMESTAMP=True,
    )
    ext = JobMetrics(flask_app)

    @flask_app.post("/hooks/scored")
    @ext.tracked()
    @ext.signed
    def scored() -> dict[str, Any]:
        return {}

    try:
        assert _post(flask_app, sign(BODY, SECRETS["acme"])).status_code == 401
        assert _post(flask_app, sign_timestamped(BODY, SECRETS["acme"])).status_code == 200
    finally:
        ext.state(flask_app).service.close()


def test_decorated_views_keep_their_names(app: Flask) -> None:
    """functools.wraps keeps the view's name and docstring."""

    def view() -> str:
        """The view."""
        return "ok"

    for decorated in (tracked()(view), counts("Leads Processed")(view), signed(view)):
        assert (decorated.__name__, decorated.__doc__) == ("view", "The view.")


def test_tracked_records_an_error_when_what_the_view_returned_cannot_be_a_response(
    app: Flask, client: FlaskClient
) -> None:
    """A view that returns None (Flask refuses it) under @tracked: the 500 is recorded in the
    client run's Error Details, and what the view added still counts."""
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.post("/score")
    @tracked()
    def score() -> None:
        current_run.add({"Leads Processed": 2})

    assert client.post("/score", headers=HEADERS).status_code == 500
    run = client_run(app)
    assert run is not None and run.error is not None and "TypeError" in run.error
    assert run.metrics["Leads Processed"] == 2 and run.status is Status.RUNNING
