"""``current_run``, the request hooks, and ``bind_run()`` for code outside requests.

A ``RunContext`` says which run and client the metrics of a request (or of a
``with bind_run(...)`` block) belong to. Metrics given to ``add`` are
normalized at once (invalid values are reported then) and accumulated; they are merged
into the service ONCE, when the request's view answered (``RunContext.answer``; what is
left then, in ``teardown_request``) or the block exits.

``current_run`` is the innermost run context of the current thread (a ``ContextVar``, so
threads never see each other's runs); in a request of an app with JobMetrics it is the
request's context, read from the headers, query parameters and view arguments.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from flask import Flask, Request, Response, after_this_request, has_request_context, request
from werkzeug.datastructures import Headers
from werkzeug.local import LocalProxy

from .deltas import Ops, merge_ops
from .exceptions import InvalidClientIdError, InvalidRunIdError, JobMetricsError, StoreError
from .log import StructuredLogger
from .runids import RunId, validate_client_id
from .state import JobMetricsState, get_state
from .unavailable import STORE_FAILED, store_failed

__all__ = [
    "RunContext",
    "bind_run",
    "current_run",
    "install_request_hooks",
    "read_run",
    "request_run",
]

T = TypeVar("T")
_ENVIRON_KEY = "flask_jobmetrics.run"
_cv_run: ContextVar[RunContext] = ContextVar("flask_jobmetrics.run")


class RunContext:
    """The run and client that added metrics belong to, and the metrics not merged yet."""

    __slots__ = (
        "_completion",
        "_discarded",
        "_error",
        "_lock",
        "_logger",
        "_pending",
        "client_error",
        "client_id",
        "environ",
        "process",
        "run_error",
        "run_id",
        "state",
    )

    def __init__(
        self,
        state: JobMetricsState,
        run_id: str | None,
        client_id: str | None,
        *,
        run_error: JobMetricsError | None = None,
        client_error: JobMetricsError | None = None,
        process: str | None = None,
        environ: dict[str, Any] | None = None,
    ) -> None:
        self.state = state
        #: The WSGI environ of the request this context was read from (None: ``bind_run``).
        self.environ = environ
        #: The base run ID, or None when it is missing or malformed (see ``problem``).
        self.run_id = run_id
        #: The client ID, or None when it is missing or malformed.
        self.client_id = client_id
        self.run_error = run_error
        self.client_error = client_error
        self.process = process
        self._logger: StructuredLogger | None = None
        self._pending: Ops = {}
        self._completion: bool | None = None
        self._error: BaseException | str | None = None
        self._discarded = False
        self._lock = threading.Lock()

    @property
    def problem(self) -> str | None:
        """Why metrics cannot be recorded here (names the header or parameter), or None."""
        if self.run_error is None and self.client_error is None:
            return None
        return "; ".join(str(e) for e in (self.run_error, self.client_error) if e is not None)

    @property
    def pending(self) -> dict[str, Any]:
        """The metrics added and not merged yet: Airtable field name -> combined value."""
        with self._lock:
            return {name: value for name, (_, value) in self._pending.items()}

    def ids(self) -> tuple[str, str]:
        """``(run_id, client_id)``, or the error saying which one is missing or malformed."""
        if self.run_error is not None or self.run_id is None:
            raise self.run_error or InvalidRunIdError("no run ID")
        if self.client_error is not None or self.client_id is None:
            raise self.client_error or InvalidClientIdError("no client ID")
        return self.run_id, self.client_id

    @property
    def logger(self) -> StructuredLogger:
        """A StructuredLogger bound to this run, client and process (made on first use)."""
        logger = self._logger
        if logger is None or logger.process != self.process:
            scope = "CLIENT" if self.client_id else "SYSTEM"
            logger = StructuredLogger.of_run(scope, self.client_id, self.process, self.run_id)
            self._logger = logger
        return logger

    def set_process(self, process: str | None) -> None:
        """Name the process (e.g. ``lead_scoring``) in this context's log lines."""
        self.process = process

    def add(self, metrics: Mapping[str, Any]) -> None:
        """Add metrics, combined by each metric's aggregation and merged once at the end.

        Invalid values are reported now (logged, ``metrics_rejected``; raised in strict
        mode) and never merged. Raises ``InvalidRunIdError``/``InvalidClientIdError`` when
        this context has no valid run or client.
        """
        run, client = self.ids()
        service = self.state.service
        ops, _rejected = service.normalized_ops(metrics, run, client, self.logger)
        with self._lock:
            if not self._discarded:
                if self._pending:
                    merge_ops(self._pending, ops)
                else:  # the usual first add: the new ops are ours (normalized_ops made them)
                    self._pending = ops
                return
        self.logger.warning("metrics added after the request was refused are not recorded: %s", sorted(ops))

    def complete(self, *, success: bool = True, error: BaseException | str | None = None) -> None:
        """Complete the client run when the request or block ends (a failure sticks);
        ``error`` is recorded in its ``Error Details`` (the first one given)."""
        self.ids()
        if error is not None:
            self.record_error(error)
        with self._lock:
            self._completion = success if self._completion is None else (self._completion and success)

    def record_error(self, error: BaseException | str) -> None:
        """Record ``error`` in the client run's ``Error Details`` when the request or block
        ends (the first one given), without completing it."""
        self.ids()
        if not isinstance(error, (BaseException, str)):
            raise TypeError(f"error must be an exception or a string, got {type(error).__name__} {error!r}")
        with self._lock:
            if self._error is None:
                self._error = error

    def log_progress(self, message: str) -> None:
        """Append a timestamped line to this client run's ``Progress Log`` (now: it is buffered)."""
        run, client = self.ids()
        self.state.service.log_progress(run, client, message)

    def discard(self) -> None:
        """Drop everything added and record nothing more (e.g. an unauthenticated request)."""
        with self._lock:
            self._pending = {}
            self._completion = None
            self._error = None
            self._discarded = True

    def finish(self) -> None:
        """Merge the added metrics (and complete, if asked) once: what is added afterwards
        waits for the next ``finish``."""
        if not self._pending and self._completion is None and self._error is None:
            return  # nothing to merge (read without the lock: an add racing this one waits either way)
        with self._lock:
            ops, self._pending = self._pending, {}
            completion, self._completion = self._completion, None
            error, self._error = self._error, None
            if self._discarded or (not ops and completion is None and error is None):
                return
        run, client = self.ids()  # normalized by add(): merged as they are
        if completion is None and error is None:  # the usual request: its counts only, no view
            self.state.service.buffer_ops(run, client, ops, self.logger)
        else:
            self.state.service.merge_client_ops(
                run, client, ops, complete=completion, error=error, logger=self.logger
            )

    def answer(self, response: Response) -> Response:
        """After the view of this request's context answered: merge what was added (nothing
        when the view answered 503 or 500 because the store failed), answer 503 or 500
        (``store_failed``) if the store fails now, and name the run in the response (``X-Run-ID``, unless
        the view set it). The teardown then has nothing left to merge."""
        if self.environ is not None and self.environ.get(STORE_FAILED):
            self.discard()
        try:  # merged now, while the answer can still say the store failed
            self.finish()
        except StoreError as exc:
            response = store_failed(exc)
        if self.run_id is not None:
            _name_run(response.headers, self.state.settings.run_id_header, self.run_id)
        return response

    def answer_later(self) -> None:
        """Have ``answer`` called on this request's response once the view answered (the
        after-request hook ``request_run`` registers)."""
        after_this_request(self.answer)

    def __repr__(self) -> str:
        return f"<RunContext run={self.run_id!r} client={self.client_id!r} problem={self.problem!r}>"


