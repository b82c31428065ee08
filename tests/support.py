"""Helpers shared by the tests (importable, unlike conftest)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import JobMetrics
from flask_jobmetrics.stores.base import Store
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

START = datetime(2023, 6, 15, 12, 0, 0, tzinfo=timezone.utc)


class Clock:
    """The tests' one clock, moved by hand: ``clock()`` is now (an aware datetime, for the
    service), ``clock.timestamp()`` the same instant in epoch seconds (for buffers and stores),
    ``clock.advance(seconds)`` moves both."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


#: ``make_app(*, name=None, instance=None, clock=None, **config) -> Flask`` (the conftest fixture).
AppFactory = Callable[..., Flask]
#: ``make_store(**options) -> Store`` (the conftest fixture, one store kind per test).
MakeStore = Callable[..., Store]


class AppMaker:
    """Builds TESTING apps with JobMetrics, on the memory store unless ``config`` says otherwise,
    and closes every service they opened (``close()``)."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.built: list[tuple[JobMetrics, Flask]] = []

    def __call__(
        self,
        *,
        name: str | None = None,
        instance: Path | None = None,
        clock: Clock | None = None,
        **config: Any,
    ) -> Flask:
        name = name or ("jobmetrics_test" if not self.built else f"jobmetrics_test_{len(self.built)}")
        flask_app = Flask(name, instance_path=str(instance or self.instance))
        flask_app.config.update(TESTING=True, JOBMETRICS_STORE_URL="memory://")
        flask_app.config.update(config)
        ext = JobMetrics(flask_app)
        self.built.append((ext, flask_app))
        if clock is not None:
            ext.state(flask_app).service.clock = clock
        return flask_app

    def close(self) -> None:
        for ext, flask_app in self.built:
            ext.state(flask_app).service.close()


@contextmanager
def jobmetrics_app(instance: Path, name: str = "jobmetrics_test", **config: Any) -> Iterator[Flask]:
    """One app for a ``with`` block, built as ``make_app`` builds them; closed when the block ends."""
    maker = AppMaker(instance)
    try:
        yield maker(name=name, **config)
    finally:
        maker.close()


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


class Recorder:
    """A ``RunEvents`` that records what it hears."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str, str | None, bool]] = []
        self.jobs_failed: list[tuple[str, str]] = []
        self.stalled: list[tuple[str, list[str]]] = []
        self.closed = False

    def client_failed(self, run_id: str, client_id: str, error: str | None, *, stalled: bool = False) -> None:
        self.failed.append((run_id, client_id, error, stalled))

    def job_failed(self, run_id: str, notes: str) -> None:
        self.jobs_failed.append((run_id, notes))

    def run_stalled(self, run_id: str, client_ids: Sequence[str]) -> None:
        self.stalled.append((run_id, list(client_ids)))

    def close(self) -> None:
        self.closed = True


#: The Redis server the tests use. The tests that need it fail when it does not answer, unless
#: ``JOBMETRICS_TEST_SKIP_REDIS=1`` says to skip them (so Redis coverage never vanishes silently).
REDIS_URL = os.environ.get("JOBMETRICS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SKIP_REDIS = "JOBMETRICS_TEST_SKIP_REDIS"


class RedisKeys:
    """A key prefix of the test Redis that is one test's own: ``url()`` names a store under it
    (``url(db=2)`` in another database), ``drop()`` deletes its keys in every database named.

    Built through the ``redis_url`` fixture, which fails when Redis does not answer."""

    def __init__(self, server: str = REDIS_URL) -> None:
        self.server = server
        self.prefix = f"jmtest:{uuid.uuid4().hex[:12]}:"
        self._servers = {server}

    def url(self, db: int | None = None) -> str:
        server = self.server if db is None else f"{self.server.rsplit('/', 1)[0]}/{db}"
        self._servers.add(server)
        return f"{server}?prefix={self.prefix}"

    def require(self) -> None:
        """Fail the test when the server does not answer (skip it only when SKIP_REDIS=1)."""
        import redis

        client = redis.Redis.from_url(self.server, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            message = f"no Redis server at {self.server} ({exc})"
            if os.environ.get(SKIP_REDIS) == "1":
                pytest.skip(f"{message} ({SKIP_REDIS}=1)")
            pytest.fail(f"{message}; start one, or set {SKIP_REDIS}=1 to skip the Redis tests", pytrace=False)
        finally:
            client.close()

    def drop(self) -> None:
        import redis

        for server in self._servers:
            client = redis.Redis.from_url(server)
            try:  # the prefix is letters, digits and colons: no glob characters to escape
                keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
