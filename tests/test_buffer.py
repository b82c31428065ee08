"""MetricsBuffer: merge per (run, client), every way out goes to the sink, nothing dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_jobmetrics import buffer as buffer_module
from flask_jobmetrics.buffer import BufferStats, MetricsBuffer
from flask_jobmetrics.deltas import ClientDelta, apply_ops

from .support import Clock

ROOT = Path(__file__).resolve().parents[1]
RUN = "240101-120000"


class Sink:
    """Records every sink call and merges the deltas into per-key rows with apply_ops."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[list[ClientDelta]] = []
        self.tokens: list[str] = []
        self.fail: BaseException | None = None
        self.lock = threading.Lock()
        self.delivered = threading.Event()

    def __call__(self, deltas: list[ClientDelta], token: str = "") -> None:
        with self.lock:
            self.tokens.append(token)
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.calls.append(deltas)
            for d in deltas:
                apply_ops(self.rows.setdefault((d.run_id, d.client_id), {}), d.ops)
        self.delivered.set()

    def total(self, client: str, field: str = "Leads Processed", run: str = RUN) -> Any:
        return self.rows.get((run, client), {}).get(field)


def leads(n: int, client: str = "acme", run: str = RUN) -> ClientDelta:
    return ClientDelta(run, client, {"Leads Processed": ("sum", n)})


def reporting_buffer(
    sink: Sink, clock: Clock, errors: list[tuple[BaseException, int]], **options: Any
) -> MetricsBuffer:
    """A buffer on ``clock`` without a flusher, its failures appended to ``errors`` (with their sizes)."""
    return MetricsBuffer(
        sink,
        clock=clock.timestamp,
        autostart=False,
        on_error=lambda exc, deltas: errors.append((exc, len(deltas))),
        **options,
    )


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def buf(sink: Sink, clock: Clock) -> Iterator[MetricsBuffer]:
    b = MetricsBuffer(sink, ttl=30, max_age=5, maxsize=100, clock=clock.timestamp, autostart=False)
    yield b
    b.stop(drain=False)


def test_merges_by_aggregation(buf: MetricsBuffer, sink: Sink) -> None:
    """Deltas of one key merge by sum/min/max/last; pending() and the caller's dict are never aliased."""
    first = {
        "Leads Processed": ("sum", 5),
        "Start Time": ("min", 20),
        "End Time": ("max", 20),
        "Status": ("last", "a"),
    }
    buf.add(ClientDelta(RUN, "acme", first))
    first["Leads Processed"] = ("sum", 999)  # the caller reuses its dict
    buf.add(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 7), "Start Time": ("min", 10)}))
    buf.add(ClientDelta(RUN, "acme", {"End Time": ("max", 30), "Status": ("last", "b")}))
    got = buf.pending(RUN, "acme")
    assert got == {
        "Leads Processed": ("sum", 12),
        "Start Time": ("min", 10),
        "End Time": ("max", 30),
        "Status": ("last", "b"),
    }
    assert got is not None
    got["Leads Processed"] = ("sum", 0)
    assert buf.pending(RUN, "acme") == {**got, "Leads Processed": ("sum", 12)}
    assert buf.pending(RUN, "other") is None
    assert len(buf) == 1
    assert buf.flush() == 1
    assert sink.rows[(RUN, "acme")] == {
        "Leads Processed": 12,
        "Start Time": 10,
        "End Time": 30,
        "Status": "b",
    }
    assert buf.pending(RUN, "acme") is None


def test_pending_includes_in_flight(buf: MetricsBuffer, sink: Sink) -> None:
    """While the sink call runs, pending() still shows the popped ops (plus newer ones): no dip."""
    entered, release = threading.Event(), threading.Event()

    def blocking(deltas: list[ClientDelta], token: str) -> None:
        entered.set()
        assert release.wait(5)
        sink(deltas)

    buf._sink = blocking
    buf.add(leads(5))
    flusher = threading.Thread(target=buf.flush)
    flusher.start()
    assert entered.wait(5)
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 5)}
    assert buf.stats().in_flight == 1
    assert buf.clients_of(RUN) == {"acme"}
    buf.add(leads(2))
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 7)}
    release.set()
    flusher.join(5)
    assert sink.total("acme") == 5
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 2)}
    assert buf.stats().in_flight == 0


