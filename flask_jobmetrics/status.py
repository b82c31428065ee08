"""The ``Status`` enum of job and client runs, apart from the models so that it loads without pydantic."""

from __future__ import annotations

from enum import Enum

__all__ = ["Status"]


class Status(str, Enum):
    """The status of a job run or a client run, as written to Airtable."""

    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    NO_LEADS = "No Leads To Score"
    COMPLETED_WITH_ERRORS = "Completed with Errors"

    def __str__(self) -> str:
        return self.value
