"""The background loop every background thread runs in, and the store lease that lets one
process of a store run a step: on real stores, with an injected clock, driven by wake()."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flask_jobmetrics.leased import Lease, LeasedLoop
from flask_jobmetrics.log import StructuredLogger
from flask_jobmetrics.stores.base import Store

from .support import Clock, MakeStore
from .test_forksafe import in_child

LOG = StructuredLogger("SYSTEM", process="test")
#: Longer than stop() waits for a thread: a loop that ends at once was woken.
FOREVER = 3600.0


class Steps:
    """A loop's step that records each call and tells the test it ran; ``fail`` of them raise."""

    def __init__(self, lease: Lease | None = None, *, fail: int = 0) -> None:
        self.lease = lease
        self.fail = fail
        self.calls = 0
        self.ran = 0  # the steps that held the lease (all of them without one)
        self.done = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        try:
            if self.calls <= self.fail:
                raise RuntimeError(f"step {self.calls} broke")
            if self.lease is None or self.lease.take():
                self.ran += 1
        finally:
            self.done.set()

    def next(self, loop: LeasedLoop) -> None:
        """Wake ``loop`` and wait until its step ran once more."""
        self.done.clear()
        loop.wake()
        assert self.done.wait(timeout=30), "the loop did not run its step"


@pytest.fixture
def loops() -> Iterator[list[LeasedLoop]]:
    """The test's loops, stopped after it."""
    made: list[LeasedLoop] = []
    yield made
    for loop in made:
        loop.stop()


def _started(steps: Steps, loops: list[LeasedLoop], **options: Any) -> LeasedLoop:
    """A started loop running ``steps``, waiting an hour between steps unless woken."""
    loop = LeasedLoop(steps, name="test-loop", wait=FOREVER, logger=LOG, lease=steps.lease, **options)
    loops.append(loop)
    loop.start()
    return loop


def _leased(store: Store, clock: Clock, loops: list[LeasedLoop]) -> tuple[LeasedLoop, Steps]:
    steps = Steps(Lease(store, "test-loop", ttl=30.0, clock=clock.timestamp, logger=LOG))
    return _started(steps, loops), steps


def test_one_of_two_loops_on_a_store_holds_the_lease(
    make_store: MakeStore, clock: Clock, loops: list[LeasedLoop]
) -> None:
    """Two loops sharing a store: only the first to take the lease runs its steps; the holder
    keeps it by renewing it on every step."""
    store = make_store()
    (first, first_steps), (second, second_steps) = _leased(store, clock, loops), _leased(store, clock, loops)
    for _ in range(3):
        first_steps.next(first)
        second_steps.next(second)
        clock.advance(20)  # within the lease's 30 s of the holder's last step
    assert (first_steps.ran, second_steps.ran) == (3, 0)


def test_a_stopped_loop_hands_its_lease_to_another(
    make_store: MakeStore, clock: Clock, loops: list[LeasedLoop]
) -> None:
    """Once the holder's loop stopped, the other loop takes the lease at its next step, long
    before the lease would have expired."""
    store = make_store()
    (first, first_steps), (second, second_steps) = _leased(store, clock, loops), _leased(store, clock, loops)
    first_steps.next(first)
    second_steps.next(second)
    assert second_steps.ran == 0
    first.stop()
    second_steps.next(second)
    assert second_steps.ran == 1


def test_a_failing_step_is_logged_and_the_loop_goes_on(
    loops: list[LeasedLoop], caplog: pytest.LogCaptureFixture
) -> None:
    """A step that raises is logged as the loop's failure, and the next step runs."""
    steps = Steps(fail=1)
    loop = _started(steps, loops, failed="testing failed (retried)")
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        steps.next(loop)
        steps.next(loop)
    assert (steps.calls, steps.ran) == (2, 1)
    failures = [r.getMessage() for r in caplog.records if r.name == "flask_jobmetrics"]
    assert len(failures) == 1
    assert "testing failed (retried)" in failures[0] and "step 1 broke" in failures[0]
    assert loop.running


def test_stop_wakes_a_waiting_loop_at_once(loops: list[LeasedLoop]) -> None:
    """A loop waiting an hour for its next step ends when stopped, and runs no step more."""
    steps = Steps()
    loop = _started(steps, loops)
    steps.next(loop)
    loop.stop()
    assert not loop.running
    assert steps.calls == 1


def test_a_stopped_loop_starts_again(loops: list[LeasedLoop]) -> None:
    """start() after stop() runs the loop anew (start is safe to repeat)."""
    steps = Steps()
    loop = _started(steps, loops)
    loop.stop()
    loop.start()
    loop.start()
    steps.next(loop)
    assert loop.running and steps.calls == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_no_thread_and_its_own_lease_owner(
    make_store: MakeStore, clock: Clock, loops: list[LeasedLoop]
) -> None:
    """In a child forked while the loop runs, the loop has no thread and its lease another
    owner (the child takes the lease as another process); the parent's loop runs on."""
    loop, steps = _leased(make_store(), clock, loops)
    steps.next(loop)
    assert loop.lease is not None
    parent_owner = loop.lease.owner
    answer = in_child(lambda: f"{loop.running} {loop.lease is not None and loop.lease.owner != parent_owner}")
    assert answer == "False True"
    steps.next(loop)
    assert loop.running and steps.ran == 2
