"""What ``init_app`` built for one app, kept in ``app.extensions["jobmetrics"]`` (the one registry).

Every module that wires the extension into an app (request context, decorators, signal
receivers, CLI, dashboard) reads the state from here, so none of them imports the extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from .alerts import Alerter
from .config import Settings
from .exceptions import NotInitializedError
from .service import MetricsService

__all__ = ["EXTENSION_KEY", "JobMetricsState", "get_state", "state_of"]

#: The key of the state in ``app.extensions``.
EXTENSION_KEY = "jobmetrics"


@dataclass(frozen=True)
class JobMetricsState:
    """What one app's ``init_app`` built, in ``app.extensions["jobmetrics"]``."""

    #: The ``JobMetrics`` object that initialised the app.
    extension: Any  # a JobMetrics (this module sits below the extension, so it cannot name it)
    settings: Settings
    service: MetricsService
    #: The alerter of ``JOBMETRICS_ALERT_WEBHOOK_URL`` (stopped with the service), or None.
    alerter: Alerter | None = None


def state_of(app: Flask) -> JobMetricsState | None:
    """The state of ``app``, or None when ``init_app`` was not called for it."""
    state = app.extensions.get(EXTENSION_KEY)
    return state if isinstance(state, JobMetricsState) else None


def get_state(app: Flask | None = None) -> JobMetricsState:
    """The state of ``app`` (default: ``current_app``), or ``NotInitializedError``."""
    if app is None:
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:  # outside an app context
            raise NotInitializedError(
                "flask_jobmetrics needs an app: call it inside an app context"
                " or on a JobMetrics bound to one app"
            ) from None
    state = state_of(app) if app is not None else None
    if state is None:
        raise NotInitializedError(f"JobMetrics.init_app() was not called for app {app.name!r}")
    return state