def test_idle_ttl_expiry_goes_to_sink(sink: Sink, clock: Clock) -> None:
    """An entry idle for longer than the TTL is sent by sweep(), never dropped."""
    buf2 = MetricsBuffer(sink, ttl=10, max_age=60, clock=clock.timestamp, autostart=False)
    buf2.add(leads(3))
    clock.advance(9)
    assert buf2.sweep() == 0
    buf2.add(leads(1))  # a write resets the idle timeout
    clock.advance(9)
    assert buf2.sweep() == 0
    clock.advance(1)
    assert buf2.sweep() == 1
    assert sink.total("acme") == 4
    assert len(buf2) == 0


def test_max_age_sends_entry_that_keeps_being_written(buf: MetricsBuffer, sink: Sink, clock: Clock) -> None:
    """An entry written every second still reaches the sink once it is max_age old."""
    for _ in range(4):
        buf.add(leads(1))
        clock.advance(1)
        assert buf.sweep() == 0
    buf.add(leads(1))
    clock.advance(1)
    assert buf.sweep() == 1
    assert sink.total("acme") == 5
    buf.add(leads(1))  # a fresh entry with a fresh creation time
    clock.advance(4)
    assert buf.sweep() == 0
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 1)}


def test_write_through_when_max_age_zero(sink: Sink, clock: Clock) -> None:
    """max_age == 0 calls the sink inside add(), and nothing stays buffered nor runs behind."""
    b = MetricsBuffer(sink, max_age=0, clock=clock.timestamp)
    b.add(leads(2))
    b.add(leads(3, client="globex"))
    assert sink.total("acme") == 2 and sink.total("globex") == 3
    assert len(b) == 0
    assert not b.running
    assert b.stats() == BufferStats(buffered=0, added=2, merged=0, flushed=2, failed=0, in_flight=0)


def test_a_failed_write_through_is_held_and_resent_with_its_token(sink: Sink, clock: Clock) -> None:
    """A write-through whose sink call failed does not raise: it is reported, held sealed and
    re-sent with the same token before the next write; the store is not tried again within
    the interval after the failure."""
    errors: list[tuple[BaseException, int]] = []
    b = reporting_buffer(sink, clock, errors, max_age=0)
    sink.fail = RuntimeError("store down")
    b.add(leads(3))  # accepted and held
    assert [(str(exc), n) for exc, n in errors] == [("store down", 1)]
    assert b.pending(RUN, "acme") == {"Leads Processed": ("sum", 3)}
    b.add(leads(1, client="globex"))  # within the interval: not sent, held for the flusher
    assert len(sink.tokens) == 1 and len(b) == 2
    sink.fail = None
    clock.advance(b.interval)
    b.add(leads(4))
    first, resent, *rest = sink.tokens
    assert resent == first and rest and first not in rest
    assert [d.ops["Leads Processed"] for d in sink.calls[0]] == [("sum", 3)]
    assert sink.total("acme") == 7
    assert b.sweep() == 1  # the flusher's sweep sends what waited out the pause
    assert sink.total("globex") == 1
    assert len(b) == 0
    assert b.stats().failed == 1


def test_a_failed_write_through_starts_the_flusher() -> None:
    """A write-through that failed starts the flusher, which delivers the held batch once the
    store answers."""
    sink = Sink()
    sink.fail = RuntimeError("store down")
    b = MetricsBuffer(sink, max_age=0, on_error=lambda exc, deltas: None)
    try:
        b.add(leads(5))
        assert b.running
        sink.fail = None
        assert sink.delivered.wait(5)
        assert sink.total("acme") == 5
        assert sink.tokens[0] == sink.tokens[-1]
    finally:
        b.stop(drain=True)


def test_capacity_eviction_never_drops(sink: Sink, clock: Clock) -> None:
    """A buffer of 10 entries fed 1,000 clients hands every evicted entry to the sink."""
    b = MetricsBuffer(sink, maxsize=10, clock=clock.timestamp, autostart=False)
    for round_ in range(3):
        for i in range(1000):
            b.add(leads(round_ + 1, client=f"c{i}"))
    assert len(b) <= 10
    assert len(sink.calls) > 100  # evictions went out during add()
    b.flush()
    assert len(sink.rows) == 1000
    assert all(sink.total(f"c{i}") == 6 for i in range(1000))
    assert b.stats().added == 3000


