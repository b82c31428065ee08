"""What a request sees while the store is unreachable: ``503`` JSON with ``Retry-After``.

``init_app`` registers ``store_unavailable`` as the app's handler of ``StoreError``, so a view
(or a route decorator) that needs the store now answers ``503 {"error": "store_unavailable",
"message": ..., "retry_after": 5}`` rather than Flask's HTML 500 with a traceback in the log.
The log names what failed (the response does not: a sender needs no store host names or
file paths), through the service's outage log: the first refused request, then one line a
minute while the store stays unavailable.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, request

from .exceptions import StoreError
from .state import state_of

__all__ = ["RETRY_AFTER", "STORE_FAILED", "install_store_error_handler", "store_unavailable"]

#: Seconds a client is asked to wait before retrying (``Retry-After``): about the time the
#: extension takes to notice the store is back (its reconnection interval).
RETRY_AFTER = 5

#: Set in the WSGI environ of a request answered 503: its run context records nothing.
STORE_FAILED = "jobmetrics.store_failed"

log = logging.getLogger("flask_jobmetrics")


def store_unavailable(exc: StoreError) -> Response:
    """The ``503`` answer to a request that needed the store while it was unreachable."""
    request.environ[STORE_FAILED] = True
    state = state_of(current_app._get_current_object())  # type: ignore[attr-defined]
    note = log.warning if state is None else state.service.outage.failed
    note("answered 503 to %s %s: the store is unavailable: %s", request.method, request.path, exc)
    response = jsonify(
        error="store_unavailable",
        message="the metrics store is unavailable; this request was not recorded, retry it later",
        retry_after=RETRY_AFTER,
    )
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def install_store_error_handler(app: Flask) -> None:
    """Answer ``StoreError`` with ``store_unavailable`` (an app's own handler registered later wins)."""
    app.register_error_handler(StoreError, store_unavailable)
