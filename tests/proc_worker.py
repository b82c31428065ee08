"""A worker process for ``tests/test_processes.py``: a real app on a real SQLite file.

Run as ``python -m tests.proc_worker SCENARIO STORE_URL PARAMS_JSON`` with the repository
root on ``PYTHONPATH``. It builds a Flask app with :class:`JobMetrics` on ``STORE_URL``
(``PARAMS["config"]`` adds ``JOBMETRICS_*`` keys), runs ``SCENARIO`` and reports on stdout,
one line per step, so the test can synchronise on ``readline()`` instead of sleeping:

``hammer``            print ``ready``; wait for ``go`` on stdin; ``count`` updates of +1 on
                      (``run``, ``client``); ``flush()``; print the buffer stats as JSON; exit 0.
``exit``              ``count`` updates, no flush; print the stats; return normally (only the
                      atexit drain can save the updates).
``flush-then-block``  ``count`` updates; ``flush()``; then ``after`` more updates on the same
                      client and on client ``late``; print ``flushed`` and the stats; block
                      on stdin (the test SIGKILLs it).
``sigterm``           with ``chain``: first install a SIGTERM handler that ends the process
                      with ``os._exit(CHAINED_EXIT)`` (no atexit); then build the app;
                      ``count`` updates, no flush; print the stats; block on stdin (the test
                      sends SIGTERM).
``write-through``     one update of ``count``; print ``updated``; block on stdin (the test
                      SIGKILLs it). Meant for ``JOBMETRICS_FLUSH_INTERVAL = 0``.
``burst``             first install a SIGTERM handler that prints ``{"returned": N}`` (the
                      updates whose call returned) and raises ``SystemExit(0)``; then build
                      the app; update ``client`` (or each of ``clients`` in turn) without
                      end, printing ``busy`` after ``count`` updates (the test sends SIGTERM
                      in the middle of the burst).
``sigterm-after-sql`` ``count`` updates, no flush; print the stats; then ``flush()`` (``then``
                      ``"flush"``) or ``get_client_run()`` (``"read"``), with this thread's
                      store connection wrapped so that the process sends itself SIGTERM the
                      moment the statement ``sql`` (``"COMMIT"``, ``"BEGIN"``, exactly)
                      returns: a real signal, its timing forced (a SIGTERM arriving while
                      SQLite runs that statement is handled right after it).
``sigterm-at-eviction`` ``count`` updates of ``client``, no flush (meant for
                      ``BUFFER_MAXSIZE = 1``); print the stats; then one update of client
                      ``other``, which evicts ``client``'s entry, with cachetools' link
                      ``unlink`` wrapped so that the process sends itself SIGTERM as the
                      eviction unlinks the entry (where a real signal can be handled too).
``fork``              ``count`` updates in this process, no flush; fork ``children`` children
                      that each make ``count`` updates and exit normally without flush; wait
                      for them; print their exit statuses as JSON; exit normally.

Every update is ``{"Leads Processed": 1}`` unless the scenario says otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from types import FrameType
from typing import Any

from cachetools import TTLCache
from flask import Flask

from flask_jobmetrics import JobMetrics

__all__ = ["CHAINED_EXIT", "LEADS", "make_app"]

LEADS = "Leads Processed"
#: The exit status of the pre-existing SIGTERM handler of the ``sigterm`` scenario with ``chain``.
CHAINED_EXIT = 7


def make_app(store_url: str, **config: Any) -> tuple[Flask, JobMetrics]:
    """A Flask app with JobMetrics on ``store_url``; ``config`` gives extra ``JOBMETRICS_*`` keys."""
    app = Flask("proc_worker")
    app.config.update(TESTING=True, JOBMETRICS_STORE_URL=store_url)
    app.config.update({f"JOBMETRICS_{key}": value for key, value in config.items()})
    return app, JobMetrics(app)


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _stats(ext: JobMetrics) -> str:
    return json.dumps(asdict(ext.stats()))


def _update(ext: JobMetrics, run: str, client: str, count: int, amount: int = 1) -> None:
    for _ in range(count):
        ext.update_client_metrics(run, client, {LEADS: amount})


def _block() -> None:
    """Wait until killed (or until stdin is closed, which is a test failure: exit 1)."""
    sys.stdin.readline()
    sys.exit(1)


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    os._exit(CHAINED_EXIT)


def _burst(url: str, run: str, clients: list[str], count: int, config: dict[str, Any]) -> None:
    returned = 0

    def report(signum: int, frame: FrameType | None) -> None:
        _say(json.dumps({"returned": returned}))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, report)  # before init_app: the handler it chains to
    _, ext = make_app(url, **config)
    while True:
        ext.update_client_metrics(run, clients[returned % len(clients)], {LEADS: 1})
        returned += 1
        if returned == count:
            _say("busy")


def _fork(ext: JobMetrics, run: str, client: str, count: int, children: int) -> None:
    _update(ext, run, client, count)  # buffered in the parent when it forks
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                _update(ext, run, client, count)
            except BaseException:
                os._exit(3)
            return  # the child leaves main() and exits normally: its atexit drain runs
        pids.append(pid)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    _say(json.dumps(statuses))


class _SignalAfter:
    """A proxy of an ``sqlite3.Connection``: SIGTERM to this process after statement ``sql``."""

    def __init__(self, conn: Any, sql: str) -> None:
        self._conn, self._sql = conn, sql

    def execute(self, sql: str, *args: Any) -> Any:
        result = self._conn.execute(sql, *args)
        if sql.strip().upper() == self._sql:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as soon as this returns
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _sigterm_after_sql(ext: JobMetrics, run: str, client: str, count: int, sql: str, then: str) -> None:
    _update(ext, run, client, count)
    _say(_stats(ext))
    store: Any = ext.state().service.store
    connect = store._conn
    store._conn = lambda: _SignalAfter(connect(), sql.upper())
    if then == "flush":
        ext.flush()
    else:
        ext.get_client_run(run, client)
    sys.exit(1)  # not reached: the SIGTERM handler ends the process


def _sigterm_at_eviction(ext: JobMetrics, run: str, client: str, count: int) -> None:
    _update(ext, run, client, count)
    _say(_stats(ext))
    link: Any = TTLCache._Link  # type: ignore[attr-defined]
    unlink = link.unlink

    def signal_then_unlink(self: Any) -> None:
        link.unlink = unlink
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as soon as this returns
        unlink(self)

    link.unlink = signal_then_unlink
    ext.update_client_metrics(run, "other", {LEADS: 1})
    sys.exit(1)  # not reached: the SIGTERM handler ends the process


def main(argv: list[str]) -> None:
    scenario, url, raw = argv
    params: dict[str, Any] = json.loads(raw)
    run, client, count = params.get("run", ""), params.get("client", ""), int(params.get("count", 0))
    if scenario == "sigterm" and params.get("chain"):
        signal.signal(signal.SIGTERM, _exit_at_once)  # before init_app: the handler it chains to
    if scenario == "burst":
        _burst(url, run, params.get("clients", [client]), count, params.get("config", {}))
        return
    _, ext = make_app(url, **params.get("config", {}))
    if scenario == "hammer":
        _say("ready")
        if sys.stdin.readline().strip() != "go":
            sys.exit(2)
        _update(ext, run, client, count)
        ext.flush()
        _say(_stats(ext))
    elif scenario == "exit":
        _update(ext, run, client, count)
        _say(_stats(ext))
    elif scenario == "flush-then-block":
        _update(ext, run, client, count)
        ext.flush()
        after = int(params["after"])
        _update(ext, run, client, after)
        _update(ext, run, "late", after)
        _say("flushed")
        _say(_stats(ext))
        _block()
    elif scenario == "sigterm":
        _update(ext, run, client, count)
        _say(_stats(ext))
        _block()
    elif scenario == "sigterm-after-sql":
        _sigterm_after_sql(ext, run, client, count, params["sql"], params["then"])
    elif scenario == "sigterm-at-eviction":
        _sigterm_at_eviction(ext, run, client, count)
    elif scenario == "fork":
        _fork(ext, run, client, count, int(params["children"]))
    elif scenario == "write-through":
        ext.update_client_metrics(run, client, {LEADS: count})
        _say("updated")
        _block()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