def test_expiry_inside_cachetools_is_not_lost(sink: Sink, clock: Clock) -> None:
    """Entries that cachetools expires on its own (in add, len, lookups) still reach the sink."""
    b = MetricsBuffer(sink, ttl=10, max_age=60, maxsize=10, clock=clock.timestamp, autostart=False)
    for i in range(10):
        b.add(leads(1, client=f"c{i}"))
    clock.advance(11)
    assert b.pending(RUN, "c3") == {"Leads Processed": ("sum", 1)}  # expired but still pending
    b.add(leads(1, client="c3"))  # cachetools expires all ten inside __setitem__
    assert {k[1] for k in sink.rows} == {f"c{i}" for i in range(10)}
    assert sink.total("c3") == 1
    assert b.pending(RUN, "c3") == {"Leads Processed": ("sum", 1)}
    clock.advance(11)
    cache, key = b._cache, (RUN, "c3")
    with b._lock:  # poke cachetools directly, as the buffer would under its lock
        assert key not in cache
        with pytest.raises(KeyError):
            cache[key]  # a lookup of the expired key does not remove it
        with pytest.raises(KeyError):
            del cache[key]  # cachetools deletes and raises: ours moves it to the spill list
        assert [k for k, _ in cache.spill] == [key]
    b.add(leads(4, client="c9"))  # the add hands the spill to the sink
    assert sink.total("c3") == 2
    with b._lock:
        cache.clear()  # spills instead of dropping
        assert [k for k, _ in cache.spill] == [(RUN, "c9")]
    assert b.flush() == 1
    assert sink.total("c9") == 5


def test_flush_one_run_or_one_key(buf: MetricsBuffer, sink: Sink) -> None:
    """flush(run_id=...) sends only that run; flush(run_id, client_id) only that key."""
    other = "240101-130000"
    for run in (RUN, other):
        for client in ("a", "b"):
            buf.add(leads(1, client=client, run=run))
    assert buf.clients_of(other) == {"a", "b"}
    assert buf.flush(run_id=other, client_id="b") == 1
    assert set(sink.rows) == {(other, "b")}
    assert buf.flush(run_id=RUN) == 2
    assert set(sink.rows) == {(other, "b"), (RUN, "a"), (RUN, "b")}
    assert buf.pending(other, "a") == {"Leads Processed": ("sum", 1)}
    assert buf.clients_of(other) == {"a"}
    assert buf.flush() == 1
    assert len(buf) == 0


def test_sink_failure_keeps_the_batch_sealed(buf: MetricsBuffer, sink: Sink) -> None:
    """A failing flush re-raises and keeps its batch as it was; the next delivery re-sends it,
    unchanged and with the same token, before the ops added meanwhile."""
    buf.add(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 5), "Status": ("last", "old")}))
    sink.fail = RuntimeError("store down")
    with pytest.raises(RuntimeError, match="store down"):
        buf.flush()
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 5), "Status": ("last", "old")}
    buf.add(ClientDelta(RUN, "acme", {"Leads Processed": ("sum", 2), "Status": ("last", "new")}))
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 7), "Status": ("last", "new")}
    assert len(buf) == 2
    sink.fail = None
    assert buf.flush() == 2
    first, resent, new = sink.tokens
    assert resent == first and new != first
    assert [d.ops["Leads Processed"] for d in sink.calls[0] + sink.calls[1]] == [("sum", 5), ("sum", 2)]
    assert sink.rows[(RUN, "acme")] == {"Leads Processed": 7, "Status": "new"}
    assert buf.stats().failed == 1
    assert len(buf) == 0


def test_each_delivery_has_its_own_token(buf: MetricsBuffer, sink: Sink) -> None:
    """Deliveries that succeed carry distinct tokens (write-through ones too)."""
    for n in range(3):
        buf.add(leads(n))
        buf.flush()
    assert len(set(sink.tokens)) == 3
    through = MetricsBuffer(sink, max_age=0, autostart=False)
    through.add(leads(1))
    through.add(leads(1))
    assert len(set(sink.tokens)) == 5


