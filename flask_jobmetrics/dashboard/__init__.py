"""The operator dashboard and JSON API at ``/jobmetrics`` (``JOBMETRICS_DASHBOARD = True``).

``GET /jobmetrics/`` lists runs, ``/jobmetrics/runs/<run_id>`` shows one with its clients,
``/jobmetrics/api/runs[/<run_id>]`` answers JSON, ``/jobmetrics/metrics`` is the Prometheus
exposition (with the ``prometheus`` extra). See ``docs/dashboard.md``.
"""

from __future__ import annotations

from flask import Flask

from ..state import JobMetricsState

__all__ = ["register_dashboard"]


def register_dashboard(app: Flask, state: JobMetricsState) -> None:
    """Mount the ``jobmetrics`` blueprint on ``app`` when its dashboard is switched on."""
    if not state.settings.dashboard:
        return
    # Loaded only when switched on (templates, charts, the Prometheus exposition).
    from . import api, login, views  # noqa: F401  (each adds its routes to bp)
    from .blueprint import bp

    app.register_blueprint(bp)
