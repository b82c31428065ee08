"""The Flask extension: ``JobMetrics`` (its module-level twins are in ``operations``).

``init_app`` builds an app's service complete (store, publisher, rejection reports), keeps
it in ``app.extensions["jobmetrics"]`` (see ``state``), then wires it into the app: signal
receivers, request hooks, the dashboard and the ``jobmetrics`` CLI group.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, current_app, has_app_context, url_for

from .airtable.app import make_publisher
from .alerts import Alerter
from .buffer import BufferStats
from .cli import jobmetrics_cli
from .config import Settings, read_settings
from .context import bind_run, install_request_hooks
from .dashboard import register_dashboard
from .decorators import counts, signed, tracked
from .events import EventFanOut, RunEvents
from .exceptions import NotInitializedError
from .log import LogFormat, StructuredLogger
from .receivers import SignalEvents, connect_receivers, rejected_sender
from .runids import RunIdLike
from .schema import MetricRegistry, MetricSpec
from .service import MetricsService
from .shutdown import install_sigterm_handler
from .state import EXTENSION_KEY, JobMetricsState, get_state, state_of
from .status import Status
from .stores import open_store
from .unavailable import install_store_error_handler

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import ClientRun, FlushReport, Health, JobRun

# get_state and JobMetricsState live in ``state``; re-exported here, where they used to be.
__all__ = ["JobMetrics", "JobMetricsState", "get_state"]


def _make_alerter(app: Flask, settings: Settings, log_format: LogFormat) -> Alerter | None:
    """The alerter of ``app`` when ``JOBMETRICS_ALERT_WEBHOOK_URL`` is set. Its alerts link to
    the run's dashboard page when the dashboard is on and ``SERVER_NAME`` is configured (Flask
    builds external URLs outside requests from it)."""
    if settings.alert_webhook_url is None:
        return None

    def link(run_id: str) -> str | None:
        if not settings.dashboard or not app.config.get("SERVER_NAME"):
            return None
        with app.app_context():
            return url_for("jobmetrics.run", run_id=run_id, _external=True)

    logger = StructuredLogger("SYSTEM", process="alerts", fmt=log_format)
    return Alerter(settings.alert_webhook_url, link=link, timeout=settings.airtable_timeout, logger=logger)


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
        # With publishing off (and no sender elsewhere) nothing would drain an outbox: keep none.
        # Unreachable now: the app starts anyway, and the store is retried.
        store = open_store(
            settings.store_url, outbox=settings.keeps_outbox, retry_interval=settings.store_retry_interval
        )
        alerts = _make_alerter(app, settings, log_format)
        publisher = make_publisher(app, settings, store, registry, alerts.row_dead if alerts else None)
        # One fan-out hears the service's events: the signals, then the alerts (which it stops).
        listeners: list[RunEvents] = [SignalEvents(app, log_format), *([alerts] if alerts else [])]
        events = EventFanOut(
            *listeners, logger=StructuredLogger("SYSTEM", process="jobmetrics", fmt=log_format)
        )
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
            events=events,
            publisher=publisher,
            log_format=log_format,
            progress_log_chars=settings.progress_log_chars,
            stale_after=settings.stale_after,
        )
        state = JobMetricsState(self, settings, service, alerter=alerts)
        app.extensions[EXTENSION_KEY] = state
        with self._lock:
            self._apps.append(app)
        self._connect(app, state)

    def _connect(self, app: Flask, state: JobMetricsState) -> None:
        """Wire the built service into ``app``: signals, request hooks, dashboard, CLI."""
        connect_receivers()
        install_request_hooks(app, state)
        install_store_error_handler(app)
        if threading.current_thread() is threading.main_thread():
            install_sigterm_handler()  # drain the buffers on SIGTERM; a no-op the second time
        register_dashboard(app, state)
        # Also on app.cli (the entry point serves only the `flask` command): app.test_cli_runner() sees it.
        app.cli.add_command(jobmetrics_cli)
        state.service.start_watchdog()

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

    # -- the service operations, on the app in use

    def update_client_metrics(
        self,
        run_id: RunIdLike,
        client_id: str,
        metrics: Mapping[str, Any] | None,
        *,
        logger: StructuredLogger | None = None,
        idempotency_key: str | None = None,
    ) -> ClientRun:
        """Merge ``metrics`` into the client run (created ``Running`` on first update)."""
        return self.state().service.update_client_metrics(
            run_id, client_id, metrics, logger=logger, idempotency_key=idempotency_key
        )

    def complete_client_metrics(
        self,
        run_id: RunIdLike,
        client_id: str,
        metrics: Mapping[str, Any] | None = None,
        *,
        success: bool | None = None,
        totals: bool = False,
        error: BaseException | str | None = None,
        notes: str | None = None,
        logger: StructuredLogger | None = None,
    ) -> ClientRun:
        """Merge ``metrics``, set ``End Time`` and the final status, and make it durable.

        ``error`` (an exception or a string) goes to ``Error Details`` and makes the run
        ``Failed`` unless ``success=True`` is given; ``notes`` is appended to ``System Notes``."""
        return self.state().service.complete_client_metrics(
            run_id,
            client_id,
            metrics,
            success=success,
            totals=totals,
            error=error,
            notes=notes,
            logger=logger,
        )

    def log_progress(self, run_id: RunIdLike, client_id: str, message: str) -> None:
        """Append a timestamped line to the client run's ``Progress Log``."""
        self.state().service.log_progress(run_id, client_id, message)

    def update_job_aggregate_metrics(
        self, run_id: RunIdLike, *, logger: StructuredLogger | None = None
    ) -> JobRun:
        """Recompute the job row from all of its client runs."""
        return self.state().service.update_job_aggregate_metrics(run_id, logger=logger)

    def complete_job_metrics(
        self,
        run_id: RunIdLike,
        *,
        success: bool = True,
        notes: str = "",
        logger: StructuredLogger | None = None,
    ) -> JobRun:
        """Close still-running clients as Failed, aggregate, and set the job's final status."""
        return self.state().service.complete_job_metrics(run_id, success=success, notes=notes, logger=logger)

    def start_job(
        self, run_id: RunIdLike | None = None, *, notes: str = "", logger: StructuredLogger | None = None
    ) -> JobRun:
        """Create a job run (``Running``); with no ``run_id`` a unique one is reserved."""
        return self.state().service.start_job(run_id, notes=notes, logger=logger)

    def get_client_run(self, run_id: RunIdLike, client_id: str) -> ClientRun | None:
        """The client run as stored plus this process's buffered updates, or None."""
        return self.state().service.get_client_run(run_id, client_id)

    def get_job_run(self, run_id: RunIdLike) -> JobRun | None:
        """The job run (live aggregates while it runs), or None."""
        return self.state().service.get_job_run(run_id)

    def list_job_runs(self, *, limit: int = 50, status: Status | str | None = None) -> list[JobRun]:
        """Job runs by start time, newest first."""
        return self.state().service.list_job_runs(limit=limit, status=status)

    def flush(self, timeout: float | None = None) -> FlushReport:
        """Merge every buffered entry into the store, then publish what waits, until it is sent or
        ``timeout`` seconds passed. Raises StoreError if the buffer cannot reach the store (the
        entries stay buffered)."""
        return self.state().service.flush(timeout)

    def health(self) -> Health:
        """Whether the store answers, as this process last saw it (no store call is made)."""
        return self.state().service.health()

    tracked = staticmethod(tracked)
    counts = staticmethod(counts)
    signed = staticmethod(signed)
    bind_run = staticmethod(bind_run)
