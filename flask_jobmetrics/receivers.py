"""The extension's receivers of the input signals, and the sender of ``metrics_rejected``.

The receivers are module-level functions connected once to every sender
(``weak=False``); each looks the sender's state up in its ``app.extensions``, so a signal
sent with app A drives only app A's service, and an app without ``init_app`` is ignored.
The sender (the app) is all a receiver needs: it works in a request, in a background
thread with or without an app context, and from the CLI.

A receiver never raises into the sender's code: a missing, unexpected or wrongly typed
kwarg is logged as one error naming it, and an error of the operation is logged with the
run and client.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context

from . import signals
from .exceptions import JobMetricsError
from .log import LogFormat, StructuredLogger
from .runids import RunId
from .state import JobMetricsState, state_of

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import RejectedMetric

__all__ = ["SignalEvents", "connect_receivers", "rejected_sender"]

_REQUIRED: Any = object()
#: kwarg name -> (default or _REQUIRED, accepted types, description of the accepted types)
KwargSpec = dict[str, tuple[Any, tuple[type, ...], str]]
Action = Callable[[JobMetricsState, dict[str, Any], StructuredLogger], object]

_RUN_ID = (_REQUIRED, (str, RunId), "a run ID string")
_CLIENT_ID = (_REQUIRED, (str,), "a client ID string")
_SUCCESS = (True, (bool,), "True or False")

_CLIENT_UPDATED: KwargSpec = {
    "run_id": _RUN_ID,
    "client_id": _CLIENT_ID,
    "metrics": (_REQUIRED, (Mapping,), "a mapping of metric name to value"),
    "idempotency_key": (None, (str, type(None)), "a string or None"),
}
_CLIENT_COMPLETED: KwargSpec = {
    "run_id": _RUN_ID,
    "client_id": _CLIENT_ID,
    "metrics": (None, (Mapping, type(None)), "a mapping of metric name to value, or None"),
    "success": (None, (bool, type(None)), "True or False (or None: True unless an error is given)"),
    "totals": (False, (bool,), "True or False"),
    "error": (None, (BaseException, str, type(None)), "an exception, a string or None"),
    "notes": (None, (str, type(None)), "a string or None"),
}
_JOB_COMPLETED: KwargSpec = {
    "run_id": _RUN_ID,
    "success": _SUCCESS,
    "notes": ("", (str,), "a string"),
}


def connect_receivers() -> None:
    """Let the input signals drive the service of their sender's app (once per process)."""
    # Connecting the same receiver again is a no-op in blinker.
    signals.client_metrics_updated.connect(_on_client_metrics_updated, weak=False)
    signals.client_completed.connect(_on_client_completed, weak=False)
    signals.job_completed.connect(_on_job_completed, weak=False)


def rejected_sender(
    app: Flask, log_format: LogFormat | None = None
) -> Callable[[str, str, list[RejectedMetric]], None]:
    """An ``on_rejected`` hook sending ``metrics_rejected`` with ``app`` as sender (held weakly)."""
    send = _output_sender(app, signals.metrics_rejected, "metrics-rejected", log_format)

    def rejected(run_id: str, client_id: str, rejected: list[RejectedMetric]) -> None:
        send(run_id=run_id, client_id=client_id, rejected=rejected)

    return rejected


def _output_sender(app: Flask, signal: Any, what: str, log_format: LogFormat | None) -> Callable[..., None]:
    """Send ``signal`` with ``app`` as sender (held weakly); a receiver's failure is logged."""
    app_ref = weakref.ref(app)
    log = StructuredLogger("SYSTEM", process="jobmetrics", fmt=log_format)

    def send(**kwargs: Any) -> None:
        app = app_ref()
        if app is None:
            return
        try:  # an observer's failure must not undo (or lose) what was recorded
            signal.send(app, **kwargs)
        except Exception:
            client = kwargs.get("client_id")
            bound = log.bind(scope="CLIENT", client_id=client) if client else log
            bound.bind(run_id=kwargs.get("run_id")).exception("a %s receiver failed", what)

    return send


