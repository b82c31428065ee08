"""Start, watch and stop ``gunicorn -w N 'example_app:create_app()'`` for end-to-end tests.

The server runs from the repository root with the example app's configuration in its
environment (``JOBMETRICS_*`` variables; JSON for numbers and mappings, see
``example_app/config.py``). Its stderr (gunicorn's log and the app's) goes to a file, so a
failing test can show it. Start-up is awaited by polling ``GET /`` with a deadline; workers
are found through ``/proc/<master>/task/<master>/children``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import gunicorn
import requests

__all__ = ["ROOT", "GunicornServer", "free_port", "gunicorn_server"]

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")  # the gunicorn of the venv running the tests
#: gunicorn >= 25.1 opens a control socket at one fixed path per user: concurrent test servers
#: would take it from each other, so the tests' servers do without.
NO_CONTROL_SOCKET = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []
START_TIMEOUT = 30.0
STOP_TIMEOUT = 40.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GunicornServer:
    """One gunicorn master (and its workers) serving the example app on a loopback port."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, workers: int = 4) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        options = {
            "--workers": str(workers),
            "--bind": f"127.0.0.1:{self.port}",
            "--graceful-timeout": "30",
            "--timeout": "120",
        }
        command = [str(GUNICORN), *(part for pair in options.items() for part in pair), *NO_CONTROL_SOCKET]
        self.proc = subprocess.Popen(
            [*command, "example_app:create_app()"],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.returncode: int | None = None

    # -- start-up
    def wait_until_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll ``GET /`` until it answers 200 and all workers run; raise with the log if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            try:
                answered = requests.get(self.url + "/", timeout=2).status_code == 200
            except requests.RequestException:
                answered = False
            if answered and len(self.worker_pids()) == self.workers:
                return
            time.sleep(0.05)  # polling for start-up, with a deadline
        raise RuntimeError(f"gunicorn did not answer within {timeout} s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """The PIDs of the master's children (its workers) right now."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    # -- shutdown
    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the master (a graceful stop: it SIGTERMs its workers) and wait for it.

        Returns gunicorn's exit status; SIGKILLs it and raises when it does not stop in time.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RuntimeError(f"gunicorn did not stop within {timeout} s:\n{self.log()}") from None
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the master and its workers (cleanup after a failure)."""
        pids = self.worker_pids()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()

    def log(self) -> str:
        """What gunicorn and the app wrote to stderr so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


@contextmanager
def gunicorn_server(env: Mapping[str, str], log_path: Path, *, workers: int = 4) -> Iterator[GunicornServer]:
    """A started server; killed on the way out unless the test already stopped it."""
    server = GunicornServer(env, log_path, workers=workers)
    try:
        server.wait_until_ready()
        yield server
    finally:
        if server.proc.poll() is None:
            server.kill()
