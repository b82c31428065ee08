"""Checking what callers pass: argument types, idempotency keys, and sorting one update's
metrics into values, rejections and unknown names (the policy is applied by the service)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidMetricError
from .formatting import shorten
from .schema import (
    ERROR_DETAILS,
    PROGRESS_LOG,
    SYSTEM_NOTES,
    MetricRegistry,
    normalize_datetime,
    normalize_number,
    rejection,
    snake_case,
)
from .spelling import did_you_mean

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import RejectedMetric

__all__ = ["check_bool", "check_text", "idempotency_key", "sort_update"]


def idempotency_key(*parts: object) -> str:
    """A stable idempotency key from ``parts`` (e.g. a webhook source and its event ID)."""
    if not parts or any(p is None or p == "" for p in parts):
        raise ValueError(f"idempotency_key needs non-empty parts, got {parts!r}")
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"idem:{digest[:40]}"


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (a truthy string is not taken for True), else TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_text(name: str, value: Any) -> str:
    """``value`` if it is a string, else TypeError naming the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    return value


#: The client row's texts that are not metrics, by snake_case name, and how to write them.
_NOT_METRICS = {
    snake_case(SYSTEM_NOTES): " (System Notes: use complete_client_metrics(notes=...))",
    snake_case(ERROR_DETAILS): " (Error Details: use complete_client_metrics(error=...))",
    snake_case(PROGRESS_LOG): " (Progress Log: use log_progress(...))",
}


def _keep_value(value: Any) -> Any:
    """A value of an unknown metric kept with ``UNKNOWN_METRICS="keep"``."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, datetime):
        return normalize_datetime(value)  # aware UTC, as every stored time
    return normalize_number(value)


def sort_update(
    registry: MetricRegistry, metrics: Any, *, keep_unknown: bool
) -> tuple[dict[str, Any], list[RejectedMetric], list[RejectedMetric]]:
    """One update's metrics -> (values by field, invalid values, unknown names not kept).

    ``None`` means "no metrics"; anything but a mapping raises ``InvalidMetricError``.
    """
    if metrics is None:
        metrics = {}
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        problem = rejection("metrics", metrics, "must be a mapping of name to value")
        raise InvalidMetricError([problem])
    values, rejected, unknown = registry.normalize(metrics)
    unknown_rejected: list[RejectedMetric] = []
    for name, value in unknown.items():
        if not keep_unknown:
            hint = _NOT_METRICS.get(snake_case(name))
            reason = "unknown metric" + (hint or did_you_mean(name, (spec.field for spec in registry.specs)))
            unknown_rejected.append(rejection(name, value, reason))
            continue
        try:
            values[name] = _keep_value(value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            rejected.append(rejection(name, value, shorten(exc, 300, quote=False)))
    return values, rejected, unknown_rejected
