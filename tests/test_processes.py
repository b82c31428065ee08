"""The whole stack (extension -> service -> buffer -> SQLite store) with real processes.

Each worker is a separate interpreter running ``tests/proc_worker.py`` on a real SQLite
file; results are read back by a fresh app opened on the same file afterwards. The tests
synchronise on the workers' output lines (``readline`` with a deadline), never on sleeps.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import JobMetrics, Status

from .proc_worker import CHAINED_EXIT, LEADS, make_app

pytestmark = pytest.mark.slow  # worker processes

ROOT = Path(__file__).resolve().parent.parent
RUN = "240501-120000"
TIMEOUT = 30.0
#: Nothing leaves the buffer by time: only flush(), capacity, exit or SIGTERM move entries.
LONG = {"FLUSH_INTERVAL": 3600, "BUFFER_TTL": 3600}
#: Entries leave the buffer by time while the updates are still being made.
SHORT = {"FLUSH_INTERVAL": 0.05, "BUFFER_TTL": 0.05}


def _env() -> dict[str, str]:
    """The environment of a worker: ours without JOBMETRICS_* settings, the repo importable."""
    env = {k: v for k, v in os.environ.items() if "JOBMETRICS_" not in k}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


class Worker:
    """One ``python -m tests.proc_worker`` process; its stdout lines are read with a deadline."""

    def __init__(self, scenario: str, url: str, params: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.proc_worker", scenario, url, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=ROOT,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._errors: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._errors.append(line)

    def stderr(self) -> str:
        return "".join(self._errors)

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next stdout line; fails (with the worker's stderr) on timeout or exit."""
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker printed nothing in {timeout}s; stderr:\n{self.stderr()}") from None
        if got is None:
            code = self.proc.wait(timeout)
            raise AssertionError(f"worker exited with {code} before printing; stderr:\n{self.stderr()}")
        return got

    def stats(self) -> dict[str, int]:
        """The next line as the worker's buffer stats (``BufferStats`` as a dict)."""
        stats: dict[str, int] = json.loads(self.line())
        return stats

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status (negative: killed by that signal), once stderr has been read."""
        code = self.proc.wait(timeout)
        for pump in self._pumps:
            pump.join(timeout)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        assert self.proc.stdin is not None
        self.proc.stdin.close()


Spawn = Callable[..., Worker]
OpenApp = Callable[..., tuple[Flask, JobMetrics]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'jobmetrics.sqlite3'}"


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(scenario, url, **params)`` starts a worker; all are killed after the test."""
    workers: list[Worker] = []

    def start(scenario: str, url: str, **params: Any) -> Worker:
        worker = Worker(scenario, url, params)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def open_app() -> Iterator[OpenApp]:
    """``open_app(url, **config)`` builds an app in this process; closed after the test."""
    opened: list[tuple[Flask, JobMetrics]] = []

    def build(url: str, **config: Any) -> tuple[Flask, JobMetrics]:
        opened.append(make_app(url, **config))
        return opened[-1]

    yield build
    for flask_app, ext in opened:
        ext.state(flask_app).service.close()


def _leads(ext: JobMetrics, client: str) -> int | None:
    """``Leads Processed`` of (RUN, client) as ``ext`` reads it; None when there is no such row."""
    found = ext.get_client_run(RUN, client)
    return None if found is None else int(found.metrics[LEADS])


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)  # polling a condition, not timing anything


def _start_together(workers: list[Worker]) -> None:
    """Release the workers at the same moment: each said ``ready``, then all get ``go``."""
    for worker in workers:
        assert worker.line() == "ready"
    for worker in workers:
        worker.send("go")


# -- several processes on one file ----------------------------------------------------------


