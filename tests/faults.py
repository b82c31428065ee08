"""Real faults for the tests: a throw-away ``redis-server`` and a TCP proxy that breaks one request.

``FaultProxy`` forwards bytes between its clients and an upstream server. Armed, it breaks the
next requests that contain ``match`` (by default the merge script's ``EVALSHA``; a
transaction's commit is ``(b"MULTI", b"EVALSHA")``) in one of three ways:

* ``drop_reply``: the request reaches the server (which runs it); its reply is swallowed and
  the client's connection reset;
* ``delay_reply``: the reply is held until the client gives up (its socket timeout) and
  closes the connection;
* ``cut_request``: half of the request is sent, then both connections are reset (the server
  never runs it);
* ``call_first``: ``before()`` runs, then the request goes on unharmed (e.g. to flush the
  server's scripts between redis-py loading them and the request that uses them).
"""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
import redis

from .gunicorn_support import free_port

__all__ = ["FaultProxy", "Mode", "RedisServer"]

Mode = Literal["drop_reply", "delay_reply", "cut_request", "call_first"]


class RedisServer:
    """A ``redis-server`` of its own on a free port and directory (AOF ``appendfsync always``
    with ``aof=True``); ``stop()`` sends SIGTERM, ``start()`` again reuses port and directory."""

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not on PATH")
        self.workdir, self.aof, self.port = workdir, aof, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING (10 s deadline)."""
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *aof, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10.0
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:  # BusyLoadingError included: still reading its AOF
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.proc.kill()
                        raise
                    time.sleep(0.02)  # waiting for the server to accept connections
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: the AOF is flushed) and wait for the process to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (no orderly FIN): the peer sees ``connection reset``."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port``; ``arm()`` breaks requests."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode: Mode | None = None
        self._match: tuple[bytes, ...] = ()
        self._left = 0
        self._after_reply: Callable[[], None] | None = None
        self._before: Callable[[], None] | None = None
        #: Requests broken so far.
        self.broken = 0
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def arm(
        self,
        mode: Mode,
        *,
        times: int = 1,
        match: bytes | tuple[bytes, ...] = b"EVALSHA",
        after_reply: Callable[[], None] | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Break the next ``times`` requests containing ``match`` (every part of a tuple);
        ``after_reply`` runs once a swallowed reply arrived (e.g. to stop the server right
        after it ran the request)."""
        parts = match if isinstance(match, tuple) else (match,)
        with self._lock:
            self._mode, self._left, self._match, self._after_reply = mode, times, parts, after_reply
            self._before = before

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _take(self, data: bytes) -> Mode | None:
        with self._lock:
            if self._mode is None or self._left <= 0 or not all(part in data for part in self._match):
                return None
            self._left -= 1
            self.broken += 1
            return self._mode

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
        except OSError:
            _reset(client)  # the server is down: so is the proxy's connection
            return
        pending: Mode | None = None
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 30)
                if not readable:
                    return
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    fault = self._take(data)
                    if fault == "call_first":
                        if self._before is not None:
                            self._before()
                        fault = None
                    if fault == "cut_request":
                        upstream.sendall(data[: len(data) // 2])
                        return
                    pending = fault or pending
                    upstream.sendall(data)
                if upstream in readable:
                    reply = upstream.recv(65536)
                    if not reply:
                        return
                    if pending is None:
                        client.sendall(reply)
                        continue
                    if self._after_reply is not None:
                        self._after_reply()
                    if pending == "delay_reply":  # until the client gives up and closes
                        while client.recv(65536):
                            pass
                    return
        except OSError:
            return
        finally:
            _reset(upstream)
            _reset(client)
