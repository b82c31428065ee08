"""Progress for long CLI work: ``flush``'s publishing bar and ``sweep``'s held-back client lines.

Both use click's progress bar, which draws only on a terminal.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import click

from .log import LOGGER_NAME
from .service import MetricsService

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import FlushReport

__all__ = ["HeldClientLines", "client_lines_held", "publish_with_progress"]

#: Rows per Airtable request (batch_upsert takes 10 records), for the requests-left estimate.
ROWS_PER_REQUEST = 10
#: How often the flush progress bar re-reads the outbox, in seconds.
PROGRESS_POLL = 0.2


def publish_with_progress(service: MetricsService, timeout: float | None, file: TextIO) -> FlushReport:
    """``service.flush(timeout)`` with a progress bar on ``file``: rows sent and pending, requests
    left, and click's estimate of the time left at the current pace."""
    flushed = service.buffer.flush()  # the buffer first, so the bar knows every row to send
    total = service.store.outbox_counts()[0]
    outcome: list[FlushReport] = []
    failure: list[BaseException] = []

    def publish() -> None:
        try:
            outcome.append(service.flush(timeout=timeout))
        except BaseException as exc:  # re-raised in the command's thread
            failure.append(exc)

    worker = threading.Thread(target=publish, name="jobmetrics-flush", daemon=True)
    state = {"pending": total}

    def describe(_: object) -> str:
        pending = state["pending"]
        requests = math.ceil(pending / ROWS_PER_REQUEST)
        return f"{total - pending:,} sent · {pending:,} pending · ~{requests:,} requests left"

    worker.start()
    with click.progressbar(
        length=max(total, 1), label="Publishing", file=file, show_eta=True, item_show_func=describe
    ) as bar:
        done = 0
        while worker.is_alive():
            worker.join(PROGRESS_POLL)
            state["pending"] = min(service.store.outbox_counts()[0], total)
            bar.update(total - state["pending"] - done)
            done = total - state["pending"]
    if failure:
        raise failure[0]
    report = outcome[0]
    return report.model_copy(update={"flushed": flushed + report.flushed})


class HeldClientLines(logging.Filter):
    """Counts and holds back client-level log lines below ERROR (one per client closed)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        context = getattr(record, "jobmetrics", None)
        if isinstance(context, dict) and context.get("scope") == "CLIENT" and record.levelno < logging.ERROR:
            self.count += 1
            return False
        return True


@contextmanager
def client_lines_held(hold: bool) -> Iterator[HeldClientLines]:
    """While the block runs, hold back (and count) client-level lines when ``hold``."""
    held = HeldClientLines()
    logger = logging.getLogger(LOGGER_NAME)
    if hold:
        logger.addFilter(held)
    try:
        yield held
    finally:
        logger.removeFilter(held)