def test_four_processes_on_one_client_add_up_exactly(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """4 overlapping processes x 500 updates of one (run, client) give exactly 2,000 in the file."""
    workers = [spawn("hammer", url, run=RUN, client="acme", count=500, config=SHORT) for _ in range(4)]
    _start_together(workers)
    stats = [worker.stats() for worker in workers]
    assert [worker.wait() for worker in workers] == [0] * 4
    assert [(s["added"], s["buffered"], s["failed"]) for s in stats] == [(500, 0, 0)] * 4

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 2000
    client = ext.get_client_run(RUN, "acme")
    assert client is not None and client.status is Status.RUNNING


def test_four_processes_on_own_clients_share_one_job(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """4 overlapping processes x 500 updates, each on its own client: 500 each, one job, 4 clients."""
    clients = ["c0", "c1", "c2", "c3"]
    workers = [spawn("hammer", url, run=RUN, client=c, count=500, config=SHORT) for c in clients]
    _start_together(workers)
    for worker in workers:
        worker.stats()
    assert [worker.wait() for worker in workers] == [0] * 4

    _, ext = open_app(url)
    assert {c: _leads(ext, c) for c in clients} == dict.fromkeys(clients, 500)
    assert [job.run_id for job in ext.list_job_runs()] == [RUN]
    job = ext.update_job_aggregate_metrics(RUN)
    assert sorted(job.client_ids) == clients
    assert job.metrics["Clients Processed"] == 4
    assert job.metrics[LEADS] == 2000


# -- one process, many threads, a busy buffer ----------------------------------------------


@pytest.mark.parametrize(
    ("config", "min_flushes"),
    [(SHORT, 3), ({"BUFFER_TTL": 0.05, "FLUSH_INTERVAL": 3600}, 2)],
    ids=["max-age", "idle-ttl"],
)
def test_eight_threads_through_one_app_add_up_exactly(
    url: str, open_app: OpenApp, config: dict[str, float], min_flushes: int
) -> None:
    """8 threads x 2,000 updates or more of one client through one app, flusher running,
    add up exactly.

    ``max-age``: entries older than 0.05 s are swept to the store while the threads write
    (they write on past their first 1,000 until the flusher has swept once).
    ``idle-ttl``: the entry is written too often to idle out, until the threads pause halfway
    and the 0.05 s TTL expiry hands it to the store (the path cachetools would drop it on).
    """
    flask_app, ext = open_app(url, **config)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    done = [0] * 8
    sweep_while_writing = min_flushes > 2

    def moved_to_store() -> bool:
        stats = ext.stats()
        return stats.buffered == 0 and stats.in_flight == 0

    def work(i: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while done[i] < 1000 or (
                sweep_while_writing and ext.stats().flushed == 0 and time.monotonic() < deadline
            ):
                ext.update_client_metrics(RUN, "acme", {LEADS: 1})
                done[i] += 1
            if barrier.wait(TIMEOUT) == 0:  # halfway: one thread waits for the flusher alone
                _wait_for(moved_to_store, "the background flusher to empty the buffer")
            barrier.wait(TIMEOUT)
            for _ in range(1000):
                ext.update_client_metrics(RUN, "acme", {LEADS: 1})
                done[i] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert ext.state(flask_app).service.buffer.running

    ext.flush()
    stats = ext.stats()
    total = sum(done)
    assert total >= 16_000
    assert (stats.added, stats.buffered, stats.in_flight, stats.failed) == (total, 0, 0, 0)
    assert stats.flushed >= min_flushes  # the halfway sweep, the final flush (+ a sweep while writing)
    _, fresh = open_app(url)
    assert _leads(fresh, "acme") == total


def test_tiny_buffer_sends_every_update_to_the_store(url: str, open_app: OpenApp) -> None:
    """BUFFER_MAXSIZE=10 with 1,000 clients: capacity evictions reach the store, nothing is dropped."""
    _, ext = open_app(url, BUFFER_MAXSIZE=10, **LONG)
    expected: dict[str, int] = {}
    calls = 0

    def update(client: str, amount: int) -> None:
        nonlocal calls
        ext.update_client_metrics(RUN, client, {LEADS: amount})
        expected[client] = expected.get(client, 0) + amount
        calls += 1

    for i in range(1000):
        update(f"c{i:04d}", 1)
        if i % 10 == 0:
            update(f"c{i:04d}", 2)  # still in the buffer: merged there
    for i in range(0, 1000, 25):
        update(f"c{i:04d}", 100)  # evicted long ago: merged in the store

    before = ext.stats()
    assert before.added == calls
    assert before.buffered <= 10
    assert before.failed == 0
    assert before.flushed > 1000  # evicted entries went to the store, not away

    ext.flush()
    after = ext.stats()
    assert (after.added, after.buffered, after.in_flight, after.failed) == (calls, 0, 0, 0)
    assert after.flushed + after.merged == calls  # every entry created reached the store once

    _, fresh = open_app(url)
    assert {client: _leads(fresh, client) for client in expected} == expected
    job = fresh.update_job_aggregate_metrics(RUN)
    assert job.metrics["Clients Processed"] == 1000
    assert job.metrics[LEADS] == sum(expected.values())


# -- how a process ends ---------------------------------------------------------------------


def test_normal_exit_drains_the_buffer(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """A process that exits normally without flush() still gets its buffered updates into the file."""
    worker = spawn("exit", url, run=RUN, client="acme", count=300, config=LONG)
    stats = worker.stats()
    assert (stats["buffered"], stats["flushed"]) == (1, 0)  # only in memory when main returned
    assert worker.wait() == 0, worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 300


def test_sigkill_after_flush_keeps_what_was_flushed(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """Updates flushed before a SIGKILL are in the file; those buffered after the flush are lost.

    That loss is the documented bound: with no flush, exit or SIGTERM to run the drain, a
    killed process loses at most what it buffered since its last flush -- at most
    ``JOBMETRICS_FLUSH_INTERVAL`` seconds of updates (here 3600 s, so all of them).
    """
    worker = spawn("flush-then-block", url, run=RUN, client="acme", count=200, after=50, config=LONG)
    assert worker.line() == "flushed"
    stats = worker.stats()
    assert (stats["added"], stats["buffered"]) == (300, 2)  # acme's 50 and late's 50 wait in memory
    worker.proc.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 200  # the 50 made after the flush are not there
    assert ext.get_client_run(RUN, "late") is None
    job = ext.get_job_run(RUN)
    assert job is not None and list(job.client_ids) == ["acme"]


@pytest.mark.parametrize("chain", [False, True], ids=["default", "chained"])
def test_sigterm_drains_the_buffer(url: str, spawn: Spawn, open_app: OpenApp, chain: bool) -> None:
    """SIGTERM to a process with buffered updates gets them into the file (init_app's SIGTERM drain).

    ``default``: no handler before init_app, so the drain ends the process with 128 + 15.
    ``chained``: an earlier handler ends the process with ``os._exit`` (no atexit), so only
    the SIGTERM drain, run before the handler it chains to, can have saved the updates.
    """
    worker = spawn("sigterm", url, run=RUN, client="acme", count=300, chain=chain, config=LONG)
    stats = worker.stats()
    assert (stats["buffered"], stats["flushed"]) == (1, 0)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == (CHAINED_EXIT if chain else 128 + signal.SIGTERM), worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 300


def test_write_through_survives_sigkill(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """With FLUSH_INTERVAL=0 an update that returned is in the file even if SIGKILL follows at once."""
    worker = spawn("write-through", url, run=RUN, client="acme", count=42, config={"FLUSH_INTERVAL": 0})
    assert worker.line() == "updated"
    worker.proc.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 42


def test_sigterm_in_a_burst_keeps_every_update_that_returned(
    url: str, spawn: Spawn, open_app: OpenApp
) -> None:
    """SIGTERM in the middle of a burst of updates loses none of those whose call returned.

    The service's operations are guarded (``flask_jobmetrics.shutdown``): a SIGTERM that
    lands inside one is acted on when it returns, so the drain never runs in the middle of
    ``add()`` or of a store transaction.
    """
    worker = spawn("burst", url, run=RUN, client="acme", count=2000, config=SHORT)
    assert worker.line() == "busy"
    worker.proc.send_signal(signal.SIGTERM)
    returned = json.loads(worker.line())["returned"]
    assert worker.wait() == 0, worker.stderr()

    _, ext = open_app(url)
    # the call the signal interrupted may or may not have been merged before it unwound
    assert _leads(ext, "acme") in (returned, returned + 1)
    assert returned >= 2000


def test_forked_children_count_once(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """A parent with buffered updates forks 2 children; all three exit unflushed: exactly 3 x 300."""
    worker = spawn("fork", url, run=RUN, client="acme", count=300, children=2, config=LONG)
    assert json.loads(worker.line()) == [0, 0]
    assert worker.wait() == 0, worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 900


def test_sigterm_during_commit_counts_once(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """SIGTERM arriving while flush() commits to SQLite leaves every update counted exactly once."""
    worker = spawn(
        "sigterm-after-sql", url, run=RUN, client="acme", count=10, sql="COMMIT", then="flush", config=LONG
    )
    assert worker.stats()["buffered"] == 1
    assert worker.wait() == 128 + signal.SIGTERM, worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 10  # the bug stores 20: the committed batch is merged twice


def test_sigterm_during_eviction_keeps_the_evicted_updates(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """SIGTERM arriving while add() evicts an entry (BUFFER_MAXSIZE=1) loses none of its updates."""
    config = {"BUFFER_MAXSIZE": 1, **LONG}
    worker = spawn("sigterm-at-eviction", url, run=RUN, client="acme", count=10, config=config)
    assert worker.stats()["buffered"] == 1
    assert worker.wait() == 128 + signal.SIGTERM, worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 10  # the bug: None, the 10 updates that returned are gone
    assert _leads(ext, "other") in (None, 1)  # its call never returned


def test_sigterm_during_a_read_keeps_the_drained_updates(url: str, spawn: Spawn, open_app: OpenApp) -> None:
    """SIGTERM arriving while the main thread reads the store still gets the buffered updates stored."""
    worker = spawn(
        "sigterm-after-sql", url, run=RUN, client="acme", count=10, sql="BEGIN", then="read", config=LONG
    )
    assert worker.stats()["buffered"] == 1
    assert worker.wait() == 128 + signal.SIGTERM, worker.stderr()

    _, ext = open_app(url)
    assert _leads(ext, "acme") == 10  # the bug: None, drained into a transaction never committed
