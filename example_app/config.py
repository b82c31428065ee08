"""The example app's configuration, read from environment variables.

Every ``JOBMETRICS_*`` variable becomes the config key of the same name. Keys whose value
is a number, a ``(connect, read)`` pair or a mapping (``JOBMETRICS_WEBHOOK_SECRETS``) are
read as JSON; the others stay strings (``JOBMETRICS_DASHBOARD=1`` and ``=true`` both work).
A value that does not parse is passed on as given, and ``init_app`` then names the key in
its ``ConfigurationError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from flask_jobmetrics.config import DEFAULTS, PREFIX

__all__ = ["ENV_PREFIX", "INSTANCE_ENV", "config_from_env", "instance_path"]

ENV_PREFIX = PREFIX  # the variables are named like the config keys
#: The instance folder (default ``./instance``): the SQLite store lives there.
INSTANCE_ENV = "EXAMPLE_APP_INSTANCE"


def instance_path(environ: Mapping[str, str] | None = None) -> str:
    """The instance folder: ``$EXAMPLE_APP_INSTANCE``, else ``instance`` in the working directory."""
    env = os.environ if environ is None else environ
    return os.path.abspath(env.get(INSTANCE_ENV) or os.path.join(os.getcwd(), "instance"))


def config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``JOBMETRICS_*`` variables of ``environ`` (default ``os.environ``) as config keys."""
    env = os.environ if environ is None else environ
    return {
        name: _value(name[len(ENV_PREFIX) :], raw) for name, raw in env.items() if name.startswith(ENV_PREFIX)
    }


def _value(key: str, raw: str) -> Any:
    default = DEFAULTS.get(key)
    if default is None or isinstance(default, (str, bool)):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw
