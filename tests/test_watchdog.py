"""The watchdog: no run stays Running forever. Stalled jobs are closed on real stores, one
process at a time (leased through the store), with an injected clock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import ConfigurationError, Status
from flask_jobmetrics.signals import run_stalled
from flask_jobmetrics.state import get_state

from .support import AppFactory, Clock, Recorder
from .test_journal import lines

RUN = "230615-120000"
HOUR = 3600.0


def _stalled_job(service: Any, clock: Clock) -> None:
    """acme completed, globex still running; then nothing for a while."""
    service.start_job(RUN)
    service.update_client_metrics(RUN, "acme", {"Leads Processed": 3})
    service.update_client_metrics(RUN, "globex", {"Leads Processed": 1})
    service.complete_client_metrics(RUN, "acme")
    service.flush()


def test_a_stalled_job_is_closed_with_its_running_clients_failed(store_service: Any, clock: Clock) -> None:
    """A job with no update for stale_after seconds is closed: its running clients Failed with
    Error Details saying they stalled and since when, the job completed by the usual rules
    with a note, the events told which clients it failed."""
    events = Recorder()
    service = store_service(clock, stale_after=6 * HOUR, events=events)
    _stalled_job(service, clock)
    clock.advance(6 * HOUR + 1)
    assert service.close_stalled() == [RUN]
    globex = service.get_client_run(RUN, "globex")
    assert globex is not None and globex.status is Status.FAILED and globex.completed
    assert globex.error == "stalled: no update since 2023-06-15 12:00:00 UTC (6h 00m 01s)"
    assert lines(globex.progress_log)[-1] == f"closed as Failed: {globex.error}"
    acme = service.get_client_run(RUN, "acme")
    assert acme is not None and acme.status is Status.COMPLETED and acme.error is None
    job = service.get_job_run(RUN)
    assert job is not None and job.status is Status.COMPLETED_WITH_ERRORS
    assert (
        "Closed by the watchdog at 2023-06-15 18:00:01 UTC: no update since 2023-06-15 12:00:00 UTC"
        in job.notes
    )
    assert events.stalled == [(RUN, ["globex"])]
    assert [(run, client, stalled) for run, client, _, stalled in events.failed] == [(RUN, "globex", True)]
    assert events.jobs_failed == []
    assert service.close_stalled() == []  # closed once


def test_a_job_that_keeps_updating_is_left_alone(store_service: Any, clock: Clock) -> None:
    """Updates, progress lines and a job younger than stale_after keep a job open."""
    service = store_service(clock, stale_after=6 * HOUR)
    _stalled_job(service, clock)
    for _ in range(3):
        clock.advance(4 * HOUR)
        service.log_progress(RUN, "globex", "still scoring")
        service.flush()
        assert service.close_stalled() == []
    clock.advance(6 * HOUR + 1)
    assert service.close_stalled() == [RUN]


def test_buffered_updates_of_this_process_keep_a_job_open(store_service: Any, clock: Clock) -> None:
    """A job with updates still in this process's buffer is not closed."""
    service = store_service(clock, stale_after=HOUR)
    _stalled_job(service, clock)
    clock.advance(2 * HOUR)
    service.update_client_metrics(RUN, "globex", {"Leads Processed": 1})
    assert service.close_stalled() == []


def test_a_late_update_to_a_closed_run_is_still_merged(store_service: Any, clock: Clock) -> None:
    """After the watchdog closed a job, a late update is merged and its totals recomputed."""
    service = store_service(clock, stale_after=HOUR)
    _stalled_job(service, clock)
    clock.advance(2 * HOUR)
    service.close_stalled()
    service.update_client_metrics(RUN, "globex", {"Leads Processed": 5})
    service.flush()
    globex = service.get_client_run(RUN, "globex")
    assert globex is not None and globex.metrics["Leads Processed"] == 6
    job = service.get_job_run(RUN)
    assert job is not None and job.metrics["Leads Processed"] == 9


def test_a_started_job_without_clients_is_closed_too(store_service: Any, clock: Clock) -> None:
    """A job started and never updated is closed once it is stale_after old."""
    service = store_service(clock, stale_after=HOUR)
    service.start_job(RUN)
    clock.advance(HOUR - 1)
    assert service.close_stalled() == []
    clock.advance(2)
    assert service.close_stalled() == [RUN]
    job = service.get_job_run(RUN)
    assert job is not None and job.status is not Status.RUNNING and "Closed by the watchdog" in job.notes


def test_one_process_at_a_time_runs_the_watchdog(store_service: Any, clock: Clock) -> None:
    """Two services on one store: only the lease holder runs a pass; once it stopped (and
    handed the lease back) the other one takes over."""
    first, second = store_service(clock, stale_after=HOUR), store_service(clock, stale_after=HOUR)
    assert first.watchdog is not None and second.watchdog is not None
    assert first.watchdog.run_once() is True
    assert second.watchdog.run_once() is False
    clock.advance(1)
    assert first.watchdog.run_once() is True  # the holder renews
    first.watchdog.stop()
    assert second.watchdog.run_once() is True


def test_a_dead_holders_lease_expires(store_service: Any, clock: Clock) -> None:
    """When the holder stops renewing (its process died), another takes over after the lease TTL."""
    first, second = store_service(clock, stale_after=HOUR), store_service(clock, stale_after=HOUR)
    assert first.watchdog.run_once() is True
    clock.advance(first.watchdog.lease_ttl - 1)
    assert second.watchdog.run_once() is False
    clock.advance(2)
    assert second.watchdog.run_once() is True


def test_the_watchdog_looks_at_least_every_min_60_half_stale_after(store_service: Any, clock: Clock) -> None:
    """The watchdog's interval is min(60, stale_after / 2); stale_after=0 means no watchdog."""
    assert store_service(clock, stale_after=6 * HOUR).watchdog.interval == 60
    assert store_service(clock, stale_after=30).watchdog.interval == 15
    assert store_service(clock).watchdog is None


# -- in a Flask app -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "-5", "soon"])
def test_a_bad_stale_after_is_a_clear_error(make_app: AppFactory, value: Any) -> None:
    """A negative or non-numeric JOBMETRICS_STALE_AFTER raises ConfigurationError naming the key."""
    with pytest.raises(ConfigurationError, match="JOBMETRICS_STALE_AFTER"):
        make_app(JOBMETRICS_STALE_AFTER=value)


def test_stale_after_zero_turns_the_watchdog_off(make_app: AppFactory) -> None:
    """JOBMETRICS_STALE_AFTER=0: no watchdog in the app's service."""
    assert get_state(make_app(JOBMETRICS_STALE_AFTER=0)).service.watchdog is None


def test_the_background_watchdog_sends_run_stalled(
    make_app: AppFactory, tmp_path: Path, clock: Clock
) -> None:
    """The app's watchdog thread closes a stalled job and sends run_stalled with the app."""
    url = f"sqlite:///{tmp_path}/store.sqlite3"
    app = make_app(JOBMETRICS_STORE_URL=url, JOBMETRICS_STALE_AFTER=HOUR, clock=clock)
    service = get_state(app).service
    heard: list[dict[str, Any]] = []
    done = threading.Event()

    def receiver(sender: Flask, **kwargs: Any) -> None:
        heard.append({"sender": sender, **kwargs})
        done.set()

    with run_stalled.connected_to(receiver, sender=app):
        _stalled_job(service, clock)
        clock.advance(HOUR + 1)
        assert service.watchdog is not None
        service.watchdog.wake()
        assert done.wait(timeout=30), "the watchdog thread did not close the stalled job"
    assert heard == [{"sender": app, "run_id": RUN, "client_ids": ["globex"]}]


def test_an_earlier_error_stays_below_the_stall(store_service: Any, clock: Clock) -> None:
    """A stalled client that had recorded an error keeps it in Error Details, below the stall."""
    service = store_service(clock, stale_after=HOUR)
    service.record_error(RUN, "globex", KeyError("profile"))
    service.flush()
    clock.advance(HOUR + 1)
    assert service.close_stalled() == [RUN]
    globex = service.get_client_run(RUN, "globex")
    assert globex is not None and globex.error is not None
    first, earlier = globex.error.split("\n")
    assert first.startswith("stalled: no update since 2023-06-15 12:00:00 UTC")
    assert earlier == "Earlier: KeyError: 'profile'"


def test_a_forked_child_takes_the_lease_under_its_own_name(store_service: Any, clock: Clock) -> None:
    """After fork() the child's watchdog has a fresh thread state and its own lease owner."""
    import os

    service = store_service(clock, stale_after=HOUR)
    assert service.watchdog is not None
    parent_owner = service.watchdog.owner
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its owner and whether its state is fresh, then leave
        task = service.watchdog
        fresh = task._thread is None and task.owner != parent_owner
        os.write(write, b"1" if fresh else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_a_stalled_job_is_reported_once_as_stalled(store_service: Any, clock: Clock) -> None:
    """A job whose only client stalled is reported as stalled once (no job_failed: it is
    Completed with Errors), and its client as a stalled failure."""
    events = Recorder()
    service = store_service(clock, stale_after=6 * HOUR, events=events)
    service.update_client_metrics(RUN, "globex", {"Leads Processed": 1})
    service.flush()
    clock.advance(6 * HOUR + 1)
    assert service.close_stalled() == [RUN]
    job = service.get_job_run(RUN)
    assert job is not None and job.status is Status.COMPLETED_WITH_ERRORS
    assert events.stalled == [(RUN, ["globex"])]
    assert events.jobs_failed == []
    assert [(client, stalled) for _, client, _, stalled in events.failed] == [("globex", True)]
