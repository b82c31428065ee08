"""What a request sees when a store call it needed failed: ``503`` or ``500`` JSON, no traceback.

``init_app`` registers ``store_failed`` as the app's handler of ``StoreError``, so a view (or
a route decorator) that needs the store answers JSON rather than Flask's HTML 500 with a
traceback in the log:

* ``StoreUnavailableError`` (the store cannot be reached now; the same call may work later):
  ``503 {"error": "store_unavailable", "message": ..., "retry_after": 5}`` with ``Retry-After``;
* any other ``StoreError`` (a mistake a retry cannot fix: a wrong Redis password, a value the
  store cannot hold): ``500 {"error": "store_error", "message": ...}``, without ``Retry-After``.

The log names what failed (the response does not: a sender needs no store host names or
file paths): a ``503`` through the service's outage log (the first refused request, then one
line a minute while the store stays unavailable), a ``500`` as one error line per request.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, request

from .exceptions import StoreError, StoreUnavailableError
from .state import state_of

__all__ = [
    "RETRY_AFTER",
    "STORE_FAILED",
    "install_store_error_handler",
    "store_error",
    "store_failed",
    "store_unavailable",
]

#: Seconds a client is asked to wait before retrying (``Retry-After``): about the time the
#: extension takes to notice the store is back (its reconnection interval).
RETRY_AFTER = 5

#: Set in the WSGI environ of a request answered 503 or 500: its run context records nothing.
STORE_FAILED = "jobmetrics.store_failed"

log = logging.getLogger("flask_jobmetrics")


def store_failed(exc: StoreError) -> Response:
    """The answer to a request whose store call failed: ``store_unavailable`` or ``store_error``."""
    if isinstance(exc, StoreUnavailableError):
        return store_unavailable(exc)
    return store_error(exc)


def store_unavailable(exc: StoreUnavailableError) -> Response:
    """The ``503`` answer to a request that needed the store while it was unreachable."""
    request.environ[STORE_FAILED] = True
    state = state_of(current_app._get_current_object())  # type: ignore[attr-defined]
    note = log.warning if state is None else state.service.outage.failed
    note("answered 503 to %s %s: the store is unavailable: %s", request.method, request.path, exc)
    response = jsonify(
        error="store_unavailable",
        message="the metrics store is unavailable; this request may not have been recorded, retry it later",
        retry_after=RETRY_AFTER,
    )
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def store_error(exc: StoreError) -> Response:
    """The ``500`` answer to a request whose store call failed in a way a retry cannot fix."""
    request.environ[STORE_FAILED] = True
    log.error("answered 500 to %s %s: the store refused the request: %s", request.method, request.path, exc)
    response = jsonify(
        error="store_error",
        message="the metrics store refused this request; retrying it will not help (see the server log)",
    )
    response.status_code = 500
    return response


def install_store_error_handler(app: Flask) -> None:
    """Answer ``StoreError`` with ``store_failed`` (an app's own handler registered later wins)."""
    app.register_error_handler(StoreError, store_failed)
