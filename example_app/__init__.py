"""An example multi-tenant lead-scoring webhook server using flask_jobmetrics.

``create_app()`` is the app factory; ``python -m example_app demo`` runs the demo.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from flask_jobmetrics import JobMetrics

__all__ = ["create_app", "jobmetrics"]

jobmetrics = JobMetrics()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``JOBMETRICS_*`` environment variables override the defaults."""
    app = Flask(
        __name__, instance_path=os.environ.get("EXAMPLE_APP_INSTANCE", os.path.join(os.getcwd(), "instance"))
    )
    app.config.from_prefixed_env("JOBMETRICS", loads=_loads)
    for key in [k for k in app.config if k.startswith("JOBMETRICS") and not k.startswith("JOBMETRICS_")]:
        app.config["JOBMETRICS_" + key[len("JOBMETRICS") :].lstrip("_")] = app.config.pop(key)
    if config:
        app.config.update(config)
    jobmetrics.init_app(app)

    from .demo import demo_command

    app.cli.add_command(demo_command)
    return app


def _loads(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value
