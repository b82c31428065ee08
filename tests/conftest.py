"""Shared fixtures: an injectable clock, a service on the memory store, and a Flask app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.memory import MemoryStore

from .support import Clock, jobmetrics_app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> Iterator[MetricsService]:
    """A service on a fresh memory store, with the flusher never started by time alone."""
    svc = MetricsService(MemoryStore(), clock=clock, buffer_ttl=3600, flush_interval=3600)
    yield svc
    svc.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """A TESTING Flask app with JobMetrics on a memory store."""
    with jobmetrics_app(tmp_path / "instance") as flask_app:
        yield flask_app
