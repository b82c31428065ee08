"""An example multi-tenant webhook server (lead scoring, post harvesting, post scoring)
using flask_jobmetrics, in the shape of the server it replaces.

``create_app()`` is the app factory; ``python -m example_app demo`` runs the demo; the
routes are in ``routes.py`` and described in ``docs/example-app.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .background import EXTENSION_KEY, BackgroundWork
from .config import config_from_env, instance_path
from .ext import jobmetrics

__all__ = ["create_app", "jobmetrics"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: ``JOBMETRICS_*`` environment variables, then ``config``, then ``init_app``.

    The instance folder (where the SQLite store lives by default) is
    ``$EXAMPLE_APP_INSTANCE`` or ``./instance``.
    """
    from .demo import demo_command
    from .routes import bp

    app = Flask(__name__, instance_path=instance_path())
    app.config.update(config_from_env())
    if config:
        app.config.update(config)
    jobmetrics.init_app(app)
    app.extensions[EXTENSION_KEY] = BackgroundWork()
    app.register_blueprint(bp)
    app.cli.add_command(demo_command)
    return app