def test_a_late_resend_is_logged(sink: Sink, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Re-sending a batch first sent longer ago than the store keeps tokens logs an error."""
    b = MetricsBuffer(sink, clock=clock.timestamp, autostart=False, token_ttl=100)
    b.add(leads(1))
    sink.fail = RuntimeError("store down")
    with pytest.raises(RuntimeError):
        b.flush()
    sink.fail = None
    clock.advance(101)
    assert b.flush() == 1
    assert "count twice" in caplog.text


def test_background_failures_keep_entries_and_report(sink: Sink, clock: Clock) -> None:
    """With a failing sink a full buffer grows past maxsize, reports via on_error, then delivers all."""
    errors: list[tuple[BaseException, int]] = []
    b = reporting_buffer(sink, clock, errors, maxsize=10)
    sink.fail = RuntimeError("store down")
    for i in range(50):
        b.add(leads(1, client=f"c{i}"))
    assert len(b) == 50
    assert errors
    assert errors[0][1] == 1
    calls = len(errors)
    assert b.sweep() == 0  # the sweep retries and reports, never raises
    assert len(errors) == calls + 1
    sink.fail = None
    assert b.sweep() == 40  # every spilled entry; the 10 cached ones are not due yet
    assert b.flush() == 10
    assert all(sink.total(f"c{i}") == 1 for i in range(50))


def test_flusher_retries_and_survives_failures() -> None:
    """A failed background sweep keeps the entry, reports it, and the flusher retries it later."""
    sink, errors = Sink(), threading.Event()
    sink.fail = RuntimeError("store down")

    def on_error(exc: BaseException, deltas: list[ClientDelta]) -> None:
        sink.fail = None
        errors.set()
        raise ValueError("a broken error hook must not kill the flusher")

    b = MetricsBuffer(sink, ttl=30, max_age=0.05, on_error=on_error)
    b.add(leads(4))
    assert errors.wait(5)
    assert sink.delivered.wait(5)
    assert b.running
    b.stop(drain=True)
    assert sink.total("acme") == 4
    assert b.stats().failed >= 1


def test_threads_exact_totals_with_flusher() -> None:
    """8 threads x 2,000 adds to one key while the real flusher sweeps: exactly 16,000 arrive."""
    sink = Sink()
    b = MetricsBuffer(sink, ttl=0.02, max_age=0.01, maxsize=4)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(2000):
            b.add(leads(1))
            if i % 500 == 0:
                b.add(leads(0, client=f"t{n}-{i}"))  # some eviction traffic as well

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert b.running  # the first add() started the flusher
    b.stop(drain=True)
    assert not b.running
    assert sink.total("acme") == 16_000
    assert len(b) == 0
    stats = b.stats()
    assert stats.added == 16_032
    assert stats.failed == 0
    assert len(sink.calls) > 1  # evictions and sweeps delivered during the run


def test_background_flusher_delivers_without_flush() -> None:
    """The flusher thread sends an entry once it is max_age old, with no explicit flush."""
    sink = Sink()
    b = MetricsBuffer(sink, ttl=30, max_age=0.05, autostart=False)
    b.add(leads(3))
    assert not b.running
    b.start()
    b.start()  # idempotent
    assert b.running
    assert sink.delivered.wait(5)
    b.stop(drain=True)
    assert sink.total("acme") == 3
    assert b.stats().flushed == 1


CHILD_SETUP = """
import json, os, signal, sys, time
from flask_jobmetrics.buffer import MetricsBuffer
from flask_jobmetrics.shutdown import install_sigterm_handler
from flask_jobmetrics.deltas import ClientDelta

def sink(deltas, token):
    with open(sys.argv[1], "a") as fh:
        for d in deltas:
            fh.write(json.dumps([d.client_id, d.ops["Leads Processed"][1]]) + "\\n")

buf = MetricsBuffer(sink, ttl=60, max_age=60)
for i in range(500):
    buf.add(ClientDelta("240101-120000", f"c{i % 7}", {"Leads Processed": ("sum", 1)}))
"""


def file_totals(path: Path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for line in path.read_text().splitlines():
        client, n = json.loads(line)
        totals[client] = totals.get(client, 0) + n
    return totals


def expected_totals() -> dict[str, int]:
    return {f"c{k}": sum(1 for i in range(500) if i % 7 == k) for k in range(7)}


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_atexit_drains_on_normal_exit(tmp_path: Path) -> None:
    """A process that exits without flushing still hands every update to its sink (atexit)."""
    out = tmp_path / "sink.jsonl"
    proc = run_child(CHILD_SETUP + "assert len(buf) == 7\n", str(out))
    assert proc.wait(60) == 0
    assert file_totals(out) == expected_totals()


@pytest.mark.parametrize(
    ("previous", "status"),
    [("", 128 + signal.SIGTERM), ("signal.signal(signal.SIGTERM, lambda s, f: sys.exit(7))", 7)],
)
@pytest.mark.slow
def test_sigterm_drains_before_exit(tmp_path: Path, previous: str, status: int) -> None:
    """On SIGTERM the handler drains, then chains the previous handler or exits with 128 + 15."""
    out = tmp_path / "sink.jsonl"
    code = (
        CHILD_SETUP
        + previous
        + textwrap.dedent("""
        install_sigterm_handler()
        install_sigterm_handler()  # a second call changes nothing
        print("ready", flush=True)
        while True:
            signal.pause()
    """)
    )
    proc = run_child(code, str(out))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == status
    assert file_totals(out) == expected_totals()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_starts_empty_and_parent_flushes_once(tmp_path: Path) -> None:
    """After fork the child's buffer is empty and independent; the parent's entries go out once."""
    out = tmp_path / "sink.jsonl"

    def sink(deltas: list[ClientDelta], token: str) -> None:
        with out.open("a") as fh:
            for d in deltas:
                fh.write(json.dumps([d.client_id, d.ops["Leads Processed"][1]]) + "\n")

    b = MetricsBuffer(sink, ttl=60, max_age=60)
    b.add(leads(5, client="parent"))
    assert b.running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            ok = len(b) == 0 and not b.running and b.pending(RUN, "parent") is None
            b.add(leads(2, client="child"))
            ok = ok and b.running and b.stats().added == 1
            buffer_module.drain_all()  # what atexit would do in the child
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert file_totals(out) == {"child": 2}
    assert b.pending(RUN, "parent") == {"Leads Processed": ("sum", 5)}
    b.stop(drain=True)
    assert file_totals(out) == {"child": 2, "parent": 5}
    assert len(out.read_text().splitlines()) == 2


def test_stats_counts(buf: MetricsBuffer, sink: Sink) -> None:
    """stats() counts buffered entries, accepted and merged deltas, flushed entries and failures."""
    buf.add(leads(1, client="a"))
    buf.add(leads(1, client="a"))
    buf.add(leads(1, client="b"))
    assert buf.stats() == BufferStats(buffered=2, added=3, merged=1, flushed=0, failed=0, in_flight=0)
    sink.fail = RuntimeError("down")
    with pytest.raises(RuntimeError):
        buf.flush()
    sink.fail = None
    assert buf.flush() == 2
    assert buf.stats() == BufferStats(buffered=0, added=3, merged=1, flushed=2, failed=1, in_flight=0)


@pytest.mark.parametrize(
    "bad", [ClientDelta(RUN, "a", {}, idempotency_key="k"), ClientDelta(RUN, "a", {}, complete=True)]
)
def test_add_refuses_keyed_or_completing_deltas(buf: MetricsBuffer, bad: ClientDelta) -> None:
    """add() raises ValueError for deltas with an idempotency key or complete=True."""
    with pytest.raises(ValueError, match="straight to the store"):
        buf.add(bad)
    assert len(buf) == 0
    assert buf.stats().added == 0


def test_add_returns_the_keys_pending_ops(buf: MetricsBuffer) -> None:
    """add() returns a copy of what pending() holds for its key right after it."""
    assert buf.add(leads(2))[0] == {"Leads Processed": ("sum", 2)}
    ops, refused = buf.add(leads(3))
    assert ops == {"Leads Processed": ("sum", 5)} == buf.pending(RUN, "acme")
    assert refused == []
    assert ops is not None
    ops["Leads Processed"] = ("sum", 0)
    assert buf.pending(RUN, "acme") == {"Leads Processed": ("sum", 5)}


def test_frequent_writes_keep_the_idle_timeout_within_a_tenth_of_the_ttl(sink: Sink, clock: Clock) -> None:
    """Writes closer together than ttl/10 reset the idle timeout lazily: the entry leaves
    between 0.9 and 1.0 ttl after its last write, with every op."""
    b = MetricsBuffer(sink, ttl=10, max_age=600, clock=clock.timestamp, autostart=False)
    for _ in range(50):  # every 0.5 s for 25 s: never idle for 9 s
        b.add(leads(1))
        clock.advance(0.5)
        assert b.sweep() == 0
    clock.advance(8.4)  # 8.9 s after the last write
    assert b.sweep() == 0
    clock.advance(1.1)  # 10 s after the last write
    assert b.sweep() == 1
    assert sink.total("acme") == 50
