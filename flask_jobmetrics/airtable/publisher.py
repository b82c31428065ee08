"""The Airtable publisher: drains the store's outbox in the background.

One sender at a time per base, across every process using the store (a lease in the
store). Rows are coalesced by the outbox itself (one entry per row); records are sent
with ``batch_upsert``, at most 10 a request, paced by a limiter shared through the store.
429 pauses the base; 5xx, timeouts and dropped connections back off with jitter; a 422
is narrowed down by splitting the batch, and only the offending rows go to the
dead-letter list. The full merged row is sent every time, so a retry never double-counts.
"""

from __future__ import annotations

import math
import os
import random
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests

from ..config import Settings
from ..log import StructuredLogger
from ..schema import MetricRegistry
from ..stores.base import OutboxItem, Store
from .fields import CLIENT_KEY_FIELDS, JOB_KEY_FIELDS, load_record, row_formula
from .schema import AirtableSchemaError, make_api, read_tables
from .seed import seed_client, seed_job

__all__ = ["PublishResult", "Publisher", "wait_for_slot"]

Published = Callable[[str, list[dict[str, Any]]], None]
Failed = Callable[[str, str, list[dict[str, Any]]], None]

BATCH = 10
LEASE_TTL = 30.0
LINGER = 0.5  # a partial batch waits until no row became due for this long...
MAX_LINGER = 5.0  # ...but never longer than this
FAR_FUTURE = 10 * 365 * 24 * 3600.0
BACKOFF_BASE, BACKOFF_CAP = 0.5, 60.0
BLOCKED_BACKOFF = 60.0
#: Requests are paced 5 % further apart than ``1 / rate``. Slots are evenly spaced (no burst)
#: and taken by one sender at a time (the lease holder), so six requests reach Airtable within
#: one second only if a request's way from its slot to Airtable is 50 ms longer than that of
#: the fifth after it (5 x 0.21 s = 1.05 s); see docs/airtable.md for why that is enough.
PACING_MARGIN = 1.05
_UNKNOWN_FIELD = re.compile(r'Unknown field name: "(?P<name>.+)"')


@dataclass(frozen=True)
class PublishResult:
    """What a drain achieved: rows Airtable accepted, and rows still waiting or dead."""

    published: int
    pending: int
    dead: int


def _airtable_error(response: requests.Response | None) -> tuple[str, str]:
    if response is None:
        return "NO_RESPONSE", "no response"
    try:
        body = response.json()
    except ValueError:
        return f"HTTP_{response.status_code}", response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("type", f"HTTP_{response.status_code}")), str(error.get("message", ""))
    if isinstance(error, str):
        return error, str(body.get("message", ""))
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("error", "")), str(errors[0].get("message", ""))
    return f"HTTP_{response.status_code}", str(body)[:200]


