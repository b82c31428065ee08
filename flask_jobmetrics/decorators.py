"""Route decorators: ``tracked``, ``counts`` and ``signed`` (and ``sign`` for senders).

Put them below ``@app.route``, ``tracked`` first (outermost)::

    @app.post("/runs/<run_id>/clients/<client_id>/score")
    @jobmetrics.tracked(complete=True)
    @jobmetrics.signed
    @jobmetrics.counts("Leads Processed")
    def score(run_id: str, client_id: str) -> dict[str, str]: ...

Metrics added in a request are merged once its view answered: by ``tracked()`` itself when
the view returned, else by the after-request function of the request's run context (also
for a view that raised, when Flask makes the error response); what is left — the exception
propagated, or a decorator outside a plain ``tracked()`` added after it merged — in
``teardown_request``. The completion asked by ``tracked(complete=True)`` waits for that
after-request function, with every metric added before it, so with ``complete=True`` the
order of ``tracked`` and ``counts`` never turns a count into a late update.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Response, current_app, jsonify, make_response, request
from werkzeug.exceptions import HTTPException

from .context import RunContext, read_run, request_run

__all__ = ["SIGNATURE_HEADER", "counts", "sign", "sign_timestamped", "signed", "tracked"]

P = ParamSpec("P")
R = TypeVar("R")
#: The request header carrying the signature: ``t=<unix>,v1=<hex>`` (timestamped, see
#: ``sign_timestamped``) or ``sha256=<hex>`` of the body alone (see ``sign``).
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

    - the view raised (its exception propagates), or the response is 5xx → ``Failed``, the
      exception (or ``HTTP 500 response``) in its ``Error Details``;
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
            ctx, fresh = read_run()
            # Merged here once the view answered, unless a completion waits for the after-request
            # hook (it then includes what the view's outer decorators add, e.g. a count).
            answer_now = fresh and not complete
            if fresh and complete:
                ctx.answer_later()
            if ctx.problem is not None:
                refused = _error(400, "invalid_run_context", ctx.problem)
                return ctx.answer(refused) if answer_now else refused
            ctx.set_process(process)
            try:
                response = _call(view, is_async, *args, **kwargs)  # what cannot be a response raises here
            except BaseException as exc:
                if answer_now:  # the response Flask makes of the error is answered like any
                    ctx.answer_later()
                if isinstance(exc, HTTPException):  # abort(response) carries its status on the response
                    status = exc.code or (exc.response.status_code if exc.response is not None else 500)
                    _finish_for_status(ctx, status, complete, exc)
                elif complete:
                    ctx.complete(success=False, error=exc)
                else:
                    ctx.record_error(exc)
                raise
            if answer_now:  # what an outer decorator adds after this, the teardown merges
                return ctx.answer(response)
            if complete:
                _finish_for_status(ctx, response.status_code, complete)
            return response

        return wrapper

    return decorator


def _finish_for_status(
    ctx: RunContext, status: int, complete: bool, exc: BaseException | None = None
) -> None:
    """With ``complete`` a 5xx fails the run with its error and a 2xx/3xx completes it;
    without, only a raised 5xx is recorded (in ``Error Details``)."""
    if status >= 500:
        if complete:
            ctx.complete(success=False, error=exc if exc is not None else f"HTTP {status} response")
        elif exc is not None:
            ctx.record_error(exc)
    elif status < 400 and complete:
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


def _hmac(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str | bytes) -> str:
    """The plain ``X-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256 of the body>``.

    It does not expire: a captured request can be replayed. Prefer ``sign_timestamped``.
    """
    return _SIGNATURE_PREFIX + _hmac(secret, body)


def sign_timestamped(body: bytes, secret: str | bytes, timestamp: int | None = None) -> str:
    """The timestamped ``X-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`` (``timestamp`` defaults to now). Accepted within
    ``JOBMETRICS_WEBHOOK_TOLERANCE`` seconds of the receiver's clock."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={_hmac(secret, str(t).encode() + b'.' + body)}"


def signed(view: Callable[P, R]) -> Callable[P, Response]:
    """The request must be signed with the secret of the request's client, else 401.

    ``X-Signature`` is either timestamped, ``t=<unix>,v1=<hex>`` over ``"<t>.<body>"``
    (refused more than ``JOBMETRICS_WEBHOOK_TOLERANCE`` seconds from now, so a captured
    request cannot be replayed later; several ``v1=`` are allowed while a secret rotates),
    or plain, ``sha256=<hex>`` of the body alone (refused with
    ``JOBMETRICS_WEBHOOK_REQUIRE_TIMESTAMP``). The secret is the one
    ``JOBMETRICS_WEBHOOK_SECRETS`` holds for the client ID of the request context, so a body
    signed with client A's secret never records for client B. A refused request records
    nothing: the view does not run and the request's run context is discarded. The 401
    body does not say which check failed (the log does).
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
    settings = ctx.state.settings
    secret = settings.webhook_secrets.get(ctx.client_id)
    if secret is None:
        return f"no webhook secret for client {ctx.client_id!r}"
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not given:
        return f"no {SIGNATURE_HEADER} header"
    body = request.get_data(cache=True)
    if given.lower().startswith(_SIGNATURE_PREFIX):
        if settings.webhook_require_timestamp:
            return f"{SIGNATURE_HEADER} must be timestamped (t=<unix>,v1=<hex>) with REQUIRE_TIMESTAMP on"
        expected = sign(body, secret)
        normalized = _SIGNATURE_PREFIX + given[len(_SIGNATURE_PREFIX) :].lower()
        if not hmac.compare_digest(expected.encode(), normalized.encode()):
            return f"{SIGNATURE_HEADER} does not match the body for client {ctx.client_id!r}"
        return None
    return _timestamped_problem(given, body, secret, settings.webhook_tolerance, ctx.client_id)


def _timestamped_problem(given: str, body: bytes, secret: bytes, tolerance: float, client: str) -> str | None:
    """What is wrong with a ``t=<unix>,v1=<hex>[,v1=<hex>...]`` signature, or None."""
    stamps: list[str] = []
    signatures: list[str] = []
    for part in given.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamps.append(value.strip())
        elif name == "v1":
            signatures.append(value.strip().lower())
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        return f"{SIGNATURE_HEADER} must be {_SIGNATURE_PREFIX}<hex> or t=<unix seconds>,v1=<hex>"
    age = time.time() - int(stamps[0])
    if abs(age) > tolerance:
        return f"{SIGNATURE_HEADER} timestamp is {age:.0f} s off (tolerance {tolerance:g} s): replayed?"
    expected = _hmac(secret, stamps[0].encode() + b"." + body).encode()
    if not any(hmac.compare_digest(expected, signature.encode()) for signature in signatures):
        return f"{SIGNATURE_HEADER} does not match the timestamp and body for client {client!r}"
    return None
