"""Shared fixtures: the clock, a service on the memory store, and Flask apps (``make_app``, ``app``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.base import Store
from flask_jobmetrics.stores.memory import MemoryStore

from .support import AppFactory, AppMaker, Clock
from .test_store_contract import FACTORIES, _drop_redis_keys  # noqa: F401  (autouse: drops test Redis keys)


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


@pytest.fixture(params=list(FACTORIES))
def store_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Services (one per simulated process) on one memory, SQLite or Redis store: ``store_service(clock)``."""
    made: list[MetricsService] = []

    def make(clock: Clock, **options: Any) -> MetricsService:
        if request.param == "memory" and made:  # a memory store belongs to one service
            store: Store = made[0].store
        else:
            store = FACTORIES[request.param](tmp_path, clock=clock.timestamp)
        service = MetricsService(store, clock=clock, buffer_ttl=3600, flush_interval=3600, **options)
        made.append(service)
        return service

    yield make
    for service in reversed(made):
        service.buffer.stop(drain=True)
    for store in {id(s.store): s.store for s in made}.values():
        store.close()
