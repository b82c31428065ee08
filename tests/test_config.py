"""Configuration: read once in init_app, validated, with errors naming key and value."""

from __future__ import annotations

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
        ("WEBHOOK_SECRETS", ["acme"]),
        ("WEBHOOK_SECRETS", {"bad id": "s"}),
        ("WEBHOOK_SECRETS", {"acme": ""}),
        ("DASHBOARD", 2),
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
