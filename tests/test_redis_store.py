"""Redis-specific behaviour of ``RedisStore``: URLs, failures, processes, retention, values.

The shared behaviour is in ``test_store_contract.py``. These tests need the Redis server at
``JOBMETRICS_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; they fail without it
unless ``JOBMETRICS_TEST_SKIP_REDIS=1``) and start their own ``redis-server`` for the failure
tests; each uses its own key prefix (the ``redis_url`` fixture), deleted after it.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores import load_store
from flask_jobmetrics.stores.memory import MemoryStore
from flask_jobmetrics.stores.redis import RedisStore, parse_url

from .faults import RedisServer
from .gunicorn_support import free_port
from .support import REDIS_URL, RedisKeys

LEADS = "Leads Processed"
START = "Start Time"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)

MakeStore = Callable[..., RedisStore]


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test server (the test fails when there is none, see ``redis_url``)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
    yield client
    client.close()


@pytest.fixture
def make(redis_url: str) -> Iterator[Callable[..., RedisStore]]:
    """make(name="a", **options): a store whose prefix is unique to this test and ``name``."""
    made: list[RedisStore] = []

    def make_store(name: str = "a", query: str = "", **options: Any) -> RedisStore:
        store = RedisStore(f"{redis_url}{name}:{query}", **options)
        made.append(store)
        return store

    yield make_store
    for store in made:
        store.close()


def leads(n: Any, client: str = "acme", run: str = "run-1") -> ClientDelta:
    return ClientDelta(run, client, {LEADS: ("sum", n)})


# -- URLs and construction ---------------------------------------------------------------


def test_url_options_prefix_retention_and_the_rest() -> None:
    """prefix and retention are taken out of the URL; other query options go to redis-py."""
    url, prefix, retention = parse_url("redis://:pw@h:7000/3?prefix=app:&retention=86400&socket_timeout=5")
    assert (url, prefix, retention) == ("redis://:pw@h:7000/3?socket_timeout=5", "app:", 86400.0)
    assert parse_url("redis://h/0") == ("redis://h/0", "jobmetrics:", 7 * 24 * 3600.0)
    assert parse_url("rediss://h:1/0?retention=0", retention=5.0)[2] == 0.0
    assert parse_url("unix:///tmp/r.sock?db=2&prefix=x:")[:2] == ("unix:///tmp/r.sock?db=2", "x:")
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(StoreError, match="retention"):
            parse_url(f"redis://h/0?retention={bad}")


def test_db_from_url_and_load_store(raw: redis.Redis, redis_keys: RedisKeys) -> None:
    """The URL's DB number is used, and load_store routes redis:// to RedisStore."""
    prefix = redis_keys.prefix
    store = load_store(f"{redis_keys.url(db=2)}&retention=60")
    assert isinstance(store, RedisStore)
    other_db = redis.Redis.from_url(f"{REDIS_URL.rsplit('/', 1)[0]}/2", decode_responses=True)
    try:
        store.ensure_job("run-1", {})
        assert other_db.exists(f"{prefix}job:run-1") == 1
        assert raw.exists(f"{prefix}job:run-1") == 0
        assert store.retention == 60.0
    finally:
        other_db.close()
        store.close()


def test_unreachable_server_fails_fast_naming_host_and_port() -> None:
    """A server that does not answer raises StoreError at construction, naming host:port."""
    port = free_port()
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as info:
        RedisStore(f"redis://127.0.0.1:{port}/0")
    assert time.monotonic() - started < 5.0
    assert isinstance(info.value.__cause__, redis.RedisError)


# -- failures ----------------------------------------------------------------------------


@pytest.mark.slow
def test_server_going_away_raises_store_error_and_recovers(tmp_path: Path) -> None:
    """Calls fail with StoreError while the server is down and work again once it is back."""
    server = RedisServer(tmp_path).start()
    port = server.port
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    try:
        assert store.merge_client(leads(1))[0].fields[LEADS] == 1
        server.stop()
        with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
            store.merge_client(leads(1))
        with pytest.raises(StoreError):
            store.update_job("run-1", lambda fields, clients: None)
        server.start()  # nothing was saved: the data is gone
        assert store.merge_client(leads(5))[0].fields[LEADS] == 5
        job = store.update_job("run-1", lambda fields, clients: fields.update(Seen=len(clients)))
        assert job.fields["Seen"] == 1
    finally:
        store.close()
        server.stop()


