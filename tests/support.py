"""Helpers shared by the tests (importable, unlike conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from flask import Flask

from flask_jobmetrics import JobMetrics

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
