"""The service operations, independent of Flask (usable from a worker or a script).

Updates are validated and normalized (``schema``), buffered per process (``buffer``),
and merged atomically into the store; Airtable publishing reads the store's outbox.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .buffer import MetricsBuffer
from .completion import (
    Difference,
    aggregate_job,
    close_client,
    finish_client,
    finish_job,
    refresh_finished_job,
)
from .deltas import ClientDelta, Ops, merge_ops
from .events import RunEvents
from .exceptions import (
    InvalidMetricError,
    InvalidRunIdError,
    StoreError,
    StoreUnavailableError,
    UnknownRunError,
)
from .formatting import shorten
from .journal import PROGRESS_LOG_CHARS, append_op, error_text, log_line
from .known_rows import UNSEEN, KnownRows
from .leased import LeasedTask
from .log import LogFormat, OutageLog, StructuredLogger
from .longtext import bound_text
from .model_loading import MODEL_LOCK
from .rules import aggregate_clients
from .runids import RunId, RunIdLike, validate_client_id
from .schema import (
    END_TIME,
    ERROR_DETAILS,
    LAST_UPDATE,
    PROGRESS_LOG,
    START_TIME,
    STATUS,
    SUM_TOO_LARGE,
    SYSTEM_NOTES,
    MetricRegistry,
    normalize_status,
    rejection,
)
from .service_hooks import Clock, PublishOutcome, RejectedHook, RowPublisher, StoredHook
from .shutdown import guarded
from .status import Status
from .stores.base import IDEMPOTENCY_TTL, ClientRow, JobRow, JobUpdate, Store
from .stores.deferred import RETRY_INTERVAL
from .validation import check_bool, check_text, idempotency_key, sort_update
from .views import client_view, deferred_client_view, job_view, with_pending
from .watchdog import WATCHDOG_LEASE, close_stalled

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import ClientRun, FlushReport, Health, JobRun, RejectedMetric

__all__ = [
    "MetricsService",
    "idempotency_key",
    "utcnow",
    # the collaborators' types (defined in flask_jobmetrics.service_hooks)
    "Clock",
    "PublishOutcome",
    "RejectedHook",
    "RowPublisher",
    "StoredHook",
]


#: Seconds a reserved run ID may run ahead of the clock before ``start_job`` warns.
DRIFT_WARNING = 60

#: The rejections of the usual update (never appended to).
_NO_REJECTIONS: list[RejectedMetric] = []


def _too_large(refused: Iterable[tuple[str, Any]]) -> list[RejectedMetric]:
    """The rejections of sums left out because their total would pass 2**53."""
    return [rejection(field, value, SUM_TOO_LARGE) for field, value in refused]


def _check_logger(logger: object) -> None:
    if not isinstance(logger, StructuredLogger):
        raise TypeError(f"logger must be a StructuredLogger, got {type(logger).__name__}")


def _described(rejected: list[RejectedMetric]) -> str:
    """Rejections for a log line, each value cut to a sane length."""
    return "; ".join(f"{p.metric}={shorten(p.value)} ({p.reason})" for p in rejected)


#: The default clock: the aware UTC time now (a partial, so that it adds no Python frame).
utcnow: Callable[[], datetime] = functools.partial(datetime.now, timezone.utc)


class MetricsService:
    """Job and client metrics on one store, with this process's buffer in front of it.

    Its collaborators are handed in: ``on_rejected(run_id, client_id, rejected)`` hears of
    rejected metrics, ``on_stored()`` of every change merged into the store (the publisher's
    wake-up), ``events`` (``events.RunEvents``) of failed client and job runs and of jobs the
    watchdog closed (closed with the service), and ``publisher`` is what ``flush`` and
    ``close`` drive (None: publishing off). With
    ``stale_after`` > 0 a watchdog closes jobs that had no update for that many seconds.
    """

    def __init__(
        self,
        store: Store,
        *,
        registry: MetricRegistry | None = None,
        strict: bool = False,
        unknown_metrics: str = "warn",
        buffer_ttl: float = 30.0,
        flush_interval: float = 5.0,
        buffer_maxsize: int = 10_000,
        clock: Clock = utcnow,
        on_rejected: RejectedHook | None = None,
        on_stored: StoredHook | None = None,
        events: RunEvents | None = None,
        publisher: RowPublisher | None = None,
        log_format: LogFormat | None = None,
        progress_log_chars: int = PROGRESS_LOG_CHARS,
        stale_after: float = 0.0,
    ) -> None:
        self.store = store
        self.registry = registry if registry is not None else MetricRegistry()
        self.strict = strict
        self.unknown_metrics = unknown_metrics
        self.clock = clock
        self.on_rejected = on_rejected
        self.on_stored = on_stored
        #: Who hears of failed runs and stalled jobs (signals, alerts), or None.
        self.events = events
        self.progress_log_chars = progress_log_chars
        if stale_after < 0:
            raise ValueError(f"stale_after must be seconds > 0, or 0 for no watchdog, got {stale_after!r}")
        self.stale_after = stale_after
        self.log_format = log_format
        self.logger = StructuredLogger("SYSTEM", process="jobmetrics", fmt=log_format)
        self.buffer = MetricsBuffer(
            self._sink,
            ttl=buffer_ttl,
            max_age=flush_interval,
            maxsize=buffer_maxsize,
            on_error=self._sink_failed,
            on_delivered=lambda rows: self._merged(*rows),
            token_ttl=IDEMPOTENCY_TTL,
        )
        #: The last store row seen per key: the update path reads the store once per key
        #: (a completed job's rows are dropped by complete_job_metrics).
        self._rows = KnownRows(max(buffer_maxsize, 1024))
        self._aggregates: dict[str, str] = {}  # field -> aggregation, for registered fields
        #: Until when (``clock`` seconds) the update path does not read the store: it was unavailable.
        self._reads_paused_until = float("-inf")
        #: The last store error of a buffer delivery, None once a merge went through.
        self._store_error: str | None = None
        #: Logs store failures while the store is down: the first, one line a minute, the end.
        self.outage = OutageLog(self.logger, lambda: len(self.buffer), clock=lambda: self.clock().timestamp())
        self._warned_unknown: set[str] = set()
        self._drift_warned = 0
        self._checked_ids: dict[tuple[str, str], tuple[str, str]] = {}
        #: The Airtable publisher when publishing is on.
        self.publisher = publisher
        #: The watchdog closing stalled jobs (``close_stalled``), when ``stale_after`` > 0; its
        #: thread is started by ``start_watchdog``.
        self.watchdog = (
            LeasedTask(
                self.close_stalled,
                store=store,
                name=WATCHDOG_LEASE,
                interval=min(60.0, stale_after / 2),
                clock=lambda: self.clock().timestamp(),
                logger=self.logger.bind(process="watchdog"),
            )
            if stale_after > 0
            else None
        )

    # -- plumbing ---------------------------------------------------------------------

    def _sink(self, deltas: list[ClientDelta], token: str) -> list[ClientRow]:
        # Only the merge (see MetricsBuffer(on_delivered=)); the token makes a re-sent batch a no-op.
        try:
            return self.store.merge_clients(deltas, token=token)
        except StoreError as exc:
            self._store_error = str(exc)  # health() says so until a merge goes through
            raise

    def _merged(self, *rows: ClientRow) -> None:
        """After client rows were merged: remember them, bring the totals of a job that
        already completed up to date (updates that were still buffered in other processes,
        late webhooks), wake the publisher. Never raises: what was merged stays merged."""
        self._store_error = None
        self.outage.recovered()
        self._rows.remember(rows)
        for row in rows:
            if row.refused:  # sums the store did not add: the total would pass 2**53
                self._report_rejected(None, row.run_id, row.client_id, _too_large(row.refused), refused=True)
        for run in {row.run_id for row in rows if row.job_completed}:
            try:
                self.store.update_job(run, functools.partial(refresh_finished_job, registry=self.registry))
                self.logger.bind(run_id=run).info(
                    "late client updates: the completed job's totals and status were recomputed"
                )
            except Exception as exc:  # the merge stands; `update_job_aggregate_metrics` can redo this
                self.logger.warning("could not recompute the totals of completed job %s: %r", run, exc)
        self._stored()

    def _stored(self) -> None:
        """Tell the publisher the store changed. Never raises: what was merged stays merged."""
        if self.on_stored is None:
            return
        try:
            self.on_stored()
        except Exception as exc:  # e.g. no new threads at interpreter shutdown
            self.logger.warning("could not wake the Airtable publisher (rows wait in the outbox): %r", exc)

    def _sink_failed(self, exc: BaseException, deltas: list[ClientDelta]) -> None:
        self.outage.failed(
            "could not merge %d buffered entries into the store (kept, retried later): %s", len(deltas), exc
        )

    def _known(self, run_id: str, client_id: str) -> ClientRow | None:
        """The row as this process last saw it in the store (None: not there), read once."""
        row = self._rows.get((run_id, client_id), UNSEEN)
        return row if row is not UNSEEN else self._read_row(run_id, client_id)

    def _read_row(self, run_id: str, client_id: str) -> ClientRow | None:
        """``_known`` of a row not seen yet: read from the store and remembered."""
        now = self.clock().timestamp()
        if now < self._reads_paused_until:  # the store was unavailable moments ago: not again
            return None
        try:
            row = self.store.get_client(run_id, client_id)
        except StoreError as exc:  # the update is still buffered; only its returned view lacks the store
            if isinstance(exc, StoreUnavailableError):  # each read would wait for it to fail again
                self._reads_paused_until = now + RETRY_INTERVAL
            self.outage.failed("store unreachable, update buffered without reading the row: %s", exc)
            return None
        self._rows.read((run_id, client_id), row)
        return row

    def checked_ids(self, run_id: Any, client_id: Any) -> tuple[str, str]:
        """(base run ID, client ID) of valid arguments, else ``InvalidRunIdError`` /
        ``InvalidClientIdError`` (a client-form run ID must name the same client). The last
        thousand or so valid pairs are remembered: checking one again is a dict look-up."""
        if type(run_id) is str and type(client_id) is str:
            ids = self._checked_ids.get((run_id, client_id))
            if ids is None:
                ids = self._check_ids(run_id, client_id)
                if len(self._checked_ids) >= 1024:
                    self._checked_ids.clear()
                self._checked_ids[(run_id, client_id)] = ids
            return ids
        return self._check_ids(run_id, client_id)

    def _check_ids(self, run_id: Any, client_id: Any) -> tuple[str, str]:
        parsed = RunId.parse(run_id)
        client = validate_client_id(client_id)
        if parsed.client is not None and parsed.client != client:
            raise InvalidRunIdError(
                f"run ID {str(parsed)!r} belongs to client {parsed.client!r}, not {client!r}"
            )
        return parsed.base, client

    def _log(
        self, logger: StructuredLogger | None, run_id: str, client_id: str | None = None
    ) -> StructuredLogger:
        if logger is None:
            scope = "CLIENT" if client_id else "SYSTEM"
            return StructuredLogger(scope, client_id, "jobmetrics", run_id=run_id, fmt=self.log_format)
        _check_logger(logger)
        if logger.run_id is None:
            return logger.bind(run_id=run_id)
        return logger

    def normalize_update(
        self, metrics: Any, run_id: str, client_id: str, logger: StructuredLogger | None = None
    ) -> tuple[dict[str, Any], list[RejectedMetric]]:
        """Validate and normalize one update's metrics: (values by field, rejected).

        Applies ``strict`` and ``unknown_metrics``; logs and reports what is rejected.
        """
        values, rejected, unknown_rejected = sort_update(
            self.registry, metrics, keep_unknown=self.unknown_metrics == "keep"
        )
        if self.unknown_metrics == "error" and unknown_rejected:
            raise InvalidMetricError(rejected + unknown_rejected)
        if self.strict and rejected:
            raise InvalidMetricError(rejected)
        for problem in unknown_rejected:
            if problem.metric not in self._warned_unknown:
                self._warned_unknown.add(problem.metric)
                self._log(logger, run_id, client_id).warning(
                    "unknown metric %r is not stored%s (register it with register_metric)",
                    problem.metric,
                    problem.reason.removeprefix("unknown metric"),
                )
        if rejected or unknown_rejected:  # the unknown ones were warned of above, once each
            logged, rejected = rejected, rejected + unknown_rejected
            self._report_rejected(logger, run_id, client_id, rejected, logged=logged)
        return values, rejected

    def _report_rejected(
        self,
        logger: StructuredLogger | None,
        run: str,
        client: str,
        rejected: list[RejectedMetric],
        *,
        logged: list[RejectedMetric] | None = None,
        refused: bool = False,
    ) -> None:
        """Log what was not stored and tell ``on_rejected`` of all of ``rejected``: the one
        report of rejected metrics, from an update or after a merge. ``logged``: the part to
        log (by default all of it). ``refused``: sums the store did not add (the total would
        pass 2**53), logged as an error; a failing ``on_rejected`` is then only logged, for
        what was merged stays merged."""
        logged = rejected if logged is None else logged
        if logged:
            log = self._log(logger, run, client)
            if refused:
                log.error("not stored: %s", _described(logged))
            else:
                log.warning("rejected %s", _described(logged))
        if not rejected or self.on_rejected is None:
            return
        if not refused:
            self.on_rejected(run, client, rejected)
            return
        try:
            self.on_rejected(run, client, rejected)
        except Exception as exc:  # what was merged stays merged
            self.logger.warning("could not report refused sums: %r", exc)

    def normalized_ops(
        self, metrics: Any, run_id: str, client_id: str, logger: StructuredLogger | None = None
    ) -> tuple[Ops, list[RejectedMetric]]:
        """``ops_of(normalize_update(...))``: the ops of one update's metrics, and what was
        rejected. The usual update (whole numbers for known sums) takes a shortcut that
        makes the same ops (``MetricRegistry.plain_sums``)."""
        ops = self.registry.plain_sums(metrics)
        if ops is not None:
            return ops, _NO_REJECTIONS
        values, rejected = self.normalize_update(metrics, run_id, client_id, logger)
        return self.ops_of(values), rejected

    def ops_of(self, values: Mapping[str, Any]) -> Ops:
        """Normalized values -> ops merged by each field's aggregation."""
        aggregates = self._aggregates
        ops: Ops = {}
        for name, value in values.items():
            aggregate = aggregates.get(name)
            if aggregate is None:
                aggregate = self.registry.aggregate_of(name)
                if self.registry.by_field(name) is not None:  # a kept unknown field may be registered later
                    aggregates[name] = aggregate
            ops[name] = (aggregate, value)
        return ops

    def _failed(self, run: str, client: str, error: str | None, *, stalled: bool = False) -> None:
        """Tell ``events`` of a failed client run. Never raises: the completion stands."""
        if self.events is None:
            return
        try:
            self.events.client_failed(run, client, error, stalled=stalled)
        except Exception as exc:
            self.logger.warning("a client-failed listener failed for %s/%s: %r", run, client, exc)

    def _line(self, message: str, when: datetime | None = None) -> tuple[str, Any]:
        """The op appending one timestamped line to the Progress Log."""
        return append_op(log_line(when or self.clock(), message), self.progress_log_chars)

    def _opening(self, delta: ClientDelta) -> Ops:
        """The ops of a row's first update in this process, before its own: ``Start Time``
        and the Progress Log's first line, at the update's time (its ``Last Update``)."""
        now = delta.ops[LAST_UPDATE][1]
        return {START_TIME: ("min", now), PROGRESS_LOG: self._line("started (first update)", now)}

    # -- client runs ------------------------------------------------------------------

    @guarded
    def log_progress(self, run_id: RunIdLike, client_id: str, message: str) -> None:
        """Append a timestamped line to the client run's ``Progress Log`` (merged like any
        update: buffered, then kept in time order with every other process's lines)."""
        run, client = self.checked_ids(run_id, client_id)
        check_text("message", message)
        now = self.clock()
        self._buffer(run, client, {PROGRESS_LOG: self._line(message, now)}, None, now)

    @guarded
    def record_error(self, run_id: RunIdLike, client_id: str, error: BaseException | str) -> None:
        """Set the client run's ``Error Details`` and log the error in its Progress Log,
        without completing it (a ``@tracked`` view that raised without ``complete=True``)."""
        run, client = self.checked_ids(run_id, client_id)
        text = error_text(error)
        now = self.clock()
        ops: Ops = {ERROR_DETAILS: ("last", text), PROGRESS_LOG: self._line(f"error: {text}", now)}
        self._buffer(run, client, ops, None, now)

    @guarded
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
        run, client = self.checked_ids(run_id, client_id)
        if logger is not None:  # checked now: a logger is otherwise only built when something is logged
            _check_logger(logger)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key.strip()
        ):
            raise ValueError(f"idempotency_key must be a non-empty string, got {idempotency_key!r}")
        ops = self.registry.plain_sums(metrics)  # normalized_ops' shortcut, without its frame
        if ops is None:
            ops, rejected = self.normalized_ops(metrics, run, client, logger)
        else:
            rejected = _NO_REJECTIONS
        return self._merge_ops(run, client, ops, rejected, logger, idempotency_key)

    @guarded
    def merge_client_ops(
        self,
        run: str,
        client: str,
        ops: Ops,
        *,
        complete: bool | None = None,
        totals: Mapping[str, Any] | None = None,
        rejected: list[RejectedMetric] | None = None,
        logger: StructuredLogger | None = None,
        idempotency_key: str | None = None,
        error: BaseException | str | None = None,
        notes: str | None = None,
    ) -> ClientRun:
        """Merge normalized ops into a client run: the one way an update or a completion reaches
        the buffer or the store, whether it came from a call, a signal or a request's
        ``current_run``.

        ``run`` and ``client`` are checked IDs (a base run ID), ``ops`` come from ``ops_of``
        of normalized values (``normalize_update``; they are not checked again) and belong to
        the callee from now on. ``complete`` True or False completes the run (successfully or
        not) with ``totals`` as the authoritative sums (``totals=True``), ``error`` in its
        ``Error Details`` and ``notes`` appended to its ``System Notes``; without ``complete``
        an ``error`` is recorded (``record_error``) and the run stays open. ``rejected`` is
        reported in the view, which is computed when first read.
        """
        if complete is None:
            if error is not None:
                self.record_error(run, client, error)
            return self._merge_ops(run, client, ops, rejected, logger, idempotency_key)
        details = error_text(error) if error is not None else None
        log = self._log(logger, run, client)
        return self._complete(run, client, ops, complete, totals or {}, rejected, log, details, notes)

    def _merge_ops(
        self,
        run: str,
        client: str,
        ops: Ops,
        rejected: list[RejectedMetric] | None,
        logger: StructuredLogger | None,
        idempotency_key: str | None,
    ) -> ClientRun:
        """Buffer the ops of an update (``_buffer``) and return its view, or with an
        ``idempotency_key`` merge them into the store once."""
        if idempotency_key is not None:
            known = self._stamp(run, client, ops, logger, self.clock())
            return self._merge_once(
                ClientDelta(run, client, ops, idempotency_key=idempotency_key), rejected, logger, known
            )
        known, buffered, refused = self._buffer(run, client, ops, logger)
        if refused:
            rejected = [*(rejected or ()), *refused]
        if buffered is None:  # written through: the store's row is the view
            known = self._known(run, client)
        if known is None:
            return deferred_client_view(run, client, None, buffered, False, rejected)
        return deferred_client_view(run, client, known.fields, buffered, known.completed, rejected)

    @guarded
    def buffer_ops(self, run: str, client: str, ops: Ops, logger: StructuredLogger | None = None) -> None:
        """``merge_client_ops`` of an update whose view nobody reads (a request's counts,
        merged once its view answered): the same ``_buffer``, and no view is built."""
        self._buffer(run, client, ops, logger)

    def _stamp(
        self, run: str, client: str, ops: Ops, logger: StructuredLogger | None, now: datetime
    ) -> ClientRow | None:
        """The row as last seen, with ``ops`` stamped: every update carries its time (``Last
        Update``, the watchdog's clock; ``Start Time`` of a row stored without one). A late
        update to a completed row is logged."""
        known = self._rows.get((run, client), UNSEEN)
        if known is UNSEEN:
            known = self._read_row(run, client)
        if known is not None and known.completed:
            self._log(logger, run, client).warning(
                "late update to a completed client run: %s", sorted(ops) or "no metrics"
            )
        ops[LAST_UPDATE] = ("max", now)
        if known is not None and known.fields.get(START_TIME) is None and START_TIME not in ops:
            ops[START_TIME] = ("min", now)
        return known

    def _buffer(
        self, run: str, client: str, ops: Ops, logger: StructuredLogger | None, now: datetime | None = None
    ) -> tuple[ClientRow | None, Ops | None, list[RejectedMetric]]:
        """Buffer the ops of an update: the one way one reaches the buffer. The row's first
        update here opens its Progress Log (``_opening``); sums whose total would pass 2**53
        are left out and reported. (the row as last seen, what the buffer holds for it or None
        when written through, the sums left out)."""
        known = self._stamp(run, client, ops, logger, self.clock() if now is None else now)
        delta = ClientDelta(run, client, ops)
        # Start Time comes with the first ops of a row not stored (what this process holds has it)
        if known is None:
            buffered, refused = self.buffer.add(delta, None, self._opening)
        else:
            buffered, refused = self.buffer.add(delta, known)
        if not refused:
            return known, buffered, _NO_REJECTIONS
        too_large = _too_large(refused)
        self._report_rejected(logger, run, client, too_large)
        return known, buffered, too_large

    def _merge_once(
        self,
        delta: ClientDelta,
        rejected: list[RejectedMetric] | None,
        logger: StructuredLogger | None,
        known: ClientRow | None,
    ) -> ClientRun:
        """``_merge_ops`` of a delta with an idempotency key: straight into the store, after
        what the buffer holds for the row; a key applied before changes nothing."""
        run, client, ops = delta.run_id, delta.client_id, delta.ops
        if known is None and self.buffer.pending(run, client) is None:
            delta.ops = self._opening(delta)
            merge_ops(delta.ops, ops)
        self.buffer.flush(run_id=run, client_id=client)
        row, applied = self.store.merge_client(delta)
        if applied:
            self._merged(row)
        else:
            self._log(logger, run, client).info(
                "update with idempotency key %r was already applied; nothing changed", delta.idempotency_key
            )
        if row.refused:  # a sum the store did not add: reported by _merged, listed in the view
            rejected = [*(rejected or ()), *_too_large(row.refused)]
        return deferred_client_view(run, client, row.fields, None, row.completed, rejected)

    @guarded
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
        ``Failed`` unless ``success=True`` is given; ``success`` defaults to True without an
        error. ``notes`` is appended to ``System Notes``.
        """
        run, client = self.checked_ids(run_id, client_id)
        if success is not None:
            check_bool("success", success)
        check_bool("totals", totals)
        error_details = error_text(error) if error is not None else None
        if notes is not None:
            check_text("notes", notes)
        succeeded = success if success is not None else error_details is None
        log = self._log(logger, run, client)
        values, rejected = self.normalize_update(metrics, run, client, log)
        authoritative = {}
        if totals:
            authoritative = {k: values.pop(k) for k in list(values) if self.registry.aggregate_of(k) == "sum"}
        ops = self.ops_of(values)
        return self._complete(run, client, ops, succeeded, authoritative, rejected, log, error_details, notes)

    def _complete(
        self,
        run: str,
        client: str,
        ops: Ops,
        succeeded: bool,
        authoritative: Mapping[str, Any],
        rejected: list[RejectedMetric] | None,
        log: StructuredLogger,
        error_details: str | None,
        notes: str | None,
    ) -> ClientRun:
        """``merge_client_ops(complete=...)``: merge, set End Time and the final status, durably."""
        now = self.clock()
        explicit_status = ops[STATUS][1] if STATUS in ops else None
        ops.setdefault(START_TIME, ("min", now))
        ops.setdefault(END_TIME, ("max", now))
        ops[LAST_UPDATE] = ("max", now)
        if error_details is not None:
            ops[ERROR_DETAILS] = ("last", error_details)
        if notes:
            ops[SYSTEM_NOTES] = append_op(notes)
        differences: list[Difference] = []

        def finalize(fields: dict[str, Any]) -> None:  # may run more than once (Redis retries)
            differences[:] = finish_client(
                fields,
                self.registry,
                totals=authoritative,
                explicit_status=explicit_status,
                success=succeeded,
                error=error_details,
                now=now,
                line=self._line,
            )

        self.buffer.flush(run_id=run, client_id=client)
        row, _ = self.store.merge_client(ClientDelta(run, client, ops, complete=True), finalize)
        self._merged(row)
        for name, accumulated, total in differences:
            log.warning("totals: %s was %s from updates, the given total is %s", name, accumulated, total)
        if row.fields.get(STATUS) == Status.FAILED.value:
            log.warning("client run failed%s", f": {error_details}" if error_details else "")
            self._failed(run, client, error_details)
        else:
            log.info("client run completed with status %s", row.fields.get(STATUS))
        return deferred_client_view(run, client, row.fields, None, row.completed, rejected)

    @guarded
    def get_client_run(self, run_id: RunIdLike, client_id: str) -> ClientRun | None:
        """The client run as stored plus this process's buffered updates, or None."""
        run, client = self.checked_ids(run_id, client_id)
        row = self.store.get_client(run, client)
        pending = self.buffer.pending(run, client)
        if row is None and pending is None:
            return None
        return client_view(
            run,
            client,
            with_pending(row.fields if row else None, pending),
            completed=bool(row and row.completed),
        )

    @guarded
    def list_client_runs(self, run_id: RunIdLike) -> list[ClientRun]:
        """Every client run of a job (stored plus this process's buffered ones), by client ID,
        read from the store in one call."""
        run = RunId.parse(run_id).base
        rows = {row.client_id: row for row in self.store.list_clients(run)}
        runs = []
        for client in sorted(set(rows) | self.buffer.clients_of(run)):
            row = rows.get(client)
            fields = with_pending(row.fields if row else None, self.buffer.pending(run, client))
            runs.append(client_view(run, client, fields, completed=bool(row and row.completed)))
        return runs

    # -- job runs ---------------------------------------------------------------------

    @guarded
    def start_job(
        self, run_id: RunIdLike | None = None, *, notes: str = "", logger: StructuredLogger | None = None
    ) -> JobRun:
        """Create a job run (``Running``); with no ``run_id`` a unique one is reserved."""
        check_text("notes", notes)
        now = self.clock()
        fields: dict[str, Any] = {STATUS: Status.RUNNING.value, START_TIME: now}
        if notes:
            fields[SYSTEM_NOTES] = bound_text(notes)
        if run_id is None:
            row, created = self.store.reserve_job(str(RunId.new(now)), fields), True
        else:
            row, created = self.store.ensure_job(RunId.parse(run_id).base, fields)
        log = self._log(logger, row.run_id)
        if run_id is None:
            self._check_drift(row.run_id, now, log)
        if created:
            log.info("job started")
            self._stored()
        return self._job_view(row.run_id, row)

    def _check_drift(self, run: str, now: datetime, log: StructuredLogger) -> None:
        """Warn when reserved run IDs ran ahead of the clock (jobs started faster than one
        per second): once when the lead passes ``DRIFT_WARNING`` seconds, then once per
        further ``DRIFT_WARNING`` seconds."""
        ahead = RunId.parse(run).epoch - int(now.timestamp())
        if ahead < DRIFT_WARNING:
            self._drift_warned = 0
            return
        if ahead >= self._drift_warned + DRIFT_WARNING:
            self._drift_warned = ahead - ahead % DRIFT_WARNING
            log.warning(
                "run IDs are %d s ahead of the clock: jobs start faster than one per second "
                "(a run ID names one second; see the run IDs docs)",
                ahead,
            )

    @guarded
    def update_job_aggregate_metrics(
        self, run_id: RunIdLike, *, logger: StructuredLogger | None = None
    ) -> JobRun:
        """Recompute the job row from all of its client runs."""
        run = RunId.parse(run_id).base
        self._log(logger, run)
        self.buffer.flush(run_id=run)
        return self._update_job(run, functools.partial(aggregate_job, registry=self.registry))

    def _update_job(self, run: str, update: JobUpdate, complete: bool | None = None) -> JobRun:
        """Change the job row in one store transaction; returns the job as a model."""
        try:
            row = self.store.update_job(run, update, complete=complete)
        except KeyError:
            raise UnknownRunError(
                f"no job run {run!r}: start it with start_job() or update a client first"
            ) from None
        self._stored()
        return self._job_view(run, row)

    @guarded
    def complete_job_metrics(
        self,
        run_id: RunIdLike,
        *,
        success: bool = True,
        notes: str = "",
        logger: StructuredLogger | None = None,
    ) -> JobRun:
        """Close still-running clients as Failed, aggregate, and set the job's final status."""
        run = RunId.parse(run_id).base
        check_bool("success", success)
        check_text("notes", notes)
        log = self._log(logger, run)
        self.buffer.flush(run_id=run)
        now = self.clock()  # an unknown run has no clients, and _update_job raises UnknownRunError
        note = f"Still running when job {run} completed at {now:%Y-%m-%d %H:%M:%S} UTC; closed as Failed."
        for row in self.store.list_clients(run):
            if not row.completed:  # never completed: Running ones failed; any other keeps its status
                self._close_client(run, row.client_id, now, log, note)
        stamp = now.strftime("%Y-%m-%d %H:%M:%S UTC")
        finish = functools.partial(finish_job, registry=self.registry, now=now, notes=notes, success=success)
        job = self._update_job(run, finish, complete=True)
        self._rows.forget(run, job.client_ids)
        if job.status is Status.FAILED and self.events is not None:
            try:
                self.events.job_failed(run, notes)
            except Exception as exc:  # the completion stands
                self.logger.warning("a job-failed listener failed for %s: %r", run, exc)
        log.info(
            "job completed at %s with status %s (%d clients)", stamp, job.status.value, len(job.client_ids)
        )
        return job

    def _close_client(
        self,
        run: str,
        client: str,
        now: datetime,
        log: StructuredLogger,
        note: str,
        error: str | None = None,
        *,
        stalled: bool = False,
    ) -> bool:
        """Complete a client run the job outlived: a Running one is closed as Failed, with a
        note, ``error`` in its ``Error Details`` (an earlier error kept below it) and a Progress
        Log line. True when it was closed."""
        closed = False

        def close(fields: dict[str, Any]) -> None:  # may run more than once (Redis retries)
            nonlocal closed
            closed = close_client(fields, note=note, error=error, now=now, line=self._line)

        row, _ = self.store.merge_client(
            ClientDelta(run, client, {END_TIME: ("max", now)}, complete=True), close
        )
        self._rows.remember([row])
        if closed:
            log.bind(scope="CLIENT", client_id=client).warning(
                "client run was still running; closed as Failed"
            )
            self._failed(run, client, row.fields.get(ERROR_DETAILS) or note, stalled=stalled)
        return closed

    # -- the watchdog -----------------------------------------------------------------

    def start_watchdog(self) -> None:
        """Start the watchdog's thread (when ``stale_after`` > 0); safe to repeat."""
        if self.watchdog is not None:
            self.watchdog.start()

    @guarded
    def close_stalled(self, stale_after: float | None = None) -> list[str]:
        """Close every ``Running`` job with no update for ``stale_after`` seconds (default: the
        service's): its running clients become ``Failed`` (Error Details: stalled, since when),
        the job is completed by the usual rules with a note, the events hear ``run_stalled``. Returns
        the run IDs closed. The watchdog calls it; it can be called by hand."""
        return close_stalled(self, self.stale_after if stale_after is None else stale_after)

    @guarded
    def get_job_run(self, run_id: RunIdLike) -> JobRun | None:
        """The job run (live aggregates while it runs), or None."""
        run = RunId.parse(run_id).base
        return self._find_job(run)

    def _job_view(self, run: str, row: JobRow | None = None) -> JobRun:
        job = self._find_job(run, row)
        if job is None:
            raise UnknownRunError(f"no job run {run!r}")
        return job

    def _find_job(self, run: str, row: JobRow | None = None) -> JobRun | None:
        """The job as a model (``row``: its store row, when the caller already read it)."""
        if row is None:
            row = self.store.get_job(run)
        buffered = self.buffer.clients_of(run)
        if row is None:
            if not buffered:
                return None
            fields: Mapping[str, Any] = {STATUS: Status.RUNNING.value}
            client_ids: set[str] = set(buffered)
            completed = False
        else:
            fields, client_ids, completed = row.fields, set(row.client_ids) | set(buffered), row.completed
        if completed:
            return job_view(run, fields, client_ids)
        # One read for all clients; none for a job without clients (a job just started).
        stored = {c.client_id: c.fields for c in self.store.list_clients(run)} if client_ids else {}
        clients = [with_pending(stored.get(c), self.buffer.pending(run, c)) for c in sorted(client_ids)]
        return job_view(run, fields, client_ids, aggregate_clients(self.registry, clients))

    @guarded
    def list_job_runs(self, *, limit: int = 50, status: Status | str | None = None) -> list[JobRun]:
        """Job runs by start time, newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        wanted = normalize_status(status) if status is not None else None
        rows = self.store.list_jobs(limit=limit, status=wanted)
        return [job for job in (self._find_job(row.run_id, row) for row in rows) if job is not None]

    # -- flushing ---------------------------------------------------------------------

    def health(self) -> Health:
        """Whether the store answers, as this process last saw it (no store call is made)."""
        error = self._store_error
        if error is None and self.store.error is not None:
            error = str(self.store.error)
        with MODEL_LOCK:  # pydantic loads with the first model made
            from .models import Health

        return Health(store_available=error is None, store_error=error, buffered=len(self.buffer))

    @guarded
    def flush(self, timeout: float | None = None) -> FlushReport:
        """Merge every buffered entry into the store, then publish what waits, until it is
        sent or ``timeout`` seconds passed. Raises StoreError if the buffer cannot reach the
        store (the entries stay buffered)."""
        flushed = self.buffer.flush()
        with MODEL_LOCK:  # pydantic loads with the first model made
            from .models import FlushReport

        if self.publisher is None:  # what `flask jobmetrics outbox` shows, e.g. rows queued earlier
            pending, dead = self.store.outbox_counts()
            return FlushReport(flushed=flushed, pending=pending, dead=dead)
        result = self.publisher.flush(timeout)
        return FlushReport(
            flushed=flushed, published=result.published, pending=result.pending, dead=result.dead
        )

    @guarded
    def close(self) -> None:
        """Drain the buffer, stop the background threads and close the store. Every step runs
        even when an earlier one failed (the store down for the drain); the error is raised
        once they all ran, and what could not be drained stays in the buffer."""
        with ExitStack() as after_drain:  # run last to first, whatever raised before
            after_drain.callback(self.store.close)
            if self.events is not None:
                after_drain.callback(self.events.close)
            if self.publisher is not None:
                after_drain.callback(self.publisher.stop)
            if self.watchdog is not None:
                after_drain.callback(self.watchdog.stop)
            self.buffer.stop(drain=True)
