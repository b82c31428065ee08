"""The Airtable publisher: drains the store's outbox in the background.

One sender at a time per base, across every process using the store (a lease in the
store). Rows are coalesced by the outbox itself (one entry per row); records are sent
with ``batch_upsert``, at most 10 a request, paced by a limiter shared through the store.
429 pauses the base; 5xx, timeouts and dropped connections back off with jitter; a 422
is narrowed down by splitting the batch, and only the offending rows go to the
dead-letter list. Rows of a failed request back off together (one due time for the
batch), so they are retried together, 10 a request. The full merged row is sent every
time, so a retry never double-counts.

``flush()`` in a process that does not hold the lease asks the holder, through the store
(a short-lived ``airtable-flush`` lease the holder looks for on every pass), to publish
everything pending now, and returns as soon as the outbox is empty.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests

from ..airtable_limits import MAX_RECORDS_PER_REQUEST
from ..config import Settings
from ..exceptions import StoreError
from ..forksafe import at_fork_reset
from ..leased import Lease, LeasedLoop
from ..log import OutageLog, StructuredLogger
from ..schema import MetricRegistry
from ..stores.base import OutboxItem, Store
from .fields import load_record
from .names import Kind, table_field_names
from .schema import AirtableSchemaError, make_api, read_tables
from .seed import ReadBack
from .targets import MAX_REQUEST_BYTES, Target, request_bytes

__all__ = ["PublishResult", "Publisher", "sender_record", "wait_for_slot"]

Published = Callable[[str, list[dict[str, Any]]], None]
Failed = Callable[[str, str, list[dict[str, Any]]], None]
#: ``on_dead(table, error, run_id, client_id)``: Airtable refused a row for good (dead-lettered).
Dead = Callable[[str, str, str, "str | None"], None]

BATCH = MAX_RECORDS_PER_REQUEST
LEASE_TTL = 30.0
LINGER = 0.5  # a partial batch waits until no row became due for this long...
MAX_LINGER = 5.0  # ...but never longer than this
FAR_FUTURE = 10 * 365 * 24 * 3600.0
BACKOFF_BASE, BACKOFF_CAP = 0.5, 60.0
BLOCKED_BACKOFF = 60.0
#: The shared pacing spaces requests 2 % further apart than ``1 / rate`` (evenly, no burst),
#: for requests of different senders; a sender's own requests are also kept in step with
#: their replies (``wait_for_slot``), so no delay on the way can put more than the limit
#: into one second. docs/airtable.md says why this is safe; benchmarks/bench_pacing.py
#: measures it against an emulator enforcing the limit on a sliding second.
PACING_MARGIN = 1.02
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
        on_dead: Dead | None = None,
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
        self._recent = sender_record(settings)
        self.on_published = on_published
        self.on_failed = on_failed
        self.on_dead = on_dead
        self.log = logger or StructuredLogger("SYSTEM", process="airtable")
        #: Logs the passes that fail because the store is down: the first, one line a minute, the end.
        self._outage = OutageLog(self.log, clock=lambda: self.clock())
        self.registry = registry if registry is not None else MetricRegistry()
        api = make_api(settings)
        base = self.base_id
        self.api = api
        names = table_field_names(settings, self.registry.specs)
        tables: dict[Kind, str] = {
            "job": settings.airtable_job_table,
            "client": settings.airtable_client_table,
        }
        self.targets: dict[Kind, Target] = {
            kind: Target(kind, name, api.table(base, name), names[kind]) for kind, name in tables.items()
        }

        def lease(name: str, what: str) -> Lease:
            return Lease(store, name, ttl=LEASE_TTL, clock=lambda: self.clock(), logger=self.log, what=what)

        #: One sender at a time per base: the holder of this lease sends.
        self.lease = lease(f"airtable-publisher:{base}", "the Airtable sender lease")
        #: Held by a process whose flush() waits on the lease holder: "publish everything now".
        self.flush_lease = lease(f"airtable-flush:{base}", "the flush request")
        self.blocked: str | None = None
        #: A memory store starts empty after a restart: read each run's rows once before publishing.
        self.read_back = (
            ReadBack(store, self.registry, self.targets, pace=self._wait_for_slot, log=self.log)
            if not store.durable
            else None
        )
        self._schema_read = False
        self._leading = False
        self._paused_until = 0.0
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self._first_due: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()  # one pass at a time (the sender thread and flush())
        #: The sender thread: a pass every LINGER / 2 seconds, or as soon as it is woken.
        self._loop = LeasedLoop(
            self.background_pass,
            name="jobmetrics-airtable",
            wait=LINGER / 2,
            logger=self.log,
            lease=self.lease,
        )
        _PUBLISHERS.add(self)
        at_fork_reset(self)

    # -- background thread ---------------------------------------------------------

    def wake(self) -> None:
        """Start the sender thread in this process if needed, and let it look now."""
        self._loop.start()
        self._loop.wake()

    def _after_fork_in_child(self) -> None:
        # The parent's pass may hold the lock in a forked child (the loop and the leases
        # start afresh by themselves).
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Stop the sender thread and hand back the lease, so another sender need not wait."""
        self._loop.stop()

    def retire(self) -> None:
        """Stop for good, as when the Airtable it sends to is gone (a test's emulator): the
        sender thread ends and later passes send nothing; the rows stay in the outbox."""
        self._paused_until = math.inf
        self.stop()

    def background_pass(self) -> None:
        """One pass of the sender thread: ``run_once``, its failures logged, never raised (the
        outbox keeps the rows). While the store is down: the first failure, then one line a
        minute, and one when it is back."""
        try:
            self.run_once()
        except StoreError as exc:
            self._outage.failed("Airtable publishing pass failed (rows stay in the outbox): %r", exc)
        except Exception as exc:  # the sender must survive anything
            self.log.error("Airtable publishing pass failed (rows stay in the outbox): %r", exc)
        else:
            self._outage.recovered()

    # -- one pass -------------------------------------------------------------------

    def run_once(self, *, force: bool = False) -> int:
        """Send what is due; with ``force`` also running rows held back for progress and
        rows that lingered less than a batch. Returns the rows Airtable accepted."""
        with self._lock:
            now = self.clock()
            # Renewed while paused too: another process must not send into Airtable's 429 lock.
            self._leading = self.lease.take(now)
            if not self._leading or now < self._paused_until:
                return 0
            # A flush waiting in another process: publish as it would here. (Taking the lease
            # for no time succeeds, and changes nothing, only when no one holds it.)
            force = force or not self.flush_lease.take(now, ttl=0.0)
            self._read_schema()
            due = self.store.outbox_due(math.inf if force else now, 1000)
            ready: dict[Kind, list[tuple[OutboxItem, dict[str, Any]]]] = {"client": [], "job": []}
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
        return self.lease.take()

    def _pick(self, item: OutboxItem, now: float, force: bool) -> tuple[OutboxItem, dict[str, Any]] | None:
        """The entry (at the version of the row as read) and its record, or None: not now."""
        if self.read_back is not None and not self.read_back.ready(item):
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

    def _send(self, kind: Kind, pairs: Sequence[tuple[OutboxItem, dict[str, Any]]]) -> int:
        target = self.targets[kind]
        records = [self._writable(target, record) for _, record in pairs]
        if len(pairs) > 1 and request_bytes(records) > MAX_REQUEST_BYTES:
            middle = len(pairs) // 2  # too large for one request body: two smaller ones
            return self._send(kind, pairs[:middle]) + self._send(kind, pairs[middle:])
        items = [item for item, _ in pairs]
        self._wait_for_slot()
        try:
            target.table.batch_upsert([{"fields": r} for r in records], key_fields=target.keys)
        except requests.HTTPError as exc:
            return self._http_error(target, pairs, records, exc)
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
            self.on_published(target.name, records)
        return len(items)

    def _http_error(
        self,
        target: Target,
        pairs: Sequence[tuple[OutboxItem, dict[str, Any]]],
        records: Sequence[dict[str, Any]],
        exc: requests.HTTPError,
    ) -> int:
        status = exc.response.status_code if exc.response is not None else 0
        error_type, message = _airtable_error(exc.response)
        items = [item for item, _ in pairs]
        kind, name = target.kind, target.name
        if status == 422 and error_type == "UNKNOWN_FIELD_NAME":
            match = _UNKNOWN_FIELD.search(message)
            if match is not None and match["name"] not in target.missing:
                target.missing.add(match["name"])
                self._field_missing(target, match["name"])
                return self._send(kind, pairs)
        if status in (413, 422) and len(pairs) > 1:
            middle = len(pairs) // 2
            return self._send(kind, pairs[:middle]) + self._send(kind, pairs[middle:])
        if status in (413, 422):
            (item,), (record,) = items, records
            error = f"{error_type}: {message}"
            self.store.outbox_retry(item, due_at=self.clock(), error=error, dead=True)
            self.log.error("Airtable refused a %s row %s (dead-lettered): %s", name, _key(item)[1:], error)
            if self.on_dead is not None:
                self.on_dead(name, error, item.run_id, item.client_id or None)
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
            self.on_failed(name, error, list(records))
        return 0

    def _back_off(self, items: Sequence[OutboxItem], error: str, fixed: float | None = None) -> None:
        """Postpone the rows of one failed request together: one jittered due time for all,
        so they come due, and go out, together again."""
        attempts = max((item.attempts for item in items), default=0)
        delay = fixed if fixed is not None else min(BACKOFF_CAP, BACKOFF_BASE * 2**attempts)
        due_at = self.clock() + delay * random.uniform(0.5, 1.0)
        for item in items:
            self.store.outbox_retry(item, due_at=due_at, error=error)

    def _wait_for_slot(self) -> None:
        wait_for_slot(self.store, self.settings, clock=self.clock, sleep=self.sleep, recent=self._recent)

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
        for target in self.targets.values():
            if target.name not in tables:
                self.log.warning(
                    "Airtable base has no table %r: run `flask jobmetrics airtable init`", target.name
                )
                continue
            target.fields = tables[target.name]

    def _field_missing(self, target: Target, field: str) -> None:
        self.log.warning(
            "Airtable table %r has no field %r: it is left out of writes"
            " (`flask jobmetrics airtable init` adds it, JOBMETRICS_AIRTABLE_FIELD_NAMES maps it)",
            target.name,
            field,
        )

    def _writable(self, target: Target, record: Mapping[str, Any]) -> dict[str, Any]:
        out, newly_missing = target.writable(record)
        for field in newly_missing:
            self._field_missing(target, field)
        return out

    # -- flush ----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> PublishResult:
        """Send everything now; wait until the outbox is empty, blocked, or ``timeout`` passed.

        When another process holds the sender lease, ask it (through the store) to publish
        everything now, and wait for the outbox to empty all the same.
        """
        deadline = None if timeout is None else self.clock() + timeout
        published = 0
        asking = False
        try:
            while True:
                published += self.run_once(force=True)
                pending, dead = self.store.outbox_counts()
                if pending == 0 or (self.blocked is not None and timeout is None):
                    return PublishResult(published, pending, dead)
                now = self.clock()
                if deadline is not None and now >= deadline:
                    return PublishResult(published, pending, dead)
                if not self._leading:  # renewed while waiting; the holder looks on every pass
                    ttl = LEASE_TTL if deadline is None else min(LEASE_TTL, deadline - now)
                    asking = self.flush_lease.take(now, ttl=ttl) or asking
                self.sleep(0.05)
        finally:
            if asking:  # hand the request back: the holder need not force any longer
                self.flush_lease.release()


