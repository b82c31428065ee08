"""Configuration: read once in init_app, validated, with errors naming key and value."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import ConfigurationError, JobMetrics
from flask_jobmetrics.config import DEFAULTS, read_settings


def test_defaults_are_set_on_the_app_config(tmp_path: Path) -> None:
    """Every JOBMETRICS_* key gets its default, and the store defaults to SQLite in the instance folder."""
    config: dict[str, Any] = {}
    settings = read_settings(config, str(tmp_path))
    assert set(config) == {f"JOBMETRICS_{k}" for k in DEFAULTS}
    assert settings.store_url == f"sqlite:///{tmp_path}/jobmetrics.sqlite3"
    assert settings.airtable_timeout == (5.0, 30.0)
    assert settings.airtable_enabled is False


def test_mutable_defaults_are_copied(tmp_path: Path) -> None:
    """Changing one app's secrets dict does not change the defaults."""
    config: dict[str, Any] = {}
    read_settings(config, str(tmp_path))
    config["JOBMETRICS_WEBHOOK_SECRETS"]["x"] = "y"
    assert DEFAULTS["WEBHOOK_SECRETS"] == {}


def test_relative_sqlite_paths_live_in_the_instance_folder(tmp_path: Path) -> None:
    """sqlite:///name.db resolves against the instance path; sqlite://// is absolute."""
    rel = read_settings({"JOBMETRICS_STORE_URL": "sqlite:///m.db"}, str(tmp_path))
    absolute = read_settings({"JOBMETRICS_STORE_URL": "sqlite:////var/tmp/m.db"}, str(tmp_path))
    assert rel.store_url == f"sqlite:///{tmp_path}/m.db"
    assert absolute.store_url == "sqlite:////var/tmp/m.db"


def test_values_are_coerced_where_unambiguous(tmp_path: Path) -> None:
    """Numeric strings and boolean words (as from the environment) are accepted."""
    settings = read_settings(
        {
            "JOBMETRICS_FLUSH_INTERVAL": "0",
            "JOBMETRICS_STRICT": "true",
            "JOBMETRICS_AIRTABLE_TIMEOUT": 10,
            "JOBMETRICS_WEBHOOK_SECRETS": {"acme": "s3cret"},
        },
        str(tmp_path),
    )
    assert settings.flush_interval == 0.0 and settings.strict is True
    assert settings.airtable_timeout == (10.0, 10.0)
    assert settings.webhook_secrets == {"acme": b"s3cret"}


def test_a_dashboard_session_lasts_twelve_hours_unless_set(tmp_path: Path) -> None:
    """JOBMETRICS_DASHBOARD_SESSION_MAX_AGE defaults to 43200 seconds; whole seconds as text are read too."""
    assert read_settings({}, str(tmp_path)).dashboard_session_max_age == 43_200
    set_by_env = read_settings({"JOBMETRICS_DASHBOARD_SESSION_MAX_AGE": "3600"}, str(tmp_path))
    assert set_by_env.dashboard_session_max_age == 3600


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("STORE_URL", "postgres://x"),
        ("STORE_URL", "sqlite://relative"),
        ("AIRTABLE_ENDPOINT_URL", "ftp://x"),
        ("AIRTABLE_RATE_LIMIT", 0),
        ("AIRTABLE_RATE_LIMIT", "fast"),
        ("AIRTABLE_TIMEOUT", (1, 2, 3)),
        ("AIRTABLE_RATE_LIMIT_PAUSE", -1),
        ("BUFFER_TTL", 0),
        ("FLUSH_INTERVAL", float("nan")),
        ("BUFFER_MAXSIZE", 0),
        ("BUFFER_MAXSIZE", 2.5),
        ("PROGRESS_INTERVAL", True),
        ("UNKNOWN_METRICS", "ignore"),
        ("STRICT", "maybe"),
        ("RUN_ID_HEADER", ""),
        ("RUN_ID_HEADER", "X-Run ID"),
        ("RUN_ID_HEADER", "X-Run-ID\r\nSet-Cookie: a=b"),
        ("CLIENT_ID_HEADER", "X:Client"),
        ("WEBHOOK_SECRETS", ["acme"]),
        ("WEBHOOK_SECRETS", {"bad id": "s"}),
        ("WEBHOOK_SECRETS", {"acme": ""}),
        ("DASHBOARD", 2),
        ("DASHBOARD_SESSION_MAX_AGE", 0),
        ("DASHBOARD_SESSION_MAX_AGE", -60),
        ("DASHBOARD_SESSION_MAX_AGE", 1.5),
        ("DASHBOARD_SESSION_MAX_AGE", "half a day"),
        ("DASHBOARD_SESSION_MAX_AGE", True),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_raise_configuration_error_naming_the_key(tmp_path: Path, key: str, value: Any) -> None:
    """init_app fails at start-up with the key and the bad value in the message."""
    app = Flask("bad", instance_path=str(tmp_path))
    app.config[f"JOBMETRICS_{key}"] = value
    with pytest.raises(ConfigurationError) as info:
        JobMetrics(app)
    assert f"JOBMETRICS_{key}" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert "jobmetrics" not in app.extensions


def test_an_api_key_without_a_base_id_logs_one_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Half of the Airtable settings: one warning naming the missing key, publishing off."""
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        settings = read_settings({"JOBMETRICS_AIRTABLE_API_KEY": "patX"}, str(tmp_path))
        read_settings({"JOBMETRICS_AIRTABLE_BASE_ID": "appX"}, str(tmp_path))
    assert settings.airtable_enabled is False
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "JOBMETRICS_AIRTABLE_API_KEY is set but JOBMETRICS_AIRTABLE_BASE_ID is not" in messages[0]
    assert "JOBMETRICS_AIRTABLE_BASE_ID is set but JOBMETRICS_AIRTABLE_API_KEY is not" in messages[1]


def test_an_unknown_jobmetrics_key_logs_a_warning_with_the_closest_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JOBMETRICS_STOR_URL is reported with "did you mean JOBMETRICS_STORE_URL"; other keys are not."""
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        read_settings({"JOBMETRICS_STOR_URL": "memory://", "SECRET_KEY": "x"}, str(tmp_path))
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        message == 'unknown config key JOBMETRICS_STOR_URL is ignored (did you mean "JOBMETRICS_STORE_URL"?)'
    )


def test_a_complete_configuration_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Both Airtable keys and only known keys: no warning at all."""
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        read_settings(
            {"JOBMETRICS_AIRTABLE_API_KEY": "patX", "JOBMETRICS_AIRTABLE_BASE_ID": "appX"}, str(tmp_path)
        )
    assert caplog.records == []


def test_the_outbox_is_kept_when_publishing_or_when_told(tmp_path: Path) -> None:
    """keeps_outbox: off without Airtable, on with it, and on for JOBMETRICS_OUTBOX=true workers."""
    airtable = {"JOBMETRICS_AIRTABLE_API_KEY": "patX", "JOBMETRICS_AIRTABLE_BASE_ID": "appX"}
    assert read_settings({}, str(tmp_path)).keeps_outbox is False
    assert read_settings(dict(airtable), str(tmp_path)).keeps_outbox is True
    assert read_settings({"JOBMETRICS_OUTBOX": "true"}, str(tmp_path)).keeps_outbox is True
    assert read_settings({**airtable, "JOBMETRICS_OUTBOX": False}, str(tmp_path)).keeps_outbox is False
