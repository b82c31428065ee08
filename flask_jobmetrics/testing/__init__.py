"""Test helpers for flask_jobmetrics users: an emulator of Airtable's REST API.

``FakeAirtable`` serves Airtable's records and metadata APIs over real HTTP, so the real
``pyairtable`` client can be pointed at it (``Api(key, endpoint_url=fake.url)``). See
``docs/testing.md``. The pytest fixture ``fake_airtable`` lives in
:mod:`flask_jobmetrics.testing.pytest_plugin`.
"""

from __future__ import annotations

from ._control import LoggedRequest, ManualClock
from .fake_airtable import FakeAirtable

__all__ = ["FakeAirtable", "LoggedRequest", "ManualClock"]
