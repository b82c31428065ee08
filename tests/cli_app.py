"""A tiny app for the command-line tests: ``flask --app tests/cli_app.py jobmetrics ...``.

The store comes from the environment: ``FLASK_JOBMETRICS_STORE_URL=sqlite:////path/file``.
"""

from __future__ import annotations

from flask import Flask

from flask_jobmetrics import JobMetrics

app = Flask(__name__)
app.config.from_prefixed_env()
JobMetrics(app)