@pytest.mark.slow
def test_updates_are_buffered_while_redis_is_down(tmp_path: Path) -> None:
    """With Redis down, updates are still accepted into the buffer and land once it is back."""
    server = RedisServer(tmp_path).start()
    service = MetricsService(
        RedisStore(f"redis://127.0.0.1:{server.port}/0"), buffer_ttl=3600, flush_interval=3600
    )
    try:
        server.stop()
        assert service.update_client_metrics("230615-120000", "acme", {LEADS: 2}).metrics[LEADS] == 2
        with pytest.raises(StoreError):
            service.flush()
        server.start()
        service.update_client_metrics("230615-120000", "acme", {LEADS: 3})
        service.flush()
        stored = service.store.get_client("230615-120000", "acme")
        assert stored is not None and stored.fields[LEADS] == 5
    finally:
        service.close()
        server.stop()


@pytest.mark.slow
def test_scripts_are_loaded_again_after_a_script_flush(tmp_path: Path) -> None:
    """After SCRIPT FLUSH (as after a restart) both the script and the WATCH paths still work."""
    # A server of its own: flushing the shared one's scripts would disturb parallel test runs.
    server = RedisServer(tmp_path).start()
    raw = redis.Redis(port=server.port)
    store = RedisStore(f"redis://127.0.0.1:{server.port}/0")
    try:
        store.ensure_job("run-1", {})
        raw.script_flush()
        job = store.update_job("run-1", lambda fields, clients: fields.update(Notes="x"), complete=True)
        assert job.fields["Notes"] == "x"
        raw.script_flush()
        assert store.merge_client(leads(2))[0].fields[LEADS] == 2
        raw.script_flush()
        assert store.acquire_lease("publisher", "w1", ttl=10.0, now=0.0) is True
    finally:
        store.close()
        raw.close()
        server.stop()


# -- processes and threads ---------------------------------------------------------------


def _merge_in_child(url: str, count: int) -> None:
    store = RedisStore(url)
    for _ in range(count):
        store.merge_client(leads(1))
    store.close()


def _merge_with_inherited(store: RedisStore, count: int) -> None:
    for _ in range(count):
        store.merge_client(leads(1))


@pytest.mark.slow
def test_four_processes_merge_exactly(make: MakeStore) -> None:
    """4 processes x 500 merges of ("sum", 1) into one row give exactly 2,000."""
    store = make()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_merge_in_child, args=(store.url, 500)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    row = store.get_client("run-1", "acme")
    assert row is not None
    assert (row.fields[LEADS], row.version) == (2000, 2000)


def test_forked_children_use_the_parents_store_safely(make: MakeStore) -> None:
    """Children forked from a process with open connections use the same store object exactly."""
    store = make()
    store.merge_client(leads(1))  # the pool now holds a connection the children inherit
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_merge_with_inherited, args=(store, 200)) for _ in range(3)]
    for proc in procs:
        proc.start()
    _merge_with_inherited(store, 200)
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert store.get_client("run-1", "acme").fields[LEADS] == 801  # type: ignore[union-attr]


def test_finalize_runs_again_when_its_row_changed_meanwhile(make: MakeStore) -> None:
    """A concurrent write to a row read by finalize makes the change retry with fresh data."""
    store, other = make(), make()
    store.merge_client(leads(1))
    seen: list[int] = []

    def finalize(fields: dict[str, Any]) -> None:
        seen.append(fields[LEADS])
        if len(seen) == 1:
            other.merge_client(leads(10))  # another writer, between the read and EXEC

    row, applied = store.merge_client(leads(1), finalize)
    assert applied is True
    assert seen == [2, 12]
    assert (row.fields[LEADS], row.version) == (12, 3)
    assert store.get_client("run-1", "acme") == row