def _name_run(headers: Headers, name: str, run_id: str) -> None:
    """Add the run ID header unless the view set it (``setdefault`` without its look-up
    by exception, and the name compared in C: every request of a run context pays this)."""
    if name.lower() not in map(str.lower, map(_first, headers)):
        items = getattr(headers, "_list", None)  # werkzeug's own list of (name, value)
        if type(items) is list:  # a checked header name and run ID need no re-checking
            items.append((name, run_id))
        else:
            headers.add(name, run_id)


_first = operator.itemgetter(0)


def _lookup() -> RunContext:
    ctx = _cv_run.get(None)
    if ctx is not None:
        return ctx
    if has_request_context():
        return request_run()
    raise RuntimeError(
        "no run context: current_run works in a request of an app with JobMetrics, "
        "or inside 'with bind_run(run_id, client_id, app=app):'"
    )


class _CurrentRun(LocalProxy):  # type: ignore[type-arg]
    """A ``LocalProxy`` of ``_lookup`` whose ``add`` is looked up straight on the context (it
    is read in every request that counts; the proxy's generic look-up costs more than it).
    Like any attribute of the proxy, it is the context's own, bound when it is read."""

    __slots__ = ()

    @property
    def add(self) -> Callable[[Mapping[str, Any]], None]:
        return _lookup().add


