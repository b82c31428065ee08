"""Pytest fixtures for testing against ``FakeAirtable``.

Fixtures:

``fake_airtable``
    A started emulator holding base ``BASE_ID`` with the tables "Job Tracking" and
    "Client Run Results" (fields below); stopped after the test, and with it the Airtable
    publishers of the apps that sent to it (``retire_emulator``), so an app the test left
    running logs no connection errors into later tests.
``fake_airtable_factory``
    Builds more emulators with the same base: ``fake_airtable_factory(rate_limit=None,
    clock=ManualClock())`` takes ``FakeAirtable``'s keyword arguments; each is
    started, and stopped after the test.
``fake_airtable_api``
    A ``pyairtable.Api`` pointed at ``fake_airtable``, with retries off (pyairtable's
    default retry sleeps between attempts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from ..airtable.fields import field_definitions
from ..airtable.publisher import publishers_to
from ..schema import BUILTIN_METRICS
from .fake_airtable import FakeAirtable

if TYPE_CHECKING:
    from pyairtable import Api

__all__ = [
    "API_KEY",
    "BASE_ID",
    "CLIENT_RUN_RESULTS_FIELDS",
    "JOB_TRACKING_FIELDS",
    "add_jobmetrics_tables",
    "retire_emulator",
    "fake_airtable",
    "fake_airtable_api",
    "fake_airtable_factory",
]

API_KEY = "keyTEST"
BASE_ID = "appTEST00000000001"


def _field_list(job: bool) -> list[dict[str, Any]]:
    return [{"name": name, **spec} for name, spec in field_definitions(BUILTIN_METRICS, job=job).items()]


#: Fields of "Job Tracking", as ``flask jobmetrics airtable init`` creates them; "Run ID" is primary.
JOB_TRACKING_FIELDS: list[dict[str, Any]] = _field_list(job=True)

#: Fields of "Client Run Results"; "Run ID" (client form) is primary.
CLIENT_RUN_RESULTS_FIELDS: list[dict[str, Any]] = _field_list(job=False)


def add_jobmetrics_tables(fake: FakeAirtable, base_id: str = BASE_ID) -> None:
    """Create ``base_id`` with the two tables flask_jobmetrics writes to."""
    fake.add_base(base_id, name="Job Metrics")
    fake.add_table(base_id, "Job Tracking", JOB_TRACKING_FIELDS)
    fake.add_table(base_id, "Client Run Results", CLIENT_RUN_RESULTS_FIELDS)


def retire_emulator(fake: FakeAirtable) -> None:
    """Stop ``fake`` and, first, the publishers sending to it: with nothing listening they
    would only retry into "Connection refused" (their rows stay in their outbox)."""
    try:
        url = fake.url
    except RuntimeError:  # not started, or already stopped
        return
    for publisher in publishers_to(url):
        publisher.retire()
    fake.stop()


@pytest.fixture
def fake_airtable_factory() -> Iterator[Callable[..., FakeAirtable]]:
    """Make started FakeAirtables with the flask_jobmetrics base; all stopped after the test."""
    started: list[FakeAirtable] = []

    def make(**options: Any) -> FakeAirtable:
        options.setdefault("api_key", API_KEY)
        fake = FakeAirtable(**options)
        add_jobmetrics_tables(fake)
        started.append(fake.start())
        return fake

    yield make
    for fake in started:
        retire_emulator(fake)


@pytest.fixture
def fake_airtable(fake_airtable_factory: Callable[..., FakeAirtable]) -> FakeAirtable:
    """A started FakeAirtable with the flask_jobmetrics base and Airtable's rate limit."""
    return fake_airtable_factory()


@pytest.fixture
def fake_airtable_api(fake_airtable: FakeAirtable) -> Api:
    """A pyairtable ``Api`` for ``fake_airtable`` that does not retry."""
    from pyairtable import Api

    return Api(API_KEY, endpoint_url=fake_airtable.url, retry_strategy=None)