def test_threads_with_callbacks_merge_exactly(make: MakeStore) -> None:
    """4 threads x 50 merges with a finalize (the WATCH path) on one row give exactly 200."""
    store = make()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                store.merge_client(leads(1), lambda fields: fields.update(Touched=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_client("run-1", "acme").fields[LEADS] == 200  # type: ignore[union-attr]


# -- keys: prefix, retention -------------------------------------------------------------


def test_prefixes_keep_stores_apart(raw: redis.Redis, make: MakeStore) -> None:
    """Two prefixes on one server share nothing, and every key carries its store's prefix."""
    a, b = make("a"), make("b")
    a.merge_client(ClientDelta("run:1", "acme", {LEADS: ("sum", 1)}, idempotency_key="k"))
    a.acquire_lease("publisher", "w1", ttl=10.0, now=0.0)
    a.take_token("base", 5.0, now=0.0)
    assert b.get_client("run:1", "acme") is None
    assert b.list_jobs() == []
    assert b.outbox_counts() == (0, 0)
    assert b.merge_client(ClientDelta("run:1", "acme", {LEADS: ("sum", 1)}, idempotency_key="k"))[1] is True
    assert b.acquire_lease("publisher", "w2", ttl=10.0, now=0.0) is True
    assert b.take_token("base", 5.0, now=0.0) == 0.0
    keys = list(raw.scan_iter(match=f"{a.prefix}*"))
    assert len(keys) >= 8
    assert not any(key.startswith(b.prefix) for key in keys)


def test_colons_in_ids_do_not_collide(make: MakeStore) -> None:
    """Run and client IDs with ':' and '%' map to distinct rows; NUL in a run ID is refused."""
    store = make()
    store.merge_clients([leads(1, "b:c", run="a"), leads(2, "c", run="a:b"), leads(3, "3A", run="a%")])
    assert store.get_client("a", "b:c").fields[LEADS] == 1  # type: ignore[union-attr]
    assert store.get_client("a:b", "c").fields[LEADS] == 2  # type: ignore[union-attr]
    assert store.get_client("a%", "3A").fields[LEADS] == 3  # type: ignore[union-attr]
    assert [r.client_id for r in store.list_clients("a")] == ["b:c"]
    with pytest.raises(StoreError, match="NUL"):
        store.merge_client(leads(1, run="bad\0run"))


def test_completed_jobs_expire_and_running_ones_do_not(raw: redis.Redis, make: MakeStore) -> None:
    """Completing a job sets a TTL of ``retention`` on its keys; reopening it removes the TTL."""
    store = make(retention=3600.0)
    store.merge_clients([leads(1, "a"), leads(1, "b")])
    run_keys = [store.key("job", "run-1"), store.key("clients", "run-1")]
    run_keys += [store.client_key("run-1", c) for c in ("a", "b")]
    assert [raw.ttl(key) for key in run_keys] == [-1] * 4
    store.update_job("run-1", lambda fields, clients: None, complete=True)
    assert all(3590_000 < raw.pttl(key) <= 3600_000 for key in run_keys)
    store.merge_client(leads(1, "late"))  # a late client of a completed job expires with it
    assert 3590_000 < raw.pttl(store.client_key("run-1", "late")) <= 3600_000
    assert raw.ttl(store.key("jobs")) == -1
    store.update_job("run-1", lambda fields, clients: None, complete=False)
    assert [raw.ttl(key) for key in run_keys] == [-1] * 4
    forever = make("b", query="&retention=0")
    forever.ensure_job("run-2", {})
    forever.update_job("run-2", lambda fields, clients: None, complete=True)
    assert raw.ttl(forever.key("job", "run-2")) == -1


def test_idempotency_keys_expire_in_redis(raw: redis.Redis, make: MakeStore) -> None:
    """An applied idempotency key is a Redis key with a TTL of the idempotency TTL."""
    store = make(idempotency_ttl=120.0)
    store.merge_client(ClientDelta("run-1", "acme", {LEADS: ("sum", 1)}, idempotency_key="k"))
    assert 110_000 < raw.pttl(store.key("idem", "k")) <= 120_000


def test_list_jobs_skips_and_forgets_expired_jobs(raw: redis.Redis, make: MakeStore) -> None:
    """A job whose keys expired disappears from list_jobs and from the index."""
    store = make()
    store.ensure_job("old", {START: T0, "Status": "Completed"})
    store.ensure_job("new", {START: T0 + timedelta(hours=1), "Status": "Completed"})
    raw.delete(store.key("job", "old"))  # as its expiry would
    assert [j.run_id for j in store.list_jobs(status="Completed")] == ["new"]
    assert [j.run_id for j in store.list_jobs()] == ["new"]
    assert raw.zrange(store.key("jobs"), 0, -1) == ["new"]


# -- values ------------------------------------------------------------------------------

SEQUENCES: list[list[tuple[str, Any]]] = [
    [("sum", 2**53), ("sum", 1), ("sum", 1)],
    [("sum", 2**70), ("sum", -(2**70) - 5), ("sum", 3)],
    [("sum", -5), ("sum", 5)],
    [("sum", 0.1), ("sum", 0.2)],
    [("sum", 1.5), ("sum", 1.5)],
    [("sum", 1), ("sum", 2.0)],
    [("sum", 1e20), ("sum", 1)],
    [("sum", 1e300), ("sum", 1e300)],
    [("sum", "ab"), ("sum", "cd")],
    [("min", 3), ("min", 2.5), ("min", 2**60)],
    [("max", 2**60), ("max", 2**60 + 1), ("max", 1e18)],
    [("max", "z"), ("max", "é"), ("min", "a")],
    [("last", 1), ("last", None), ("set", None)],
    [("min", 5), ("set", 7.25), ("last", "x")],
]


@pytest.mark.parametrize("ops", SEQUENCES, ids=[str(i) for i in range(len(SEQUENCES))])
def test_values_merge_like_the_memory_store(make: MakeStore, ops: list[tuple[str, Any]]) -> None:
    """Every sequence of ops gives the same value, of the same type, as the reference store."""
    store, reference = make(), MemoryStore()
    for agg, value in ops:
        for target in (store, reference):
            target.merge_client(ClientDelta("run-1", "acme", {"V": (agg, value)}))
    got = store.get_client("run-1", "acme").fields.get("V")  # type: ignore[union-attr]
    want = reference.get_client("run-1", "acme").fields.get("V")  # type: ignore[union-attr]
    assert (got, type(got)) == (want, type(want))


def test_thousands_of_increments_are_exact(make: MakeStore) -> None:
    """5,000 int and float increments in batches give Python's exact sequential totals."""
    store = make()
    expected_float = 0.0
    for _ in range(10):
        store.merge_clients([ClientDelta("run-1", "acme", {"N": ("sum", 1), "F": ("sum", 0.1)})] * 500)
    for _ in range(5000):
        expected_float += 0.1
    row = store.get_client("run-1", "acme")
    assert row is not None
    assert row.fields["N"] == 5000 and type(row.fields["N"]) is int
    assert row.fields["F"] == expected_float


def test_min_max_compare_instants_across_offsets(raw: redis.Redis, make: MakeStore) -> None:
    """min/max and the job's Start Time compare instants, whatever the offset and microseconds."""
    store = make()
    plus2 = timezone(timedelta(hours=2))
    store.merge_client(ClientDelta("run-1", "a", {START: ("min", T0), "End Time": ("max", T0)}))
    later = datetime(2024, 5, 1, 14, 0, 0, 1, tzinfo=plus2)  # 12:00:00.000001 UTC
    earlier = datetime(2024, 5, 1, 11, 28, 59, 999999, tzinfo=timezone.utc)  # 1 µs before 11:29
    store.merge_client(ClientDelta("run-1", "a", {START: ("min", later), "End Time": ("max", later)}))
    row = store.get_client("run-1", "a")
    assert row is not None
    assert (row.fields[START], row.fields["End Time"]) == (T0, later)
    # A value written with an offset (not by this package) is still compared as an instant.
    # 13:59:59.5+02:30 is 11:29:59.5 UTC: earlier, though its text sorts after 12:31.
    raw.hset(store.client_key("run-1", "a"), f"f:{START}", '{"$dt": "2024-05-01T13:59:59.5+02:30"}')
    row, _ = store.merge_client(ClientDelta("run-1", "a", {START: ("min", T0 + timedelta(minutes=31))}))
    assert row.fields[START] == T0 - timedelta(minutes=30, seconds=0.5)
    row, _ = store.merge_client(ClientDelta("run-1", "a", {START: ("min", T0 - timedelta(minutes=31))}))
    assert row.fields[START] == T0 - timedelta(minutes=31)
    store.merge_client(ClientDelta("run-1", "b", {START: ("min", earlier)}))
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[START] == earlier


def test_reserve_job_inside_a_callback_commits_with_its_transaction(make: MakeStore) -> None:
    """reserve_job from an update_job callback joins the transaction: the job and the mark commit together."""
    store = make()
    store.ensure_job("240501-115959", {})
    reserved: list[str] = []

    def update(fields: dict[str, Any], clients: Any) -> None:
        reserved.append(store.reserve_job("240501-120000", {"Status": "Running"}).run_id)

    store.update_job("240501-115959", update)
    assert reserved[-1] == "240501-120000"
    assert store.get_job("240501-120000") is not None
    assert store.reserve_job("240501-120000", {}).run_id == "240501-120001"


def test_a_reservation_sent_again_with_its_token_reserves_no_other_run(make: MakeStore) -> None:
    """A reservation whose reply was lost, re-sent with its token, answers with the run it reserved."""
    store = make()
    item = {"t": "m", "e": 1714564800, "f": {}}  # 2024-05-01 12:00:00 UTC
    (first,) = store._merge([dict(item)], "tok-1")
    (again,) = store._merge([dict(item)], "tok-1")
    assert first[7] == again[7] == "240501-120000"
    assert [job.run_id for job in store.list_jobs()] == ["240501-120000"]
    assert store.reserve_job("240501-120000", {}).run_id == "240501-120001"
