"""Shared fixtures: the clock, a service on the memory store, and Flask apps (``make_app``, ``app``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.memory import MemoryStore

from .support import AppFactory, AppMaker, Clock


@pytest.fixture
def clock() -> Clock:
    """The tests' one clock, moved by hand (a datetime for services, ``timestamp()`` for stores)."""
    return Clock()


@pytest.fixture
def service(clock: Clock) -> Iterator[MetricsService]:
    """A service on a fresh memory store, with the flusher never started by time alone."""
    svc = MetricsService(MemoryStore(), clock=clock, buffer_ttl=3600, flush_interval=3600)
    yield svc
    svc.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """Build TESTING apps with JobMetrics: ``make_app(**config)`` on the memory store unless
    ``config`` says otherwise (``clock=`` sets the service's clock); each closed after the test.

    A module with its own defaults overrides this fixture with one that calls it."""
    maker = AppMaker(tmp_path / "instance")
    yield maker
    maker.close()


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    """A TESTING Flask app with JobMetrics on a memory store."""
    return make_app()
