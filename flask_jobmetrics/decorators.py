"""Route decorators: ``tracked``, ``counts`` and ``signed`` (and ``sign`` for senders).

Put them below ``@app.route``, ``tracked`` first (outermost)::

    @app.post("/runs/<run_id>/clients/<client_id>/score")
    @jobmetrics.tracked(complete=True)
    @jobmetrics.signed
    @jobmetrics.counts("Leads Processed")
    def score(run_id: str, client_id: str) -> dict[str, str]: ...

Metrics added in a request are merged once when it ends (``teardown_request``); the
completion asked by ``tracked(complete=True)`` happens then too, with those metrics, so
the order of ``tracked`` and ``counts`` never turns a count into a late update.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Response, after_this_request, current_app, jsonify, make_response, request
from werkzeug.exceptions import HTTPException

from .context import RunContext, request_run

__all__ = ["SIGNATURE_HEADER", "counts", "sign", "signed", "tracked"]

P = ParamSpec("P")
R = TypeVar("R")
#: The request header carrying ``sha256=<hex>`` of the body.
SIGNATURE_HEADER = "X-Signature"
_SIGNATURE_PREFIX = "sha256="


def _call(view: Callable[P, R], is_async: bool, /, *args: P.args, **kwargs: P.kwargs) -> Response:
    """Run the view (an async one through ``ensure_sync``) and make what it returned a Response."""
    result: Any = current_app.ensure_sync(view)(*args, **kwargs) if is_async else view(*args, **kwargs)
    return result if isinstance(result, Response) else make_response(result)


def _error(status: int, error: str, message: str) -> Response:
    response = jsonify(error=error, message=message)
    response.status_code = status
    return response


# -- tracked ------------------------------------------------------------------------------


def tracked(
    process: str = "lead_scoring", complete: bool = False
) -> Callable[[Callable[P, R]], Callable[P, Response]]:
    """The route needs a valid run and client context, else 400 ``invalid_run_context``.

    ``process`` names the work in ``current_run.logger``. With ``complete=True`` the client
    run is completed when the request ends, with the metrics added during it:

    - the view raised (its exception propagates), or the response is 5xx → ``Failed``;
    - 2xx or 3xx → completed (``Completed``, or ``No Leads To Score`` when nothing was
      examined or processed);
    - 4xx → neither: the request was refused before the work was done (bad input, auth,
      conflict), so the client run is left ``Running`` for a corrected retry; if none
      comes, ``complete_job_metrics`` closes it as ``Failed``.
    """
    if callable(process):
        raise TypeError("tracked needs parentheses: @tracked() or @tracked(process=..., complete=...)")
    if not isinstance(process, str) or not isinstance(complete, bool):
        raise TypeError(f"tracked(process: str, complete: bool), got {process!r}, {complete!r}")

    def decorator(view: Callable[P, R]) -> Callable[P, Response]:
        is_async = inspect.iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            ctx = request_run(names_response=True)
            if ctx.problem is not None:
                return ctx.name_response(_error(400, "invalid_run_context", ctx.problem))
            ctx.set_process(process)
            try:
                response = _call(view, is_async, *args, **kwargs)
            except HTTPException as exc:
                if complete:
                    _complete_for_status(ctx, exc.code or 500)
                after_this_request(ctx.name_response)  # on the error's response
                raise
            except BaseException:
                if complete:
                    ctx.complete(success=False)
                after_this_request(ctx.name_response)  # on an error handler's response
                raise
            if complete:
                _complete_for_status(ctx, response.status_code)
            return ctx.name_response(response)

        return wrapper

    return decorator


def _complete_for_status(ctx: RunContext, status: int) -> None:
    if status >= 500:
        ctx.complete(success=False)
    elif status < 400:
        ctx.complete(success=True)


# -- counts -------------------------------------------------------------------------------


def counts(
    metric: str, value: float | Callable[[Response], Any] = 1
) -> Callable[[Callable[P, R]], Callable[P, Response]]:
    """On each 2xx response add ``value`` (or ``value(response)``) to ``metric``.

    Without a valid run context nothing is added and an error is logged: the response
    the view made is returned unchanged.
    """
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"counts() needs a metric name, got {metric!r}")
    if isinstance(value, bool) or not (callable(value) or isinstance(value, (int, float))):
        raise TypeError(f"counts() value must be a number or a callable taking the response, got {value!r}")

    def decorator(view: Callable[P, R]) -> Callable[P, Response]:
        is_async = inspect.iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            response = _call(view, is_async, *args, **kwargs)
            if 200 <= response.status_code < 300:
                amount = value(response) if callable(value) else value
                ctx = request_run()
                if ctx.problem is not None:
                    ctx.logger.error("%s=%r not counted: %s", metric, amount, ctx.problem)
                else:
                    ctx.add({metric: amount})
            return response

        return wrapper

    return decorator


# -- signed -------------------------------------------------------------------------------


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-Signature`` header value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return _SIGNATURE_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def signed(view: Callable[P, R]) -> Callable[P, Response]:
    """The body must be signed with the secret of the request's client, else 401.

    The secret is the one ``JOBMETRICS_WEBHOOK_SECRETS`` holds for the client ID of the
    request context, so a body signed with client A's secret never records for client B.
    A refused request records nothing: the view does not run and the request's run
    context is discarded. The 401 body does not say which check failed (the log does).
    """

    is_async = inspect.iscoroutinefunction(view)

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        ctx = request_run()
        reason = _signature_problem(ctx)
        if reason is not None:
            ctx.discard()
            ctx.logger.warning("refused a request to %s without a valid signature: %s", request.path, reason)
            return _error(401, "invalid_signature", f"the request needs a valid {SIGNATURE_HEADER} signature")
        return _call(view, is_async, *args, **kwargs)

    return wrapper


def _signature_problem(ctx: RunContext) -> str | None:
    if ctx.client_id is None:
        return str(ctx.client_error or "no client ID")
    secret = ctx.state.settings.webhook_secrets.get(ctx.client_id)
    if secret is None:
        return f"no webhook secret for client {ctx.client_id!r}"
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not given:
        return f"no {SIGNATURE_HEADER} header"
    if not given.lower().startswith(_SIGNATURE_PREFIX):
        return f"{SIGNATURE_HEADER} must be {_SIGNATURE_PREFIX}<hex>"
    expected = sign(request.get_data(cache=True), secret)
    normalized = _SIGNATURE_PREFIX + given[len(_SIGNATURE_PREFIX) :].lower()
    if not hmac.compare_digest(expected.encode(), normalized.encode()):
        return f"{SIGNATURE_HEADER} does not match the body for client {ctx.client_id!r}"
    return None
