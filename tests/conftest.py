"""Shared fixtures: the clock, services, Flask apps (``make_app``, ``app``), stores of every
kind (``make_store``, ``store_service``) and the test Redis (``redis_url``, ``redis_store``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.base import Store
from flask_jobmetrics.stores.memory import MemoryStore
from flask_jobmetrics.stores.sqlite import SQLiteStore

from .support import AppFactory, AppMaker, Clock, MakeStore, RedisKeys


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


# -- the test Redis ----------------------------------------------------------------------


@pytest.fixture
def redis_keys() -> Iterator[RedisKeys]:
    """A key prefix of the test Redis for this test alone, its keys deleted afterwards. Fails
    when Redis does not answer (skips only with ``JOBMETRICS_TEST_SKIP_REDIS=1``)."""
    keys = RedisKeys()
    keys.require()
    yield keys
    keys.drop()


@pytest.fixture
def redis_url(redis_keys: RedisKeys) -> str:
    """A Redis store URL under this test's own key prefix (see ``redis_keys``)."""
    return redis_keys.url()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[Store]:
    """A Redis store at ``redis_url``, closed after the test."""
    from flask_jobmetrics.stores.redis import RedisStore

    store = RedisStore(redis_url)
    yield store
    store.close()


# -- stores of every kind ----------------------------------------------------------------


def _memory(place: Path, **options: Any) -> Store:
    return MemoryStore("memory://", **options)


def _sqlite(place: Path, **options: Any) -> Store:
    return SQLiteStore(f"sqlite:///{place / 'stores' / 'jobmetrics.sqlite3'}", **options)


def _redis(place: str, **options: Any) -> Store:
    from flask_jobmetrics.stores.redis import RedisStore

    return RedisStore(place, **options)


#: The stores every store test runs on: name -> factory(place, **options), ``place`` being the
#: test's tmp_path (memory, SQLite) or its ``redis_url`` (Redis); the options are the store's
#: (``clock``, ``idempotency_ttl``, ``outbox``). A backend joins the store tests with one entry.
STORE_FACTORIES: dict[str, Callable[..., Store]] = {"memory": _memory, "sqlite": _sqlite, "redis": _redis}


@pytest.fixture(params=list(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """``make_store(**options)``: a memory, SQLite or Redis store (the test runs on each kind).
    The stores of one test share its SQLite file or Redis prefix; each is closed after the test."""
    place = request.getfixturevalue("redis_url") if request.param == "redis" else tmp_path
    made: list[Store] = []

    def make(**options: Any) -> Store:
        store = STORE_FACTORIES[request.param](place, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store_service(make_store: MakeStore) -> Iterator[Any]:
    """Services (one per simulated process) on one memory, SQLite or Redis store: ``store_service(clock)``."""
    made: list[MetricsService] = []

    def make(clock: Clock, **options: Any) -> MetricsService:
        # A store no other process sees belongs to one service: the simulated processes share it.
        store = made[0].store if made and not made[0].store.shared else make_store(clock=clock.timestamp)
        service = MetricsService(store, clock=clock, buffer_ttl=3600, flush_interval=3600, **options)
        made.append(service)
        return service

    yield make
    for service in reversed(made):
        service.buffer.stop(drain=True)
