"""Helpers shared by the tests (importable, unlike conftest)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

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
