"""Exact totals when a merge's outcome is unknown: real faults between the buffer and the store.

Redis runs as a ``redis-server`` of the test's own behind ``FaultProxy`` (``tests/faults.py``);
SQLite faults are a real writer holding the lock past the timeout and a real disk-full error
(``RLIMIT_FSIZE``) at ``COMMIT``. Each test buffers updates, breaks the flush, lets every retry
path run (redis-py's own retries, then the buffer re-sending), and counts what was stored.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.redis import RedisStore
from flask_jobmetrics.stores.sqlite import SQLiteStore

from .faults import FaultProxy, Mode, RedisServer

pytestmark = pytest.mark.slow  # servers of their own that go away, subprocesses

ROOT = Path(__file__).resolve().parents[1]
RUN = "230615-120000"
WARMUP = "230615-110000"
LEADS = "Leads Processed"
#: The request that commits a transaction: MULTI, the merge script, EXEC.
COMMIT = (b"MULTI", b"EVALSHA")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    started = RedisServer(tmp_path, aof=True).start()
    yield started
    started.stop()


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[FaultProxy]:
    front = FaultProxy(server.port)
    yield front
    front.close()


def _service(url: str) -> MetricsService:
    """A service whose buffer only empties on flush(), with the merge script already loaded."""
    service = MetricsService(RedisStore(url), buffer_ttl=3600, flush_interval=3600)
    service.update_client_metrics(WARMUP, "warmup", {LEADS: 1})
    service.flush()  # the first EVALSHA loads the script (NOSCRIPT): faults then hit real merges
    return service


def _stored(port: int, clients: list[str]) -> int:
    """The sum of Leads Processed stored for ``clients`` of RUN, read straight from the server."""
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    try:
        rows = [store.get_client(RUN, client) for client in clients]
        return sum(row.fields.get(LEADS, 0) for row in rows if row is not None)
    finally:
        store.close()


def _flush_through_faults(service: MetricsService, attempts: int = 5) -> int:
    """flush() until it succeeds (the buffer re-sends what failed); returns the failures seen."""
    for failures in range(attempts):
        try:
            service.flush()
            return failures
        except StoreError:
            continue
    raise AssertionError(f"flush still failing after {attempts} attempts")


@pytest.mark.parametrize("mode", ["drop_reply", "delay_reply", "cut_request"])
@pytest.mark.parametrize("times", [1, 3], ids=["client-retry", "buffer-resend"])
def test_a_broken_merge_is_stored_exactly_once(
    mode: Mode, times: int, server: RedisServer, proxy: FaultProxy
) -> None:
    """A merge whose reply is lost, late or cut is stored once, whether redis-py's retry
    (one fault) or the buffer (three faults: redis-py gives up) sends it again."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.5")
    try:
        service.update_client_metrics(RUN, "acme", {LEADS: 1})
        proxy.arm(mode, times=times)
        failures = _flush_through_faults(service)
        assert proxy.broken == times
        assert failures == (1 if times == 3 else 0)
        assert _stored(server.port, ["acme"]) == 1
        assert len(service.buffer) == 0
    finally:
        service.close()


def test_redis_stopped_by_sigterm_during_a_flush_stores_each_update_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    """Redis (AOF, appendfsync always) stopped by SIGTERM right after it ran a flush's merge,
    then started again on its directory: 2,000 acknowledged updates are 2,000 stored."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=2")
    clients = [f"c{i}" for i in range(40)]
    try:
        for i in range(2000):
            service.update_client_metrics(RUN, clients[i % len(clients)], {LEADS: 1})
        proxy.arm("drop_reply", after_reply=server.stop)
        with pytest.raises(StoreError):
            service.flush()  # the server is gone: redis-py's retries fail, the batch stays buffered
        server.start()  # the same directory: the AOF brings back the merge and its token
        assert _flush_through_faults(service) == 0
        assert _stored(server.port, clients) == 2000
    finally:
        service.close()


@pytest.mark.parametrize("mode", ["drop_reply", "delay_reply"])
def test_a_completion_whose_exec_reply_is_lost_is_applied_once(
    mode: Mode, server: RedisServer, proxy: FaultProxy
) -> None:
    """A completion with metrics whose EXEC ran but whose reply was lost (reset, or late past
    the socket timeout) is applied once: the transaction that runs again finds its token."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.5")
    try:
        service.update_client_metrics(RUN, "acme", {LEADS: 1})
        proxy.arm(mode, match=COMMIT)
        run = service.complete_client_metrics(RUN, "acme", {LEADS: 5})
        assert proxy.broken == 1
        assert run.metrics[LEADS] == 6
        assert _stored(server.port, ["acme"]) == 6
        store = RedisStore(f"redis://127.0.0.1:{server.port}/0")
        try:
            row = store.get_client(RUN, "acme")
        finally:
            store.close()
        assert row is not None and row.completed
        assert str(row.fields["Progress Log"]).count("completed with status") == 1
    finally:
        service.close()


