"""The models (and pydantic with them) load on first use, under one fork-safe lock.

``import flask_jobmetrics`` does without pydantic: the first view, rejection, ``health()``
or model name read from the package imports ``flask_jobmetrics.models`` under
``MODEL_LOCK``. That first import may run on any thread — the watchdog's, in a gunicorn
``--preload`` master, while the master forks a worker. A child forked in the middle of it
would inherit the import half done and its locks held by a thread it does not have, and hang
at its own first model. So every first use goes through ``MODEL_LOCK``, a ``ForkSafeLock``
that ``fork()`` waits for: a child starts either before the models were loaded or after.
"""

from __future__ import annotations

from .forksafe import ForkSafeLock

__all__ = ["MODEL_LOCK"]

#: Held while the models are first imported, and while ``views`` makes its classes: every
#: ``from .models import ...`` made at run time is made under it.
MODEL_LOCK = ForkSafeLock(innermost=True)  # nothing is taken while it is held: last at a fork
