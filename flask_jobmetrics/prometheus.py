"""Prometheus exposition of running and recently finished job runs (the ``prometheus`` extra).

``JobMetricsCollector`` reads the store on every scrape and yields gauges for the job
runs still ``Running`` and those that finished less than ``retention`` ago (default
``DEFAULT_RETENTION``, one hour). Older runs simply stop being exported, so the number
of series stays bounded by what is recent. The dashboard serves it at ``/jobmetrics/metrics``;
it can also be registered on any ``CollectorRegistry``::

    from prometheus_client import REGISTRY
    REGISTRY.register(JobMetricsCollector(get_state(app).service))

Importing this module needs ``prometheus_client`` (``pip install 'flask-jobmetrics[prometheus]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from .exceptions import StoreError
from .schema import snake_case
from .service import MetricsService
from .status import Status

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import ClientRun, JobRun

__all__ = ["DEFAULT_RETENTION", "MAX_RUNS", "JobMetricsCollector", "exposition"]

#: Finished runs are exported for this long after their end time.
DEFAULT_RETENTION = timedelta(hours=1)
#: At most this many runs (newest first) are looked at per scrape.
MAX_RUNS = 500

_CLIENT_STATUSES = tuple(s for s in Status if s is not Status.COMPLETED_WITH_ERRORS)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _Families:
    """The metric families of one scrape, empty until filled."""

    def __init__(self) -> None:
        run = ["run_id"]
        client = ["run_id", "client_id"]
        self.up = GaugeMetricFamily(
            "jobmetrics_store_up", "1 when the metrics store answered this scrape, else 0."
        )
        self.runs = GaugeMetricFamily(
            "jobmetrics_exported_runs", "Job runs exported by this scrape (running or recently finished)."
        )
        self.job_status = GaugeMetricFamily(
            "jobmetrics_job_status",
            "1 for the job run's current status, 0 for the others.",
            labels=[*run, "status"],
        )
        self.job_clients = GaugeMetricFamily(
            "jobmetrics_job_clients",
            "Client runs of a job by state: total, done (not Running), running, failed (do not sum them).",
            labels=[*run, "state"],
        )
        self.job_metric = GaugeMetricFamily(
            "jobmetrics_job_metric",
            "Job aggregate by metric (snake_case of the Airtable field name).",
            labels=[*run, "metric"],
        )
        self.job_start = GaugeMetricFamily(
            "jobmetrics_job_start_time_seconds", "Job start, Unix time.", labels=run
        )
        self.job_end = GaugeMetricFamily(
            "jobmetrics_job_end_time_seconds", "Job end, Unix time (finished runs only).", labels=run
        )
        self.job_duration = GaugeMetricFamily(
            "jobmetrics_job_duration_seconds",
            "End minus start, or now minus start while Running.",
            labels=run,
        )
        self.client_status = GaugeMetricFamily(
            "jobmetrics_client_status",
            "1 for the client run's current status, 0 for the others.",
            labels=[*client, "status"],
        )
        self.client_metric = GaugeMetricFamily(
            "jobmetrics_client_metric",
            "Client run total by metric (snake_case of the Airtable field name).",
            labels=[*client, "metric"],
        )
        self.client_duration = GaugeMetricFamily(
            "jobmetrics_client_duration_seconds",
            "End minus start, or now minus start while Running.",
            labels=client,
        )

    def all(self) -> list[Metric]:
        return [
            self.up,
            self.runs,
            self.job_status,
            self.job_clients,
            self.job_metric,
            self.job_start,
            self.job_end,
            self.job_duration,
            self.client_status,
            self.client_metric,
            self.client_duration,
        ]


def _duration(start: datetime | None, end: datetime | None, running: bool, now: datetime) -> float | None:
    if start is None:
        return None
    if end is None:
        return max((now - start).total_seconds(), 0.0) if running else None
    return max((end - start).total_seconds(), 0.0)


class JobMetricsCollector:
    """A custom collector built fresh from the store on every ``collect()``.

    ``retention``: how long after its end a finished run is still exported. ``clock``:
    returns the current aware UTC time (the service's clock by default). ``max_runs``: how
    many runs, newest first, are looked at (Running runs are always included).
    """

    def __init__(
        self,
        service: MetricsService,
        *,
        retention: timedelta | None = None,
        clock: Callable[[], datetime] | None = None,
        max_runs: int = MAX_RUNS,
    ) -> None:
        self.service = service
        self.retention = retention if retention is not None else DEFAULT_RETENTION
        self.clock = clock if clock is not None else service.clock
        self.max_runs = max_runs

    def describe(self) -> list[Metric]:
        """The family names without reading the store (for registries that auto-describe)."""
        return _Families().all()

    def exported_runs(self, now: datetime) -> list[JobRun]:
        """Every Running run plus the runs that ended at or after ``now - retention``."""
        cutoff = now - self.retention
        found: dict[str, JobRun] = {}
        for job in self.service.list_job_runs(limit=self.max_runs, status=Status.RUNNING):
            found[job.run_id] = job
        for job in self.service.list_job_runs(limit=self.max_runs):
            if job.status is Status.RUNNING:
                found.setdefault(job.run_id, job)
                continue
            finished = job.end_time or job.start_time
            if finished is not None and finished >= cutoff:
                found.setdefault(job.run_id, job)
        return sorted(found.values(), key=lambda j: j.run_id)

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        now = self.clock()
        try:
            jobs = self.exported_runs(now)
            clients = {job.run_id: self._clients(job) for job in jobs}
        except StoreError:
            families.up.add_metric([], 0)
            yield families.up
            return
        families.up.add_metric([], 1)
        families.runs.add_metric([], len(jobs))
        for job in jobs:
            self._add_job(families, job, clients[job.run_id], now)
        yield from families.all()

    def _clients(self, job: JobRun) -> list[ClientRun]:
        return self.service.list_client_runs(job.run_id)

    def _add_job(self, f: _Families, job: JobRun, clients: list[ClientRun], now: datetime) -> None:
        run = job.run_id
        running = job.status is Status.RUNNING
        for status in Status:
            f.job_status.add_metric([run, status.value], 1 if job.status is status else 0)
        done = sum(1 for c in clients if c.status is not Status.RUNNING)
        failed = sum(1 for c in clients if c.status is Status.FAILED)
        for state, count in (
            ("total", len(clients)),
            ("done", done),
            ("running", len(clients) - done),
            ("failed", failed),
        ):
            f.job_clients.add_metric([run, state], count)
        for name, value in sorted(job.metrics.items()):
            number = _number(value)
            if number is not None:
                f.job_metric.add_metric([run, snake_case(name)], number)
        if job.start_time is not None:
            f.job_start.add_metric([run], job.start_time.timestamp())
        if job.end_time is not None and not running:
            f.job_end.add_metric([run], job.end_time.timestamp())
        duration = _duration(job.start_time, None if running else job.end_time, running, now)
        if duration is not None:
            f.job_duration.add_metric([run], duration)
        for client in clients:
            self._add_client(f, client, now)

    def _add_client(self, f: _Families, client: ClientRun, now: datetime) -> None:
        labels = [client.run_id, client.client_id]
        for status in _CLIENT_STATUSES:
            f.client_status.add_metric([*labels, status.value], 1 if client.status is status else 0)
        for name, value in sorted(client.metrics.items()):
            number = _number(value)
            if number is not None:
                f.client_metric.add_metric([*labels, snake_case(name)], number)
        running = client.status is Status.RUNNING
        duration = _duration(client.start_time, None if running else client.end_time, running, now)
        if duration is not None:
            f.client_duration.add_metric(labels, duration)


def exposition(
    service: MetricsService,
    accept: str | None = None,
    *,
    retention: timedelta | None = None,
    clock: Callable[[], datetime] | None = None,
) -> tuple[bytes, str]:
    """One scrape: the body and its content type (OpenMetrics when ``accept`` asks for it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobMetricsCollector(service, retention=retention, clock=clock))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