#: The run context of this request or ``bind_run`` block: ``run_id``, ``client_id``,
#: ``logger``, ``add(metrics)``.
current_run: RunContext = _CurrentRun(_lookup)  # type: ignore[assignment]


# -- requests -----------------------------------------------------------------------------


def install_request_hooks(app: Flask, state: JobMetricsState) -> None:
    """Merge the metrics of a request once it ended, if it used its run context.

    Nothing is read before a request: its run context is read from the request the first
    time a route, a decorator or a caller asks for it (``request_run``), which also has it
    merged once the view answered (``RunContext.answer``; ``@tracked`` calls it itself). The
    teardown merges what is left (the view raised, or something added after the answer); a
    request that never asked costs one dictionary look-up there.
    """

    @app.teardown_request
    def finish_run_context(exc: BaseException | None) -> None:
        ctx = request._get_current_object().environ.pop(_ENVIRON_KEY, None)  # type: ignore[attr-defined]
        if ctx is None:
            return
        try:
            ctx.finish()
        except Exception:
            ctx.logger.exception("could not merge the metrics of this request")


def request_run() -> RunContext:
    """The current request's run context, read from the request on first use (one pass
    over its headers, query parameters and view arguments).

    Once the view answered, what was added is merged (``answer``, while the response can
    still say the store failed) and the response carries the run ID (``X-Run-ID``).
    """
    ctx, fresh = read_run()
    if fresh:
        ctx.answer_later()
    return ctx


def read_run() -> tuple[RunContext, bool]:
    """(the current request's run context, whether it was read from the request now): the
    look-up ``request_run`` and ``@tracked`` share. A context read now has no after-request
    hook yet: ``request_run`` registers one (``answer_later``); ``@tracked`` calls ``answer``
    itself once its view returned."""
    req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once: a proxy look-up costs
    environ = req.environ
    ctx: RunContext | None = environ.get(_ENVIRON_KEY)
    if ctx is not None:
        return ctx, False  # read before (a before_request function): its hook answers
    ctx = _read_request(get_state(), req)
    environ[_ENVIRON_KEY] = ctx
    return ctx, True


def _reset(token: Token[RunContext]) -> None:
    # A token set in another contextvars.Context (e.g. a generator finalized elsewhere)
    # is not ours to reset.
    with contextlib.suppress(ValueError, RuntimeError):
        _cv_run.reset(token)


@functools.lru_cache(maxsize=64)
def _environ_key(header: str) -> str:
    """The WSGI environ key of a request header (as werkzeug's ``EnvironHeaders`` reads it)."""
    return "HTTP_" + header.upper().replace("-", "_")


def _read_request(state: JobMetricsState, req: Request) -> RunContext:
    """The run and client of the request; problems are kept for ``@tracked``, not raised.

    The common case — each ID given once, in a header or as a view argument, no query
    string — is read with a few dictionary look-ups; anything else by ``_read_sources``.
    """
    settings = state.settings
    environ = req.environ
    view_args = req.view_args or {}
    if not environ.get("QUERY_STRING"):
        run_text = environ.get(_environ_key(settings.run_id_header))
        client_text = environ.get(_environ_key(settings.client_id_header))
        view_run, view_client = view_args.get("run_id"), view_args.get("client_id")
        if (run_text is None) != (view_run is None) and (client_text is None) != (view_client is None):
            try:  # the service's check, which remembers the pairs it passed
                run, client = state.service.checked_ids(
                    run_text if run_text is not None else str(view_run),
                    client_text if client_text is not None else str(view_client),
                )
            except JobMetricsError:
                pass  # the general reader names the source of the problem
            else:
                return RunContext(state, run, client, environ=environ)
    return _read_sources(state, req, view_args)


