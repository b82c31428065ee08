"""Helpers shared by the tests (importable, unlike conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask import Flask

from flask_jobmetrics import JobMetrics
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

START = datetime(2023, 6, 15, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    """A clock tests move by hand: ``clock()`` is now, ``clock.advance(seconds)``."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@contextmanager
def jobmetrics_app(instance: Path, name: str = "jobmetrics_test", **config: Any) -> Iterator[Flask]:
    """A TESTING app with JobMetrics on its own memory store (``config`` overrides); closed after."""
    flask_app = Flask(name, instance_path=str(instance))
    flask_app.config.update(TESTING=True, JOBMETRICS_STORE_URL="memory://", **config)
    ext = JobMetrics(flask_app)
    try:
        yield flask_app
    finally:
        ext.state(flask_app).service.close()


def airtable_config(fake: FakeAirtable) -> dict[str, Any]:
    """The config keys that make an app publish to ``fake``'s jobmetrics base."""
    return {
        "JOBMETRICS_AIRTABLE_API_KEY": API_KEY,
        "JOBMETRICS_AIRTABLE_BASE_ID": BASE_ID,
        "JOBMETRICS_AIRTABLE_ENDPOINT_URL": fake.url,
    }


def client_rows(fake: FakeAirtable, table: str = "Client Run Results") -> dict[str, dict[str, Any]]:
    """The client records' fields by Client ID (a duplicate row fails the test)."""
    rows = [r["fields"] for r in fake.records(BASE_ID, table)]
    by_key = {f["Client ID"]: f for f in rows}
    assert len(by_key) == len(rows), "duplicate client rows in Airtable"
    return by_key
