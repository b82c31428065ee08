"""The run journal: Progress Log lines and System Notes, on real stores (memory, SQLite,
Redis), through the buffer and the store merge."""

from __future__ import annotations

from typing import Any

import pytest

from flask_jobmetrics import Status
from flask_jobmetrics.journal import MAX_LINE_CHARS, append_text, log_line, merge_lines, stamp
from flask_jobmetrics.longtext import bound_text

from .support import START, Clock

RUN = "230615-120000"


def lines(text: str) -> list[str]:
    """The messages of a Progress Log, without their timestamps."""
    return [line[25:] for line in text.split("\n")]


# -- the pure rules ------------------------------------------------------------------------


def test_stamp_is_fixed_width_utc_milliseconds() -> None:
    """A line's timestamp is UTC to the millisecond, so lines sort by their text."""
    assert stamp(START.replace(microsecond=123_999)) == "2023-06-15 12:00:00.123Z"
    assert log_line(START, "two\nlines") == "2023-06-15 12:00:00.000Z two | lines"


def test_a_huge_message_is_cut_not_refused() -> None:
    """A message longer than a line's bound is cut to it, with the count of what was cut."""
    line = log_line(START, "x" * 50_000)
    assert len(line) <= MAX_LINE_CHARS + 25
    assert line.endswith("characters cut]")


def test_merge_lines_is_stable_on_equal_timestamps() -> None:
    """Lines of the same millisecond keep the order in which they were merged."""
    a, b = log_line(START, "first"), log_line(START, "second")
    assert merge_lines(a, b) == f"{a}\n{b}"
    assert merge_lines(b, a) == f"{b}\n{a}"


def test_append_text_bounds_with_bound_text() -> None:
    """The bound of appended text is the long-text rule: the newest text and a cut mark."""
    text = "\n".join(log_line(START, f"line {i}") for i in range(200))
    assert append_text(None, (1_000, text)) == bound_text(text, 1_000)


# -- the service ---------------------------------------------------------------------------


def test_service_lines_record_start_completion_and_counts(store_service: Any, clock: Clock) -> None:
    """The service logs the first update, and the completion with its status and counts."""
    service = store_service(clock)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 5})
    clock.advance(1)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 2})
    clock.advance(1)
    run = service.complete_client_metrics(RUN, "acme")
    assert lines(run.progress_log) == [
        "started (first update)",
        "completed with status Completed (Leads Processed 7)",
    ]
    assert run.progress_log.startswith(stamp(START))


def test_log_progress_lines_from_two_processes_are_in_time_order(store_service: Any) -> None:
    """Lines logged by two processes, flushed out of order, end up in time order."""
    clock_a, clock_b = Clock(), Clock()
    first, second = store_service(clock_a), store_service(clock_b)
    first.update_client_metrics(RUN, "acme", {"Leads Processed": 1})
    first.flush()
    clock_a.advance(10)
    first.log_progress(RUN, "acme", "batch 2 of 3")
    clock_b.advance(5)
    second.log_progress(RUN, "acme", "batch 1 of 3")
    clock_b.advance(10)
    second.log_progress(RUN, "acme", "batch 3 of 3")
    second.flush()  # lines at +5 and +15 reach the store before the line at +10
    first.flush()
    run = second.get_client_run(RUN, "acme")
    assert run is not None
    assert lines(run.progress_log) == [
        "started (first update)",
        "batch 1 of 3",
        "batch 2 of 3",
        "batch 3 of 3",
    ]
    assert run.metrics == {"Leads Processed": 1}  # the log is not a metric


def test_log_progress_is_read_back_before_the_flush(store_service: Any, clock: Clock) -> None:
    """A logged line is in the returned view at once (read-your-writes), and once in the store."""
    service = store_service(clock)
    service.log_progress(RUN, "acme", "fetched 40 leads")
    run = service.get_client_run(RUN, "acme")
    assert run is not None and lines(run.progress_log) == ["started (first update)", "fetched 40 leads"]
    service.flush()
    row = service.store.get_client(RUN, "acme")
    assert row is not None and row.fields["Progress Log"] == run.progress_log
    assert row.fields["Status"] == Status.RUNNING.value


def test_progress_log_is_bounded_keeping_the_newest(store_service: Any, clock: Clock) -> None:
    """The Progress Log never grows past its bound; the newest lines are the ones kept."""
    service = store_service(clock, progress_log_chars=2_000)
    for i in range(300):
        clock.advance(1)
        service.log_progress(RUN, "acme", f"step {i}")
        if i % 50 == 49:
            service.flush()
    service.flush()
    run = service.get_client_run(RUN, "acme")
    assert run is not None
    assert len(run.progress_log) <= 2_000
    assert run.progress_log.startswith("[… ")
    assert lines(run.progress_log)[-1] == "step 299"


def test_a_message_that_is_not_a_string_is_a_clear_error(store_service: Any, clock: Clock) -> None:
    """log_progress with a non-string message raises TypeError and records nothing."""
    service = store_service(clock)
    with pytest.raises(TypeError, match="message must be a string"):
        service.log_progress(RUN, "acme", 42)
    assert service.get_client_run(RUN, "acme") is None


def test_notes_append_to_system_notes(store_service: Any, clock: Clock) -> None:
    """complete_client_metrics(notes=...) appends a line to the client's System Notes."""
    service = store_service(clock)
    service.complete_client_metrics(RUN, "acme", {"Leads Processed": 1}, notes="retried twice")
    run = service.complete_client_metrics(RUN, "acme", notes="model v2")
    assert run.notes == "retried twice\nmodel v2"


def test_notes_that_are_not_a_string_are_a_clear_error(store_service: Any, clock: Clock) -> None:
    """notes must be a string: anything else raises TypeError before anything is merged."""
    service = store_service(clock)
    with pytest.raises(TypeError, match="notes must be a string"):
        service.complete_client_metrics(RUN, "acme", notes=["a"])
    assert service.get_client_run(RUN, "acme") is None


def test_the_row_texts_are_not_metrics_and_the_rejection_says_how_to_write_them(
    store_service: Any, clock: Clock
) -> None:
    """A System Notes or Progress Log "metric" is rejected with the way to write it instead."""
    service = store_service(clock)
    run = service.update_client_metrics(RUN, "acme", {"System Notes": "x", "progress_log": "y"})
    reasons = {problem.metric: problem.reason for problem in run.rejected}
    assert "complete_client_metrics(notes=...)" in reasons["System Notes"]
    assert "log_progress(...)" in reasons["progress_log"]
    assert run.notes == "" and lines(run.progress_log) == ["started (first update)"]