def _read_sources(state: JobMetricsState, req: Request, view_args: Mapping[str, Any]) -> RunContext:
    """Every source of the run and client IDs, checked to agree; problems name the source."""
    run_header, client_header = state.settings.run_id_header, state.settings.client_id_header
    args = req.args

    def sources(header: str, query: tuple[str, str], view_arg: str) -> list[tuple[str, str | None]]:
        arg = view_args.get(view_arg)
        return [
            (f"header {header}", req.headers.get(header)),
            *((f"query parameter {name}", args.get(name)) for name in query),
            (f"view argument {view_arg}", None if arg is None else str(arg)),
        ]

    run_sources = sources(run_header, ("runId", "run_id"), "run_id")
    runs, run_error = _parse(run_sources, RunId.parse, InvalidRunIdError)
    run, agree_error = _agree(
        runs,
        _base_of,
        InvalidRunIdError,
        f"no run ID: send the {run_header} header, a runId or run_id query parameter, "
        "or a run_id view argument",
    )
    run_error = run_error or agree_error
    client_sources = sources(client_header, ("clientId", "client_id"), "client_id")
    client_sources += [(f"{label} (client part)", r.client) for label, r in runs if r.client]
    clients, client_error = _parse(client_sources, validate_client_id, InvalidClientIdError)
    client, agree_error = _agree(
        clients,
        str,
        InvalidClientIdError,
        f"no client ID: send the {client_header} header, a clientId or client_id query parameter, "
        "or a client_id view argument",
    )
    client_error = client_error or agree_error
    return RunContext(
        state,
        None if run_error else run,
        None if client_error else client,
        run_error=run_error,
        client_error=client_error,
        environ=req.environ,
    )


def _base_of(run_id: RunId) -> str:
    return run_id.base


def _parse(
    sources: Sequence[tuple[str, str | None]], parse: Callable[[str], T], error: type[JobMetricsError]
) -> tuple[list[tuple[str, T]], JobMetricsError | None]:
    found: list[tuple[str, T]] = []
    for label, value in sources:
        if value is None:
            continue
        try:
            found.append((label, parse(value)))
        except error as exc:
            return found, error(f"{label}: {exc}")
    return found, None


def _agree(
    found: Sequence[tuple[str, T]], key: Callable[[T], str], error: type[JobMetricsError], missing: str
) -> tuple[str | None, JobMetricsError | None]:
    """The ``key`` all found values agree on, else the error naming two that disagree."""
    if not found:
        return None, error(missing)
    label, first = found[0]
    for other_label, other in found[1:]:
        if key(other) != key(first):
            return None, error(f"{label} {key(first)!r} and {other_label} {key(other)!r} disagree")
    return key(first), None


# -- outside requests ---------------------------------------------------------------------


@contextmanager
def bind_run(
    run_id: str | RunId, client_id: str | None = None, *, app: Flask | None = None, process: str | None = None
) -> Iterator[RunContext]:
    """Set ``current_run`` for the block; merge what was added when it exits.

    For threads, CLI commands and scripts. ``app`` defaults to ``current_app``. The
    client may come from a client-form run ID. Metrics added before an exception still
    count (a merge failure then is logged, and the block's exception propagates).
    """
    state = get_state(app)
    parsed = RunId.parse(run_id)
    if client_id is not None:
        parsed = parsed.for_client(client_id)
    client_error = None if parsed.client else InvalidClientIdError("no client ID: give bind_run() one")
    ctx = RunContext(state, parsed.base, parsed.client, client_error=client_error, process=process)
    token = _cv_run.set(ctx)
    try:
        yield ctx
    except BaseException:
        _reset(token)
        try:
            ctx.finish()
        except Exception:
            ctx.logger.exception("could not merge the metrics of this run block")
        raise
    _reset(token)
    ctx.finish()
