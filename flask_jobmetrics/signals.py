"""The signals of flask_jobmetrics, in a private blinker ``Namespace``.

Every signal is sent with the Flask app as sender (``app``, or
``current_app._get_current_object()``; ``current_app`` itself is accepted by the inputs).

Inputs — scorer code sends them; the extension handles them for the app it was
initialised on (``flask_jobmetrics.receivers``). A receiver never raises into the
sender: a missing or wrongly typed kwarg, or a failure of the operation, is logged.

Outputs — the extension sends them, after the change they report.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = [
    "client_completed",
    "client_failed",
    "client_metrics_updated",
    "job_completed",
    "metrics_rejected",
    "publish_failed",
    "records_published",
    "run_stalled",
]

_signals = Namespace()

# -- inputs -------------------------------------------------------------------------------

#: Sent by scorer code to merge metrics into a client run (``update_client_metrics``).
#:
#: - ``run_id`` (``str``, required): base or client-form run ID.
#: - ``client_id`` (``str``, required): the client.
#: - ``metrics`` (``Mapping[str, Any]``, required): metric name → value; sums are increments.
#: - ``idempotency_key`` (``str | None``, optional): an update already applied under this
#:   key within 24 h changes nothing.
client_metrics_updated = _signals.signal("client-metrics-updated")

#: Sent by scorer code when it finished a client (``complete_client_metrics``).
#:
#: - ``run_id`` (``str``, required), ``client_id`` (``str``, required).
#: - ``metrics`` (``Mapping[str, Any] | None``, default ``None``): merged before closing.
#: - ``success`` (``bool | None``, default ``None``): ``False`` marks the client run
#:   ``Failed``; ``None`` means True unless an ``error`` is given.
#: - ``totals`` (``bool``, default ``False``): the given ``sum`` metrics are authoritative
#:   totals that replace the accumulated values.
#: - ``error`` (``BaseException | str | None``, default ``None``): recorded in the client
#:   row's ``Error Details`` as ``"<ExceptionType>: <message>"``; the run is ``Failed``
#:   unless ``success=True``.
#: - ``notes`` (``str | None``, default ``None``): appended to the client row's ``System Notes``.
client_completed = _signals.signal("client-completed")

#: Sent by scorer code when the whole job finished (``complete_job_metrics``).
#:
#: - ``run_id`` (``str``, required): the job's run ID.
#: - ``success`` (``bool``, default ``True``): ``False`` marks the job ``Failed``.
#: - ``notes`` (``str``, default ``""``): appended to the job's ``System Notes``.
job_completed = _signals.signal("job-completed")

# -- outputs ------------------------------------------------------------------------------

#: Sent when values of an update were not merged (invalid or unknown metrics).
#:
#: - ``run_id`` (``str``): the base run ID.
#: - ``client_id`` (``str``): the client.
#: - ``rejected`` (``list[RejectedMetric]``): each metric, the value given and the reason.
metrics_rejected = _signals.signal("metrics-rejected")

#: Sent after Airtable accepted a batch of records.
#:
#: - ``table`` (``str``): the Airtable table name.
#: - ``records`` (``list[dict[str, Any]]``): the records as sent, each a mapping of field
#:   name to the value written (the fields of the upsert).
records_published = _signals.signal("records-published")

#: Sent when Airtable answered a batch with an error (it stays in the outbox, or a refused row
#: is dead-lettered). Not sent for the rate limit (429: the base pauses) nor for timeouts and
#: connection failures (retried with backoff, and logged).
#:
#: - ``table`` (``str``): the Airtable table name.
#: - ``error`` (``str``): what Airtable answered: ``"HTTP <status> <TYPE>: <message>"``, or
#:   ``"<TYPE>: <message>"`` for a row it refused (422, dead-lettered).
#: - ``records`` (``list[dict[str, Any]]``): the records not accepted, as sent (field name to
#:   value).
publish_failed = _signals.signal("publish-failed")

#: Sent when a client run completes as ``Failed`` (``complete_client_metrics``, a failing
#: ``@tracked`` view, a job completed or closed by the watchdog while the client still ran).
#:
#: - ``run_id`` (``str``): the base run ID.
#: - ``client_id`` (``str``): the client.
#: - ``error`` (``str | None``): the client row's ``Error Details`` (None when no error was given).
client_failed = _signals.signal("client-failed")

#: Sent when the watchdog closed a job that had no update for ``JOBMETRICS_STALE_AFTER`` seconds.
#:
#: - ``run_id`` (``str``): the base run ID.
#: - ``client_ids`` (``list[str]``): the clients that were still running (now ``Failed``).
run_stalled = _signals.signal("run-stalled")