class Publisher:
    """Sends the store's outbox to one Airtable base."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_published: Published | None = None,
        on_failed: Failed | None = None,
        logger: StructuredLogger | None = None,
        registry: MetricRegistry | None = None,
    ) -> None:
        if not (settings.airtable_api_key and settings.airtable_base_id):
            raise ValueError("the Airtable publisher needs JOBMETRICS_AIRTABLE_API_KEY and _BASE_ID")
        self.base_id: str = settings.airtable_base_id
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.on_published = on_published
        self.on_failed = on_failed
        self.log = logger or StructuredLogger("SYSTEM", process="airtable")
        api = make_api(settings)
        base = self.base_id
        self.api = api
        self.table_names = {"job": settings.airtable_job_table, "client": settings.airtable_client_table}
        self.tables = {kind: api.table(base, name) for kind, name in self.table_names.items()}
        self.keys = {"job": JOB_KEY_FIELDS, "client": CLIENT_KEY_FIELDS}
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = f"airtable-publisher:{base}"
        self.fields: dict[str, set[str] | None] = {"job": None, "client": None}
        self.missing: dict[str, set[str]] = {"job": set(), "client": set()}
        self.blocked: str | None = None
        self.registry = registry if registry is not None else MetricRegistry()
        #: A memory store starts empty after a restart: read each row once before its first publish.
        self.seeding = not store.durable
        self._seeded: set[tuple[str, str, str]] = set()
        self._schema_read = False
        self._paused_until = 0.0
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self._first_due: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()  # one pass at a time (the sender thread and flush())
        self._start_lock = threading.Lock()  # one sender thread per process
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _PUBLISHERS.add(self)

    # -- background thread ---------------------------------------------------------

    def wake(self) -> None:
        """Start the sender thread in this process if needed, and let it look now."""
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, name="jobmetrics-airtable", daemon=True)
                self._thread.start()
        self._wake.set()

    def _after_fork_in_child(self) -> None:
        # Nothing of the parent's thread or locks is usable in a forked child: start afresh.
        self._lock, self._start_lock = threading.Lock(), threading.Lock()
        self._stop, self._wake, self._thread = threading.Event(), threading.Event(), None
        self._pid = os.getpid()

    def stop(self) -> None:
        """Stop the sender thread and hand back the lease, so another sender need not wait."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(timeout=5)
        try:  # renewing our own lease with no time left releases it; another holder's is untouched
            self.store.acquire_lease(self.lease, self.owner, 0.0, self.clock())
        except Exception as exc:
            self.log.info("could not release the Airtable sender lease (it expires by itself): %r", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=LINGER / 2)
            self._wake.clear()
            try:
                self.run_once()
            except Exception as exc:  # the sender must survive anything; the outbox keeps the rows
                self.log.error("Airtable publishing pass failed (rows stay in the outbox): %r", exc)

    # -- one pass -------------------------------------------------------------------

    def run_once(self, *, force: bool = False) -> int:
        """Send what is due; with ``force`` also running rows held back for progress and
        rows that lingered less than a batch. Returns the rows Airtable accepted."""
        with self._lock:
            now = self.clock()
            # Renewed while paused too: another process must not send into Airtable's 429 lock.
            if (
                not self.store.acquire_lease(self.lease, self.owner, LEASE_TTL, now)
                or now < self._paused_until
            ):
                return 0
            self._read_schema()
            due = self.store.outbox_due(math.inf if force else now, 1000)
            ready: dict[str, list[tuple[OutboxItem, dict[str, Any]]]] = {"client": [], "job": []}
            for item in due:
                if force and item.due_at > now and item.attempts > 0:
                    continue  # backing off after an error: not even flush hammers Airtable
                picked = self._pick(item, now, force)
                if picked is not None:
                    ready[item.kind].append(picked)
            sent = 0
            for kind, pairs in ready.items():
                if not pairs:
                    continue
                seen = [self._first_due.setdefault(_key(i), now) for i, _ in pairs]
                quiet, oldest = now - max(seen), now - min(seen)
                if not force and quiet < LINGER and oldest < MAX_LINGER:
                    pairs = pairs[: len(pairs) - len(pairs) % BATCH]  # full batches now, the rest lingers
                for start in range(0, len(pairs), BATCH):
                    if self.clock() < self._paused_until or not self._still_leader():
                        return sent  # a 429, or another sender took over: the rest waits in the outbox
                    sent += self._send(kind, pairs[start : start + BATCH])
            return sent

    def _still_leader(self) -> bool:
        """Renew the lease before a request; False when another sender holds it now (a pass
        that outlasted the lease)."""
        return self.store.acquire_lease(self.lease, self.owner, LEASE_TTL, self.clock())

    def _pick(self, item: OutboxItem, now: float, force: bool) -> tuple[OutboxItem, dict[str, Any]] | None:
        """The entry (at the version of the row as read) and its record, or None: not now."""
        if self.seeding and _key(item) not in self._seeded and not self._seed(item):
            return None  # unseeded, sending would later add Airtable's (our own) counts again
        loaded = load_record(self.store, item)
        if loaded is None:
            self.store.outbox_done([item])
            return None
        record, completed, version = loaded
        if completed:  # progress timing no longer matters for this row
            self._last_sent.pop(_key(item), None)
        if not completed and not force:
            interval = self.settings.progress_interval
            if interval == 0:  # running rows wait for their completion (which makes them due again)
                self.store.outbox_retry(item, due_at=now + FAR_FUTURE, error=None)
                return None
            # Progress goes out one interval after the row was first seen running, then every
            # interval: a job shorter than the interval costs only its completion's requests.
            since = self._last_sent.get(_key(item)) or self._first_due.setdefault(_key(item), now)
            if now - since < interval:
                self.store.outbox_retry(item, due_at=since + interval, error=None)
                return None
        # Acknowledge what is sent: the row as read, not the older version the entry was due at.
        return replace(item, version=version), record

    def _send(self, kind: str, pairs: Sequence[tuple[OutboxItem, dict[str, Any]]]) -> int:
        name = self.table_names[kind]
        allowed = self.fields[kind]
        records = [self._writable(kind, record, allowed) for _, record in pairs]
        items = [item for item, _ in pairs]
        self._wait_for_slot()
        try:
            self.tables[kind].batch_upsert([{"fields": r} for r in records], key_fields=self.keys[kind])
        except requests.HTTPError as exc:
            return self._http_error(kind, pairs, exc)
        except (requests.Timeout, requests.ConnectionError) as exc:
            self._back_off(items, f"{type(exc).__name__}: {exc}")
            return 0
        now = self.clock()
        self.store.outbox_done(items)
        for item in items:
            self._last_sent[_key(item)] = now
            self._first_due.pop(_key(item), None)
        self.blocked = None
        if self.on_published is not None:
            self.on_published(name, records)
        return len(items)

    def _http_error(
        self, kind: str, pairs: Sequence[tuple[OutboxItem, dict[str, Any]]], exc: requests.HTTPError
    ) -> int:
        status = exc.response.status_code if exc.response is not None else 0
        error_type, message = _airtable_error(exc.response)
        items = [item for item, _ in pairs]
        name = self.table_names[kind]
        if status == 422 and error_type == "UNKNOWN_FIELD_NAME":
            match = _UNKNOWN_FIELD.search(message)
            if match is not None and match["name"] not in self.missing[kind]:
                self._field_missing(kind, match["name"])
                return self._send(kind, pairs)
        if status == 422 and len(pairs) > 1:
            middle = len(pairs) // 2
            return self._send(kind, pairs[:middle]) + self._send(kind, pairs[middle:])
        if status == 422:
            ((item, record),) = pairs
            error = f"{error_type}: {message}"
            self.store.outbox_retry(item, due_at=self.clock(), error=error, dead=True)
            self.log.error("Airtable refused a %s row %s (dead-lettered): %s", name, _key(item)[1:], error)
            if self.on_failed is not None:
                self.on_failed(name, error, [record])
            return 0
        if status == 429:
            self._paused_until = self.clock() + self.settings.airtable_rate_limit_pause
            for item in items:
                self.store.outbox_retry(item, due_at=self._paused_until, error=None)
            self.log.warning(
                "Airtable rate limit reached: pausing the base for %ss",
                self.settings.airtable_rate_limit_pause,
            )
            return 0
        error = f"HTTP {status} {error_type}: {message}"
        if status in (401, 403, 404):
            self.blocked = error
            self.log.error("Airtable refuses %s (check the API key, base ID and table name): %s", name, error)
            self._back_off(items, error, fixed=BLOCKED_BACKOFF)
        else:
            self._back_off(items, error)
        if self.on_failed is not None:
            self.on_failed(name, error, [record for _, record in pairs])
        return 0

    def _back_off(self, items: Sequence[OutboxItem], error: str, fixed: float | None = None) -> None:
        now = self.clock()
        for item in items:
            delay = fixed if fixed is not None else min(BACKOFF_CAP, BACKOFF_BASE * 2**item.attempts)
            self.store.outbox_retry(item, due_at=now + delay * random.uniform(0.5, 1.0), error=error)

    def _wait_for_slot(self) -> None:
        wait_for_slot(self.store, self.settings, clock=self.clock, sleep=self.sleep)

    def _seed(self, item: OutboxItem) -> bool:
        """Merge Airtable's copy of the row into the (memory) store, once per row and process;
        False when Airtable could not be read (try again on the next pass)."""
        self._wait_for_slot()
        formula = row_formula(item.kind, item.run_id, item.client_id)
        try:
            found = self.tables[item.kind].all(formula=formula, max_records=1)
        except (requests.RequestException, ValueError) as exc:
            self.log.warning(
                "could not read %s %s from Airtable before publishing: %s", item.kind, _key(item)[1:], exc
            )
            return False
        self._seeded.add(_key(item))
        if found:
            remote = found[0]["fields"]
            if item.kind == "client":
                seed_client(self.store, self.registry, item.run_id, item.client_id, remote)
            else:
                seed_job(self.store, self.registry, item.run_id, remote)
        return True

    # -- schema ---------------------------------------------------------------------

    def _read_schema(self) -> None:
        """Read the tables' fields once (when the metadata API answers)."""
        if self._schema_read:
            return
        self._schema_read = True
        try:
            self._wait_for_slot()  # every request, this one too, counts against the base's limit
            tables = {name: set(fields) for name, fields in read_tables(self.api, self.base_id).items()}
        except AirtableSchemaError as exc:  # a token without schema scope: learn from 422s instead
            self.log.info("Airtable schema not readable (%s); unknown fields are learned from errors", exc)
            return
        for kind, name in self.table_names.items():
            if name not in tables:
                self.log.warning("Airtable base has no table %r: run `flask jobmetrics airtable init`", name)
                continue
            self.fields[kind] = tables[name]

    def _field_missing(self, kind: str, field: str) -> None:
        self.missing[kind].add(field)
        self.log.warning(
            "Airtable table %r has no field %r: it is left out of writes"
            " (`flask jobmetrics airtable init` adds it)",
            self.table_names[kind],
            field,
        )

    def _writable(self, kind: str, record: Mapping[str, Any], allowed: set[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in record.items():
            if field in self.missing[kind]:
                continue
            if allowed is not None and field not in allowed:
                self._field_missing(kind, field)
                continue
            out[field] = value
        return out

    # -- flush ----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> PublishResult:
        """Send everything now; wait until the outbox is empty, blocked, or ``timeout`` passed."""
        deadline = None if timeout is None else self.clock() + timeout
        published = 0
        while True:
            published += self.run_once(force=True)
            pending, dead = self.store.outbox_counts()
            if pending == 0 or (self.blocked is not None and timeout is None):
                return PublishResult(published, pending, dead)
            if deadline is not None and self.clock() >= deadline:
                return PublishResult(published, pending, dead)
            self.sleep(0.05)


def wait_for_slot(
    store: Store,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait for the next request slot of the base, shared by every process using ``store``."""
    rate = settings.airtable_rate_limit / PACING_MARGIN
    while (wait := store.take_token(f"airtable-rate:{settings.airtable_base_id}", rate, clock())) > 0:
        sleep(wait)


_PUBLISHERS: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for publisher in list(_PUBLISHERS):
        publisher._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _key(item: OutboxItem) -> tuple[str, str, str]:
    return (item.kind, item.run_id, item.client_id)
