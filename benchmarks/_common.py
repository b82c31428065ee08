"""Helpers shared by the benchmarks: environment header, tables, free ports, gunicorn, Redis.

Not a benchmark itself; the scripts import it as ``_common`` (they run from any directory:
each puts ``benchmarks/`` and the repository root on ``sys.path`` first).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
#: The multiplication sign (U+00D7), for ratios and configurations: "1.5<TIMES>", "sqlite<TIMES>4".
TIMES = "\u00d7"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

__all__ = [
    "REDIS_URL",
    "ROOT",
    "TIMES",
    "VENV_BIN",
    "Gunicorn",
    "cpu_seconds",
    "delete_redis_prefix",
    "free_port",
    "header",
    "percentile",
    "table",
]


def header(title: str, argv: Sequence[str] | None = None) -> str:
    """The title, the command that reproduces this run, and the environment."""
    args = list(sys.argv[1:] if argv is None else argv)
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    command = " ".join([".venv/bin/python", script, *(shlex.quote(a) for a in args)])
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"== {title} ==",
        f"reproduce: {command}   (from the repository root)",
        f"date: {now}   python: {platform.python_version()} ({platform.python_implementation()})"
        f"   nproc: {os.cpu_count()}   machine: {platform.machine()} {platform.system()}"
        f" {platform.release()}",
    ]
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain-text table; ``align`` is one letter per column, ``l`` or ``r`` (default: l then r)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: list[str]) -> str:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation (``statistics.quantiles``)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix``; returns how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


_HELP: list[str] = []


def _has_control_socket() -> bool:
    """gunicorn >= 24 opens a control socket at a fixed path; several servers would share it."""
    if not _HELP:
        done = subprocess.run([str(VENV_BIN / "gunicorn"), "--help"], capture_output=True, text=True)
        _HELP.append(done.stdout)
    return "--no-control-socket" in _HELP[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gunicorn:
    """``gunicorn -w N -b 127.0.0.1:PORT APP`` as a subprocess: started, polled until it
    answers ``GET /``, stopped with SIGTERM (its output goes to ``log_path``)."""

    def __init__(self, app: str, workers: int, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            str(VENV_BIN / "gunicorn"),
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "10",
            *(["--no-control-socket"] if _has_control_socket() else []),
            app,
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not answer within {timeout}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the master), from ``/proc``."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def workers_cpu(self) -> float:
        """CPU seconds used so far by the master and its current workers."""
        return cpu_seconds(self.proc.pid) + sum(cpu_seconds(p) for p in self.worker_pids())

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    @contextlib.contextmanager
    def running(self) -> Iterator[Gunicorn]:
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()
