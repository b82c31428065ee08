"""The values the service returns: immutable pydantic v2 models, and the ``Status`` enum.

Importing this module loads pydantic: ``import flask_jobmetrics`` does not, and the rest of
the package imports it where a model is first made (``Status`` lives in the pydantic-free
:mod:`flask_jobmetrics.status`, re-exported here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .status import Status

__all__ = ["ClientRun", "FlushReport", "Health", "JobRun", "RejectedMetric", "Status"]


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class RejectedMetric(BaseModel):
    """One metric of an update that was not merged, and why."""

    model_config = _FROZEN

    #: The Airtable field name when the metric is known, else the name as given.
    metric: str
    #: The value as given (its ``repr`` when it cannot be serialised).
    value: Any
    reason: str


class ClientRun(BaseModel):
    """The merged state of one client inside one job run."""

    model_config = _FROZEN

    run_id: str
    client_id: str
    client_run_id: str
    status: Status = Status.RUNNING
    start_time: datetime | None = None
    end_time: datetime | None = None
    #: Airtable field name -> merged value, for every metric but Status, Start/End Time.
    metrics: dict[str, Any] = Field(default_factory=dict)
    #: ``System Notes``: lines appended by ``notes=`` and by the service.
    notes: str = ""
    #: ``Error Details``: ``"<ExceptionType>: <message>"`` of the error the run failed with.
    error: str | None = None
    #: ``Progress Log``: timestamped lines, oldest first, as published (bounded).
    progress_log: str = ""
    #: Metrics of *this call* that were not merged.
    rejected: list[RejectedMetric] = Field(default_factory=list)
    completed: bool = False


class JobRun(BaseModel):
    """The merged state of one job run and the aggregates of its client runs."""

    model_config = _FROZEN

    run_id: str
    status: Status = Status.RUNNING
    start_time: datetime | None = None
    end_time: datetime | None = None
    notes: str = ""
    #: Aggregates by Airtable field name, including Clients Processed / With Errors.
    metrics: dict[str, Any] = Field(default_factory=dict)
    client_ids: list[str] = Field(default_factory=list)


class FlushReport(BaseModel):
    """What ``flush`` achieved before it returned."""

    model_config = _FROZEN

    #: Buffered entries that reached the store.
    flushed: int = 0
    #: Rows Airtable accepted while flush waited.
    published: int = 0
    #: Rows still waiting in the outbox when flush returned.
    pending: int = 0
    #: Rows in the dead-letter list (Airtable refused them; see ``flask jobmetrics outbox``).
    dead: int = 0

    @property
    def done(self) -> bool:
        """True when nothing is left waiting (dead letters aside)."""
        return self.pending == 0


class Health(BaseModel):
    """Whether this process can reach the store, as far as it knows without asking it."""

    model_config = _FROZEN

    #: False from a failed store call (or a store not reachable at start-up) until a merge works.
    store_available: bool
    #: The last store error while unavailable.
    store_error: str | None = None
    #: Entries waiting in this process's buffer.
    buffered: int = 0