def test_a_job_completion_whose_exec_reply_is_lost_appends_its_note_once(
    server: RedisServer, proxy: FaultProxy
) -> None:
    """complete_job_metrics(notes=...) whose EXEC reply is lost appends the note once."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.5")
    try:
        service.complete_client_metrics(RUN, "acme", {LEADS: 2})
        proxy.arm("drop_reply", match=COMMIT)
        service.complete_job_metrics(RUN, notes="rerun of the night batch")
        assert proxy.broken == 1
        store = RedisStore(f"redis://127.0.0.1:{server.port}/0")
        try:
            job = store.get_job(RUN)
        finally:
            store.close()
        assert job is not None and job.completed
        assert str(job.fields["System Notes"]).count("rerun of the night batch") == 1
        assert job.fields[LEADS] == 2
    finally:
        service.close()


def test_start_job_whose_reply_is_lost_reserves_one_run(server: RedisServer, proxy: FaultProxy) -> None:
    """start_job() whose create-if-absent ran but whose reply was lost, then re-sent by
    redis-py, reserves one run (not a second one a second later) and reports it created."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0?socket_timeout=0.5")
    try:
        before = {job.run_id for job in service.list_job_runs()}
        proxy.arm("drop_reply")
        job = service.start_job()
        assert proxy.broken == 1
        assert {j.run_id for j in service.list_job_runs()} - before == {job.run_id}
    finally:
        service.close()


def test_scripts_flushed_just_before_a_commit_are_loaded_again(
    server: RedisServer, proxy: FaultProxy
) -> None:
    """SCRIPT FLUSH between redis-py loading the merge script and the EXEC that runs it (a
    restart, or another client) makes that EXEC run nothing: the completion is applied once."""
    service = _service(f"redis://127.0.0.1:{proxy.port}/0")
    raw = redis.Redis(port=server.port)
    try:
        service.update_client_metrics(RUN, "acme", {LEADS: 1})
        proxy.arm("call_first", match=COMMIT, before=raw.script_flush)
        run = service.complete_client_metrics(RUN, "acme", {LEADS: 5})
        assert proxy.broken == 1
        assert run.completed and run.metrics[LEADS] == 6
        assert _stored(server.port, ["acme"]) == 6
    finally:
        raw.close()
        service.close()


def _sqlite_service(path: Path, timeout: float = 10.0) -> MetricsService:
    store = SQLiteStore(f"sqlite:///{path}", timeout=timeout)
    return MetricsService(store, buffer_ttl=3600, flush_interval=3600)


def test_sqlite_locked_past_the_timeout_during_a_flush_stores_once(tmp_path: Path) -> None:
    """A flush refused with ``database is locked`` keeps its batch; the next one stores it once."""
    path = tmp_path / "jobmetrics.sqlite3"
    service = _sqlite_service(path, timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        for _ in range(10):
            service.update_client_metrics(RUN, "acme", {LEADS: 1})
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            service.flush()
        holder.execute("ROLLBACK")
        assert _flush_through_faults(service) == 0
        row = service.store.get_client(RUN, "acme")
        assert row is not None and row.fields[LEADS] == 10
    finally:
        holder.close()
        service.close()


DISK_FULL_CHILD = """
import json, os, resource, signal, sys
from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.sqlite import SQLiteStore

path, what = sys.argv[1], sys.argv[2]
service = MetricsService(SQLiteStore("sqlite:///" + path), buffer_ttl=3600, flush_interval=3600)
service.update_client_metrics("230615-110000", "warmup", {"Leads Processed": 1})
service.flush()
for i in range(500):
    service.update_client_metrics("230615-120000", f"c{i % 50}", {"Leads Processed": 1})
if what == "complete":  # the buffer is empty: the completion's own COMMIT meets the full disk
    service.flush()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path + "-wal"), hard))

def act():
    if what == "complete":
        service.complete_client_metrics("230615-120000", "c0", {"Leads Processed": 5})
    else:
        service.flush()

errors = []
try:
    act()
except StoreError as exc:
    errors.append(str(exc))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
act()  # the caller's retry after the StoreError
rows = service.store.list_clients("230615-120000")
report = {"errors": errors, "stored": sum(r.fields["Leads Processed"] for r in rows)}
print(json.dumps({**report, "completed": [r.client_id for r in rows if r.completed]}))
service.close()
"""


@pytest.mark.parametrize(
    ("what", "stored"), [("flush", 500), ("complete", 505)], ids=["buffered", "completion"]
)
def test_sqlite_disk_full_at_commit_stores_once(tmp_path: Path, what: str, stored: int) -> None:
    """A flush or a completion whose COMMIT fails because the disk is full changes nothing
    (SQLite rolls it back: the outcome is known); sent again, it is stored once (500
    buffered, or those plus a completion's 5)."""
    path = tmp_path / "jobmetrics.sqlite3"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DISK_FULL_CHILD), str(path), what],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["errors"]) == 1 and "disk" in report["errors"][0]
    assert report["stored"] == stored
    assert report["completed"] == (["c0"] if what == "complete" else [])