def sender_record(settings: Settings) -> deque[float]:
    """A sender's record for ``wait_for_slot(recent=)``: when its last ``limit + 1`` waits
    began (``limit``: whole requests per second of ``JOBMETRICS_AIRTABLE_RATE_LIMIT``, >= 1)."""
    return deque(maxlen=max(1, int(settings.airtable_rate_limit)) + 1)


def wait_for_slot(
    store: Store,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    recent: deque[float] | None = None,
) -> None:
    """Wait for the next request slot of the base, shared by every process using ``store``.

    ``recent`` is the sender's own record (``sender_record``; one per sender, which sends one
    request at a time). A request starts at least one second after the wait for the request
    ``limit - 1`` before it began; that wait began once the reply to the request ``limit``
    before had come back, so that request had reached Airtable: whatever the delays on the
    way, no second ever holds more than ``limit`` of this sender's requests.
    """
    if recent is not None:
        began = clock()
        recent.append(began)
        if len(recent) == recent.maxlen:  # recent[1]: the wait that began after the reply to recent[0]'s
            wait = min(1.0, recent[1] + 1.0 - began)  # never more than a second (a clock set back)
            if wait > 0:
                sleep(wait)
    rate = settings.airtable_rate_limit / PACING_MARGIN
    while (wait := store.take_token(f"airtable-rate:{settings.airtable_base_id}", rate, clock())) > 0:
        sleep(wait)


_PUBLISHERS: weakref.WeakSet[Publisher] = weakref.WeakSet()


def publishers_to(endpoint_url: str) -> list[Publisher]:
    """The live publishers of this process that send to ``endpoint_url``."""
    return [p for p in list(_PUBLISHERS) if p.settings.airtable_endpoint_url == endpoint_url]


def _key(item: OutboxItem) -> tuple[str, str, str]:
    return (item.kind, item.run_id, item.client_id)
