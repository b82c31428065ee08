"""The completion rules as field updates (completion.py), on plain fields: what they set, and
that a second run on the same stored fields (a Redis retry) sets and reports the same."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask_jobmetrics import Status
from flask_jobmetrics.completion import close_client, finish_client, finish_job, refresh_finished_job
from flask_jobmetrics.journal import append_op, log_line
from flask_jobmetrics.schema import (
    END_TIME,
    ERROR_DETAILS,
    PROGRESS_LOG,
    STATUS,
    SYSTEM_NOTES,
    MetricRegistry,
)
from flask_jobmetrics.stores.base import ClientRow

from .support import START
from .test_journal import lines

LEADS = "Leads Processed"


def line(message: str, when: datetime) -> tuple[str, Any]:
    return append_op(log_line(when, message))


def clients(*statuses: str) -> list[ClientRow]:
    return [ClientRow("run", f"c{i}", {STATUS: s, LEADS: 2}) for i, s in enumerate(statuses)]


def test_finishing_a_client_twice_on_the_same_row_sets_and_reports_the_same() -> None:
    """The given totals replace the accumulated sums; a retry reports the same difference."""
    stored = {STATUS: Status.RUNNING.value, LEADS: 3}
    runs = []
    for _ in range(2):
        fields = dict(stored)
        differences = finish_client(
            fields,
            MetricRegistry(),
            totals={LEADS: 5},
            explicit_status=None,
            success=True,
            error=None,
            now=START,
            line=line,
        )
        runs.append((fields, differences))
    assert runs[0] == runs[1]
    fields, differences = runs[0]
    assert differences == [(LEADS, 3, 5)]
    assert fields[LEADS] == 5 and fields[STATUS] == Status.COMPLETED.value
    assert lines(fields[PROGRESS_LOG]) == ["completed with status Completed (Leads Processed 5)"]


def test_closing_a_client_that_is_not_running_changes_nothing() -> None:
    """Only a Running client run is closed; a completed one keeps its fields."""
    fields = {STATUS: Status.COMPLETED.value, LEADS: 1}
    assert close_client(fields, note="closed", error="stalled", now=START, line=line) is False
    assert fields == {STATUS: Status.COMPLETED.value, LEADS: 1}


def test_closing_a_running_client_keeps_an_earlier_error_below() -> None:
    """A closed client is Failed, with the note, the new error above the earlier one and a line."""
    fields: dict[str, Any] = {STATUS: Status.RUNNING.value, ERROR_DETAILS: "ValueError: bad row"}
    assert close_client(fields, note="Closed.", error="stalled", now=START, line=line) is True
    assert fields[STATUS] == Status.FAILED.value
    assert fields[ERROR_DETAILS] == "stalled\nEarlier: ValueError: bad row"
    assert fields[SYSTEM_NOTES] == "Closed."
    assert lines(fields[PROGRESS_LOG]) == ["closed as Failed: stalled"]


def test_finishing_a_job_keeps_a_later_end_time_and_counts_failed_clients() -> None:
    """End Time only moves later; a failed client makes the job Completed with Errors."""
    later = START + timedelta(hours=1)
    fields: dict[str, Any] = {STATUS: Status.RUNNING.value, END_TIME: later}
    rows = clients(Status.COMPLETED.value, Status.FAILED.value)
    finish_job(fields, rows, MetricRegistry(), now=START, notes="done", success=True)
    assert fields[END_TIME] == later
    assert fields[STATUS] == Status.COMPLETED_WITH_ERRORS.value
    assert fields[LEADS] == 4 and fields[SYSTEM_NOTES] == "done"


def test_refreshing_a_finished_job_keeps_it_failed() -> None:
    """Late client updates bring the totals up to date but never lift a Failed job."""
    fields: dict[str, Any] = {STATUS: Status.FAILED.value}
    refresh_finished_job(fields, clients(Status.COMPLETED.value), MetricRegistry())
    assert fields[STATUS] == Status.FAILED.value and fields[LEADS] == 2
