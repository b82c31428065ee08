"""``FakeAirtable``: Airtable's REST API, emulated over real HTTP for tests.

Point ``pyairtable.Api(api_key, endpoint_url=fake.url)`` at a started emulator: the
records API, the metadata API, ``filterByFormula``, token scopes, the per-base rate limit,
Airtable's size limits and its error bodies behave as Airtable's do. Faults (errors,
delays, dropped connections) can be queued, and every request is logged.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any, NoReturn

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from ..airtable_limits import MAX_REQUEST_BODY_BYTES, REQUESTS_PER_SECOND
from . import _records as recops
from ._control import Faults, LoggedRequest, RateLimiter, RequestKind, max_in_any_second
from ._dispatch import ALL_SCOPES, Route, Store, classify, dispatch, required_scope
from ._errors import (
    AirtableError,
    auth_required,
    error_body,
    model_not_found,
    not_found_route,
    rate_limited,
    request_too_large,
)
from ._helpers import DataHelpers
from ._model import IdFactory

__all__ = ["FakeAirtable", "LoggedRequest"]

StartResponse = Callable[..., Any]


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the access log on stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class FakeAirtable(DataHelpers):
    """An Airtable API emulator served on ``127.0.0.1`` at an ephemeral port.

    Args:
        api_key: A bearer token accepted (more with ``add_token``); any other gets 401.
        scopes: The scopes of ``api_key`` (default: all of ``ALL_SCOPES``). A request its
            token has no scope for gets 403, as from Airtable.
        rate_limit: Requests per second per base (sliding one-second window); the
            request over it gets 429 and locks the base. ``None`` disables the limit.
        rate_limit_lock_seconds: How long a base answers 429 after going over the limit.
        max_request_bytes: A request body over this many bytes gets 413.
        clock: Monotonic seconds, for the rate limit and the request log.
        seed: Seed of the generated ids (``rec...``, ``fld...``), for repeatable runs.
    """

    #: Every scope the emulator checks: ``data.records:read``/``:write``, ``schema.bases:read``/``:write``.
    ALL_SCOPES = ALL_SCOPES

    def __init__(
        self,
        api_key: str = "keyTEST",
        *,
        scopes: Iterable[str] | None = None,
        rate_limit: float | None = REQUESTS_PER_SECOND,
        rate_limit_lock_seconds: float = 30.0,
        max_request_bytes: int = MAX_REQUEST_BODY_BYTES,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = 0,
    ) -> None:
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self._lock = threading.RLock()
        self._tokens: dict[str, frozenset[str]] = {}
        self.add_token(api_key, ALL_SCOPES if scopes is None else scopes)
        self._clock = clock
        self._store = Store(IdFactory(seed), lambda: datetime.now(timezone.utc))
        self._limiter = RateLimiter(rate_limit, rate_limit_lock_seconds)
        self._faults = Faults()
        self._log: list[LoggedRequest] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeAirtable:
        """Start serving in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("FakeAirtable is already started")
        self._stopping.clear()
        server = make_server("127.0.0.1", 0, self.wsgi_app, threaded=True, request_handler=_QuietHandler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="FakeAirtable", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; the data and the log are kept. Stopping twice is a no-op."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAirtable:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the ``endpoint_url`` for ``pyairtable.Api``."""
        if self._server is None:
            raise RuntimeError("FakeAirtable is not started")
        return f"http://127.0.0.1:{self._server.port}"

    def add_token(self, token: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        """Accept ``token`` too, with only ``scopes`` (replacing its scopes if it is known)."""
        granted = frozenset(scopes)
        unknown = sorted(granted - ALL_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {sorted(ALL_SCOPES)}")
        with self._lock:
            self._tokens[token] = granted

    # -- faults ---------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        body: dict[str, Any] | None = None,
        *,
        kind: RequestKind | None = None,
    ) -> None:
        """The next ``n`` requests get ``status`` (Airtable's body for it unless ``body``).

        ``kind`` (``"read"``, ``"write"`` or ``"meta"``) keeps the failures for requests of
        that kind; without it the next requests of any kind fail, metadata ones included.
        """
        with self._lock:
            self._faults.add_failure(n, status, body, kind)

    def delay_next(
        self, n: int, seconds: float, *, apply: bool = False, kind: RequestKind | None = None
    ) -> None:
        """Hold each of the next ``n`` requests (of ``kind``, if given) ``seconds`` (real time).

        With ``apply=False`` (the default) the request is then dropped without being
        applied, as if it never reached Airtable: the client sees its read timeout and
        nothing changed. With ``apply=True`` it is handled normally after the delay.
        """
        with self._lock:
            self._faults.add_delay(n, seconds, apply, kind)

    def drop_next(self, n: int = 1, *, kind: RequestKind | None = None) -> None:
        """Close the connection of each of the next ``n`` requests (of ``kind``, if given) unanswered."""
        with self._lock:
            self._faults.add_drop(n, kind)

    def fail_records(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        status: int = 422,
        error_type: str = "INVALID_VALUE_FOR_COLUMN",
        message: str = "Field cannot accept the provided value",
    ) -> None:
        """Fail every write request that holds a record whose ``fields`` match ``predicate``.

        The whole request fails and nothing of it is applied, as with Airtable. The rule
        stays until ``clear_faults``.
        """
        with self._lock:
            self._store.fail_rules.append(recops.FailRule(predicate, status, error_type, message))

    def clear_faults(self) -> None:
        """Forget every queued fault and ``fail_records`` rule."""
        with self._lock:
            self._faults.clear()
            self._store.fail_rules.clear()

    def reset_rate_limit(self) -> None:
        """Forget past arrivals and lift every rate-limit lock."""
        with self._lock:
            self._limiter.reset()

    def rate_limit_locked_until(self, base_id: str) -> float | None:
        """Clock time at which the base's current or last lock ends; None if never locked."""
        with self._lock:
            return self._limiter.locked_until(base_id)

    # -- request log ----------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._log)

    def request_count(
        self, method: str | None = None, kind: RequestKind | None = None, base_id: str | None = None
    ) -> int:
        """How many logged requests match every filter given."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (kind is None or r.kind == kind)
            and (base_id is None or r.base_id == base_id)
        )

    def max_requests_in_any_second(self, base_id: str | None = None) -> int:
        """The most requests (for ``base_id``, or all) that arrived within one second."""
        return max_in_any_second([r.time for r in self.requests if base_id is None or r.base_id == base_id])

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- HTTP -----------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application (also usable without the built-in server)."""
        request = Request(environ)
        raw = request.get_data()
        method = request.method.upper()
        path = urllib.parse.urlsplit(
            environ.get("RAW_URI") or environ.get("REQUEST_URI") or request.path
        ).path
        segments = [urllib.parse.unquote(s) for s in path.split("/")[2:]] if path.startswith("/v0/") else None
        route = classify(method, segments) if segments is not None else Route([], None, "meta")
        query = request.args.to_dict(flat=False)
        too_large = len(raw) > self.max_request_bytes
        body, body_error = (None, False) if too_large else _parse_json(raw)

        def log(status: int | None, moment: float) -> None:
            decoded = urllib.parse.unquote(path)
            self._log.append(
                LoggedRequest(method, decoded, query, body, status, moment, route.base_id, route.kind)
            )

        header = request.headers.get("Authorization", "")
        with self._lock:
            scopes = self._tokens.get(header[7:]) if header.startswith("Bearer ") else None
            authorized = scopes is not None
            arrival = self._clock()
            if too_large:  # refused before it reaches the API: not rate-limit counted, no fault
                refusal = request_too_large()
                log(refusal.status, arrival)
                return _json_response(refusal.body, refusal.status)(environ, start_response)
            fault = self._faults.take_transport(route.kind)
            # Airtable counts a request when it arrives, however long it then takes.
            allowed = not (
                authorized
                and segments is not None
                and route.base_id is not None
                and not (fault is not None and fault.drop)
                and not self._limiter.allow(route.base_id, arrival)
            )
            if fault is not None and fault.drop:
                log(None, arrival)
        if fault is not None and fault.drop:
            _drop_connection(environ)
        if fault is not None and (self._stopping.wait(fault.delay) or not fault.apply):
            with self._lock:
                log(None, arrival)
            _drop_connection(environ)
        with self._lock:
            status, payload = self._respond(scopes, allowed, method, route, segments, query, body, body_error)
            log(status, arrival)
        return _json_response(payload, status)(environ, start_response)

    def _respond(
        self,
        scopes: frozenset[str] | None,
        allowed: bool,
        method: str,
        route: Route,
        segments: list[str] | None,
        query: dict[str, list[str]],
        body: Any,
        body_error: bool,
    ) -> tuple[int, Any]:
        try:
            if scopes is None:
                raise auth_required()
            if segments is None:
                raise not_found_route()
            if not allowed:
                raise rate_limited()
            if (failure := self._faults.take_failure(route.kind)) is not None:
                raise failure
            needed = required_scope(method, route)
            if needed is not None and needed not in scopes:
                raise model_not_found()
            if body_error:
                raise AirtableError(
                    400, error_body("INVALID_REQUEST_UNKNOWN", "Could not parse request body")
                )
            return 200, dispatch(self._store, method, route, query, body)
        except AirtableError as exc:
            return exc.status, exc.body


def _json_response(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status, mimetype="application/json")


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    """(parsed body, whether it was not valid JSON)."""
    if not raw.strip():
        return None, False
    try:
        return json.loads(raw), False
    except ValueError:
        return None, True


def _drop_connection(environ: dict[str, Any]) -> NoReturn:
    """Close the client's socket; Werkzeug's server then sends nothing at all."""
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("connection dropped by FakeAirtable")
