"""StructuredLogger: text and JSON lines with run and client context."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask

from flask_jobmetrics import JobMetrics, StructuredLogger
from flask_jobmetrics.log import OutageLog


def test_text_line_carries_scope_client_run_and_process(caplog: pytest.LogCaptureFixture) -> None:
    """Text lines look like [CLIENT:acme] [RUN:...] [lead_scoring] message."""
    logger = StructuredLogger("CLIENT", "acme", "lead_scoring", run_id="230615-120000", fmt="text")
    with caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
        logger.info("scored %d leads", 3)
    assert caplog.records[0].getMessage() == "[CLIENT:acme] [RUN:230615-120000] [lead_scoring] scored 3 leads"
    assert caplog.records[0].jobmetrics["client_id"] == "acme"  # type: ignore[attr-defined]


def test_system_scope_without_client(caplog: pytest.LogCaptureFixture) -> None:
    """A SYSTEM logger without client or run prints just its scope."""
    with caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
        StructuredLogger(fmt="text").warn("hello")
    assert caplog.records[0].getMessage() == "[SYSTEM] hello"
    assert caplog.records[0].levelno == logging.WARNING


def test_json_lines(caplog: pytest.LogCaptureFixture) -> None:
    """JSON format gives one object per line with the documented keys."""
    with caplog.at_level(logging.DEBUG, logger="flask_jobmetrics"):
        StructuredLogger("PROCESS", None, "post_scoring", run_id="230615-120000", fmt="json").error("boom")
    data = json.loads(caplog.records[0].getMessage())
    assert {k: data[k] for k in ("scope", "client_id", "run_id", "process", "level", "message")} == {
        "scope": "PROCESS",
        "client_id": None,
        "run_id": "230615-120000",
        "process": "post_scoring",
        "level": "error",
        "message": "boom",
    }
    assert data["time"].endswith("Z")


def test_app_config_selects_json(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    """JOBMETRICS_LOG_FORMAT="json" makes loggers in that app's context write JSON."""
    app = Flask("logjson", instance_path=str(tmp_path))
    app.config.update(JOBMETRICS_STORE_URL="memory://", JOBMETRICS_LOG_FORMAT="json")
    JobMetrics(app)
    with app.app_context(), caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
        StructuredLogger("SYSTEM").info("in app")
    assert json.loads(caplog.records[0].getMessage())["message"] == "in app"


def test_exception_logs_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """exception() attaches exc_info."""
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        try:
            raise RuntimeError("bad")
        except RuntimeError:
            StructuredLogger(fmt="text").exception("failed")
    assert caplog.records[0].exc_info is not None


def test_bind_and_validation() -> None:
    """bind() replaces context; a bad scope or a non-string ID is refused."""
    bound = StructuredLogger("SYSTEM").bind(scope="CLIENT", client_id="acme")
    assert bound.prefix() == "[CLIENT:acme]"
    with pytest.raises(ValueError, match="scope"):
        StructuredLogger("USER")
    with pytest.raises(TypeError, match="client_id"):
        StructuredLogger("CLIENT", {"id": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown"):
        bound.bind(session="x")


def test_an_outage_log_starts_afresh_after_a_recovery(caplog: pytest.LogCaptureFixture) -> None:
    """After the store came back, the next outage's first failure is logged as it is at once."""
    now = [0.0]
    outage = OutageLog(StructuredLogger("SYSTEM"), lambda: 7, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        outage.failed("merge failed: %s", "reset")
        now[0] = 5.0
        outage.failed("merge failed: %s", "reset")  # within the minute: not logged
        outage.recovered()
        outage.recovered()  # no outage: nothing
        now[0] = 10.0
        outage.failed("merge failed: %s", "timeout")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "merge failed: reset" in lines[0]
    assert "available again after 5 s (2 calls failed)" in lines[1]
    assert "merge failed: timeout" in lines[2] and outage.down
