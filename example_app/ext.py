"""The example app's ``JobMetrics`` object (a module of its own so every module can import it)."""

from __future__ import annotations

from flask_jobmetrics import JobMetrics

__all__ = ["jobmetrics"]

#: One extension object for every app ``create_app()`` builds; each app has its own state.
jobmetrics = JobMetrics()
