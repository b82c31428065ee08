"""Errors raised by flask_jobmetrics.

Every error derives from ``JobMetricsError``. The user-facing ones also derive from
a builtin (``ValueError`` or ``RuntimeError``) so that a plain ``except ValueError`` keeps
working. Failures of the libraries underneath (sqlite3, redis, requests) are wrapped in
``StoreError`` with the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .formatting import shorten

__all__ = [
    "ConfigurationError",
    "InvalidClientIdError",
    "InvalidMetricError",
    "InvalidRunIdError",
    "JobMetricsError",
    "NotInitializedError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownRunError",
]


class JobMetricsError(Exception):
    """Base class of every error raised by flask_jobmetrics."""


class ConfigurationError(JobMetricsError, ValueError):
    """A ``JOBMETRICS_*`` config value is invalid; raised by ``init_app``."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"{key}={value!r}: {reason}")


class NotInitializedError(JobMetricsError, RuntimeError):
    """The current app (or the one given) has no ``JobMetrics.init_app``."""


class InvalidRunIdError(JobMetricsError, ValueError):
    """An empty or malformed run ID, or one whose client part disagrees."""


class InvalidClientIdError(JobMetricsError, ValueError):
    """An empty client ID, or one outside ``[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}``."""


class InvalidMetricError(JobMetricsError, ValueError):
    """Invalid metrics in strict mode, or unknown metrics with ``UNKNOWN_METRICS="error"``.

    ``problems`` lists every offending metric of the call as
    ``RejectedMetric``.
    """

    def __init__(self, problems: Sequence[Any]) -> None:
        self.problems = list(problems)
        detail = "; ".join(f"{p.metric}={shorten(p.value)}: {p.reason}" for p in self.problems)
        super().__init__(f"invalid metrics: {detail}")


class StoreError(JobMetricsError):
    """A store call failed. Its outcome may be unknown: the store may have applied the change
    and lost the reply. Buffered updates are kept and re-sent with their delivery token
    (applied once either way); a direct call that raised (a completion, an update with an
    idempotency key, ``start_job``) may have been applied."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached now (its server is down, its file read-only or locked);
    the same call may work later. Other ``StoreError``s are mistakes to fix (a bad URL)."""


class UnknownRunError(JobMetricsError, LookupError):
    """The job run does not exist (it was never started nor updated)."""
