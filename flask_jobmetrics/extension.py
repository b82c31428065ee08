"""The Flask extension: ``JobMetrics``, and the service operations on ``current_app``.

``init_app`` builds an app's service complete (store, publisher, rejection reports), keeps
it in ``app.extensions["jobmetrics"]`` (see ``state``), then wires it into the app: signal
receivers, request hooks, the dashboard and the ``jobmetrics`` CLI group.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from flask import Flask, current_app, has_app_context

from .airtable.app import make_publisher
from .config import read_settings
from .context import bind_run, install_request_hooks
from .dashboard import register_dashboard
from .decorators import counts, signed, tracked
from .exceptions import NotInitializedError
from .log import LogFormat
from .receivers import connect_receivers, rejected_sender
from .schema import MetricRegistry, MetricSpec
from .service import MetricsService
from .shutdown import install_sigterm_handler
from .state import EXTENSION_KEY, JobMetricsState, get_state, state_of
from .stores import open_store
from .unavailable import install_store_error_handler

if TYPE_CHECKING:
    from .buffer import BufferStats

# get_state and JobMetricsState live in ``state``; they are re-exported here for existing imports.
__all__ = ["JobMetrics", "JobMetricsState", "get_state"]

P = ParamSpec("P")
R = TypeVar("R")


def _on_current_app(method: Callable[Concatenate[MetricsService, P], R]) -> Callable[P, R]:
    """A module-level function calling ``method`` on ``current_app``'s service."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return method(get_state().service, *args, **kwargs)

    return call


def _on_bound_app(
    method: Callable[Concatenate[MetricsService, P], R],
) -> Callable[Concatenate[JobMetrics, P], R]:
    """A ``JobMetrics`` method calling ``method`` on the service of the app in use."""

    def call(self: JobMetrics, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self.state().service, *args, **kwargs)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class JobMetrics:
    """The flask_jobmetrics extension: ``JobMetrics(app)`` or ``JobMetrics()`` + ``init_app``.

    One object may serve several apps; the service methods act on the app of the current
    app context, or on the only app this object was initialised on.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._metric_specs: list[MetricSpec] = []
        #: The apps this object initialised (each keeps its state in ``app.extensions``).
        self._apps: list[Flask] = []
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the ``JOBMETRICS_*`` config, open the store and register the app's state."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"JobMetrics is already initialised on app {app.name!r}")
        settings = read_settings(app.config, app.instance_path)
        log_format = cast(LogFormat, settings.log_format)  # checked by read_settings
        registry = MetricRegistry()
        with self._lock:
            for spec in self._metric_specs:
                registry.register(spec)
        store = open_store(settings.store_url)  # unreachable: the app starts, the store is retried
        publisher = make_publisher(app, settings, store, registry)
        service = MetricsService(
            store,
            registry=registry,
            strict=settings.strict,
            unknown_metrics=settings.unknown_metrics,
            buffer_ttl=settings.buffer_ttl,
            flush_interval=settings.flush_interval,
            buffer_maxsize=settings.buffer_maxsize,
            on_rejected=rejected_sender(app, log_format),
            on_stored=publisher.wake if publisher is not None else None,
            publisher=publisher,
            log_format=log_format,
        )
        state = JobMetricsState(self, settings, service)
        app.extensions[EXTENSION_KEY] = state
        with self._lock:
            self._apps.append(app)
        self._connect(app, state)

    def _connect(self, app: Flask, state: JobMetricsState) -> None:
        """Wire the built service into ``app``: signals, request hooks, dashboard."""
        connect_receivers()
        install_request_hooks(app, state)
        install_store_error_handler(app)
        if threading.current_thread() is threading.main_thread():
            install_sigterm_handler()  # drain the buffers on SIGTERM; a no-op the second time
        register_dashboard(app, state)

    def state(self, app: Flask | None = None) -> JobMetricsState:
        """The state of ``app``, of the current app, or of the only app of this object."""
        if app is None and has_app_context():
            found = state_of(current_app)
            if found is not None and found.extension is self:
                return found
        if app is not None:
            return get_state(app)
        with self._lock:
            states = [state for state in map(state_of, self._apps) if state is not None]
        if len(states) == 1:
            return states[0]
        raise NotInitializedError(
            "this JobMetrics serves no app yet"
            if not states
            else "this JobMetrics serves several apps: call it inside an app context"
        )

    def register_metric(self, spec: MetricSpec) -> None:
        """Register a metric for every app of this object, present and future."""
        with self._lock:
            states = [state for state in map(state_of, self._apps) if state is not None]
            self._metric_specs.append(spec)
        for state in states:
            state.service.registry.register(spec)

    def stats(self) -> BufferStats:
        """This process's buffer counters for the app in use."""
        return self.state().service.buffer.stats()

    update_client_metrics = _on_bound_app(MetricsService.update_client_metrics)
    complete_client_metrics = _on_bound_app(MetricsService.complete_client_metrics)
    update_job_aggregate_metrics = _on_bound_app(MetricsService.update_job_aggregate_metrics)
    complete_job_metrics = _on_bound_app(MetricsService.complete_job_metrics)
    start_job = _on_bound_app(MetricsService.start_job)
    get_client_run = _on_bound_app(MetricsService.get_client_run)
    get_job_run = _on_bound_app(MetricsService.get_job_run)
    list_job_runs = _on_bound_app(MetricsService.list_job_runs)
    flush = _on_bound_app(MetricsService.flush)
    health = _on_bound_app(MetricsService.health)
    tracked = staticmethod(tracked)
    counts = staticmethod(counts)
    signed = staticmethod(signed)
    bind_run = staticmethod(bind_run)


update_client_metrics = _on_current_app(MetricsService.update_client_metrics)
complete_client_metrics = _on_current_app(MetricsService.complete_client_metrics)
update_job_aggregate_metrics = _on_current_app(MetricsService.update_job_aggregate_metrics)
complete_job_metrics = _on_current_app(MetricsService.complete_job_metrics)
start_job = _on_current_app(MetricsService.start_job)
get_client_run = _on_current_app(MetricsService.get_client_run)
get_job_run = _on_current_app(MetricsService.get_job_run)
list_job_runs = _on_current_app(MetricsService.list_job_runs)
flush = _on_current_app(MetricsService.flush)
health = _on_current_app(MetricsService.health)


def register_metric(spec: MetricSpec) -> None:
    """Register a metric on ``current_app``."""
    get_state().service.registry.register(spec)


def stats() -> BufferStats:
    """This process's buffer counters for ``current_app``."""
    return get_state().service.buffer.stats()


del Any
