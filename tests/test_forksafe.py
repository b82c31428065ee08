"""A process forked while a background thread holds one of the extension's locks (gunicorn
``--preload``) gets usable locks, with a real ``os.fork()``; the child reports through a pipe."""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests

from flask_jobmetrics.alerts import Alerter
from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.exceptions import StoreUnavailableError
from flask_jobmetrics.forksafe import ForkSafeLock
from flask_jobmetrics.stores.deferred import DeferredStore
from flask_jobmetrics.stores.memory import MemoryStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

RUN = "230615-120000"


def in_child(work: Callable[[], str], timeout: float = 20.0) -> str:
    """Fork; the child runs ``work`` and writes its answer to a pipe. ``"hung"`` when the child
    did not answer within ``timeout`` seconds (it is killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            answer = work()
        except BaseException as exc:
            answer = f"raised {exc!r}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return "hung"
        return os.read(read, 4096).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_a_store_being_opened_by_a_thread_does_not_hang_a_forked_child() -> None:
    """A thread of the parent inside the deferred store's opener (its lock held) at fork time:
    the fork does not wait for it, and the child opens the store by itself."""
    parent = os.getpid()
    inside, release = threading.Event(), threading.Event()

    def opener() -> MemoryStore:
        if os.getpid() == parent:
            inside.set()
            release.wait(30)
        return MemoryStore()

    store = DeferredStore("memory://", opener, StoreUnavailableError("down"), durable=False, shared=False)
    store.retry_interval = 0.0
    opening = threading.Thread(target=store.get_job, args=(RUN,))
    opening.start()
    try:
        assert inside.wait(10)
        answer = in_child(lambda: repr(store.get_job(RUN)))
    finally:
        release.set()
        opening.join(10)
    assert answer == "None"


def test_a_fork_waits_for_a_merge_under_way_and_the_child_can_write() -> None:
    """A merge inside the memory store (its lock held) when the process forks: the fork waits
    for the merge, so the child sees all of it and can merge too."""
    store = MemoryStore()
    inside, go = threading.Event(), threading.Event()

    def finalize(fields: dict[str, Any]) -> None:
        inside.set()
        go.wait(30)
        fields["Status"] = "Completed"

    merging = threading.Thread(
        target=store.merge_client, args=(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 3)}), finalize)
    )
    merging.start()
    assert inside.wait(10)

    def child() -> str:
        row = store.get_client(RUN, "acme")
        assert row is not None
        after, _ = store.merge_client(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 1)}))
        return f"{row.fields['Status']} {after.fields['Leads Processed']}"

    releaser = threading.Timer(0.2, go.set)  # lets the merge finish while fork() waits for it
    releaser.start()
    try:
        answer = in_child(child)
    finally:
        go.set()
        merging.join(10)
        releaser.cancel()
    assert answer == "Completed 4"


def test_a_lock_held_by_a_thread_is_fresh_in_the_child() -> None:
    """A ForkSafeLock(wait_at_fork=False) held by a thread of the parent is free in the child."""
    lock = ForkSafeLock(wait_at_fork=False)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)

    def child() -> str:
        with lock:
            return "taken"

    try:
        answer = in_child(child)
    finally:
        done.set()
        holder.join(10)
    assert answer == "taken"


def test_the_alerter_renews_its_session_in_a_child() -> None:
    """A forked child's alerter posts through a new requests.Session (not the parent's pooled
    sockets); a session handed in is left to its owner."""
    own = Alerter("http://127.0.0.1:9/alerts", background=False)
    given = requests.Session()
    handed = Alerter("http://127.0.0.1:9/alerts", background=False, session=given)
    parent_session = id(own.session)
    answer = in_child(lambda: f"{id(own.session) != parent_session} {handed.session is given}")
    assert answer == "True True"
    assert id(own.session) == parent_session


_FIRST_MODEL_PROBE = r"""
import importlib.abc, os, signal, sys, threading
import flask_jobmetrics
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores import open_store

assert "flask_jobmetrics.models" not in sys.modules
inside, go = threading.Event(), threading.Event()


class Slow(importlib.abc.MetaPathFinder):
    # holds the first import of the models until told to go (the thread is mid-import)
    def find_spec(self, name, path=None, target=None):
        if name == "flask_jobmetrics.models" and threading.current_thread().name == "first":
            inside.set()
            go.wait(30)
        return None


sys.meta_path.insert(0, Slow())
service = MetricsService(open_store("memory://"), buffer_ttl=3600.0, flush_interval=3600.0)
first = {
    "view": lambda: service.update_client_metrics("250101-120000", "acme", {"Leads Processed": 1}).metrics,
    "health": service.health,
    "package": lambda: flask_jobmetrics.ClientRun,
    "rejection": lambda: service.update_client_metrics("250101-120000", "acme", {"Leads Processed": -1}),
}[sys.argv[1]]
thread = threading.Thread(target=first, name="first")
thread.start()
assert inside.wait(10)
threading.Timer(0.3, go.set).start()  # lets the import finish while fork() waits for it
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a child that inherited the import half done hangs here: SIGALRM ends it
    run = service.update_client_metrics("250101-120000", "globex", {"Leads Processed": 2})
    ok = run.metrics["Leads Processed"] == 2 and service.health().store_available
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
thread.join(30)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize("first", ["view", "health", "package", "rejection"])
def test_a_child_forked_while_a_thread_loads_the_models_makes_its_own(first: str) -> None:
    """The models load on first use, on whichever thread makes one (the watchdog's, in a
    ``--preload`` master). A worker forked while that import is under way waits for it, then
    makes views and answers ``health()`` (it does not inherit the import half done)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FIRST_MODEL_PROBE, first], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "0", done.stderr[-2000:]