class SignalEvents:
    """The ``RunEvents`` that send ``client_failed`` (stalled clients too, as documented) and
    ``run_stalled`` with ``app`` as sender (held weakly); a receiver's failure is logged."""

    def __init__(self, app: Flask, log_format: LogFormat | None = None) -> None:
        self._client_failed = _output_sender(app, signals.client_failed, "client-failed", log_format)
        self._run_stalled = _output_sender(app, signals.run_stalled, "run-stalled", log_format)

    def client_failed(self, run_id: str, client_id: str, error: str | None, *, stalled: bool = False) -> None:
        self._client_failed(run_id=run_id, client_id=client_id, error=error)

    def job_failed(self, run_id: str, notes: str) -> None:
        """No signal of its own (there is none for a failed job)."""

    def run_stalled(self, run_id: str, client_ids: Sequence[str]) -> None:
        self._run_stalled(run_id=run_id, client_ids=list(client_ids))

    def close(self) -> None:
        """Nothing runs in the background."""


# -- receivers ----------------------------------------------------------------------------


def _on_client_metrics_updated(sender: Any, **kwargs: Any) -> None:
    _receive("client-metrics-updated", _CLIENT_UPDATED, sender, kwargs, _update_client)


def _on_client_completed(sender: Any, **kwargs: Any) -> None:
    _receive("client-completed", _CLIENT_COMPLETED, sender, kwargs, _complete_client)


def _on_job_completed(sender: Any, **kwargs: Any) -> None:
    _receive("job-completed", _JOB_COMPLETED, sender, kwargs, _complete_job)


def _update_client(state: JobMetricsState, args: dict[str, Any], log: StructuredLogger) -> object:
    return state.service.update_client_metrics(
        args["run_id"],
        args["client_id"],
        args["metrics"],
        logger=log,
        idempotency_key=args["idempotency_key"],
    )


def _complete_client(state: JobMetricsState, args: dict[str, Any], log: StructuredLogger) -> object:
    return state.service.complete_client_metrics(
        args["run_id"],
        args["client_id"],
        args["metrics"],
        success=args["success"],
        totals=args["totals"],
        error=args["error"],
        notes=args["notes"],
        logger=log,
    )


def _complete_job(state: JobMetricsState, args: dict[str, Any], log: StructuredLogger) -> object:
    return state.service.complete_job_metrics(
        args["run_id"], success=args["success"], notes=args["notes"], logger=log
    )


# -- plumbing -----------------------------------------------------------------------------


def _receive(name: str, spec: KwargSpec, sender: Any, kwargs: dict[str, Any], action: Action) -> None:
    """Check the kwargs, then run ``action`` for the sender's app; log, never raise."""
    app = _unwrap(sender)
    log = _logger_for(kwargs)
    state = state_of(app) if isinstance(app, Flask) else None
    if state is None:
        log.warning("%s signal ignored: its sender %r is not an app with JobMetrics", name, sender)
        return
    args, problems = _check_kwargs(spec, kwargs)
    if problems:
        log.error("%s signal ignored: %s", name, "; ".join(problems))
        return
    try:
        with _app_context(app):
            action(state, args, log)
    except JobMetricsError as exc:
        log.error("%s signal: %s: %s", name, type(exc).__name__, exc)
    except Exception:
        log.exception("%s signal: the operation failed", name)


def _check_kwargs(spec: KwargSpec, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    args: dict[str, Any] = {}
    problems: list[str] = []
    for key, (default, types, expected) in spec.items():
        if key not in kwargs:
            if default is _REQUIRED:
                problems.append(f"missing kwarg {key!r}")
            args[key] = default
            continue
        value = kwargs[key]
        if not isinstance(value, types):
            problems.append(f"kwarg {key!r} must be {expected}, got {type(value).__name__} {value!r:.80}")
        args[key] = value
    problems.extend(f"unexpected kwarg {key!r}" for key in kwargs if key not in spec)
    return args, problems


def _unwrap(sender: Any) -> Any:
    """The app behind ``sender`` (``current_app`` is a proxy; blinker compares identities)."""
    get = getattr(sender, "_get_current_object", None)
    if callable(get):
        with contextlib.suppress(RuntimeError):  # an unbound proxy
            return get()
    return sender


def _logger_for(kwargs: Mapping[str, Any]) -> StructuredLogger:
    run_id, client_id = kwargs.get("run_id"), kwargs.get("client_id")
    run = str(run_id) if isinstance(run_id, (str, RunId)) else None
    client = client_id if isinstance(client_id, str) and client_id else None
    return StructuredLogger("CLIENT" if client else "SYSTEM", client, "signals", run_id=run)


@contextlib.contextmanager
def _app_context(app: Flask) -> Iterator[None]:
    """Run in ``app``'s context (pushed when another app's, or none, is current)."""
    if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        yield
        return
    with app.app_context():
        yield
