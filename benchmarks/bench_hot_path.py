"""The update hot path, against prometheus_client's labelled counters.

Anchor: three ``Counter(...).labels(run_id, client_id).inc(n)`` calls (the counters made
once, the ``.labels()`` lookup timed, as a real app does it). Measured in the same run:

(a) ``MetricRegistry.normalize`` of the three metrics;
(b) ``MetricsService.update_client_metrics`` with the three metrics, memory store, long
    flush interval (the update is buffered: no store write on the call);
(c) the same on the SQLite store, for a row not yet in the store (every update asks the
    store for the row) and for a row already flushed once (the service remembers it);
(d) write-through (``flush_interval=0``): every update merged into SQLite / Redis.

Each is timed with ``timeit`` (``--repeat`` rounds of a fixed number of calls). The cases
take turns round by round, so each round of a case is measured next to a round of the
anchor; the in-memory cases count the CPU time of this thread (``time.thread_time``: the
machine's other load barely moves it), the write-through cases wall time (they wait on the
store). The table gives the median and the best round in microseconds per update, and the
median over the rounds of the case's round / the anchor's round of the same turn.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import REDIS_URL, TIMES, delete_redis_prefix, header, table  # noqa: E402
from prometheus_client import CollectorRegistry, Counter  # noqa: E402

from flask_jobmetrics.schema import MetricRegistry  # noqa: E402
from flask_jobmetrics.service import MetricsService  # noqa: E402
from flask_jobmetrics.stores.base import Store  # noqa: E402
from flask_jobmetrics.stores.memory import MemoryStore  # noqa: E402
from flask_jobmetrics.stores.redis import RedisStore  # noqa: E402
from flask_jobmetrics.stores.sqlite import SQLiteStore  # noqa: E402

RUN_ID = "250612-093015"
CLIENTS = ("acme", "globex", "umbrella", "wayne")
METRICS = {"Leads Processed": 1, "Profiles Examined": 1, "Total Tokens": 250}


@dataclass
class Result:
    name: str
    calls: int
    rounds: list[float]  # seconds per call, one per round
    ratios: list[float]  # each round / the anchor's round of the same turn

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds) * 1e6

    @property
    def best_us(self) -> float:
        return min(self.rounds) * 1e6


@dataclass
class Case:
    name: str
    fn: Callable[[], object]
    number: int
    timer: Callable[[], float]
    rounds: list[float]


def run_cases(anchor: Case, cases: list[Case], repeat: int) -> list[Result]:
    """Time every case ``repeat`` rounds, the anchor's round right before each case's."""
    for case in [anchor, *cases]:
        case.fn()  # warm (first-call costs: connections, caches)
    ratios: dict[str, list[float]] = {case.name: [] for case in [anchor, *cases]}
    for _ in range(repeat):
        for case in cases:
            a = timeit.timeit(anchor.fn, number=anchor.number, timer=anchor.timer) / anchor.number
            c = timeit.timeit(case.fn, number=case.number, timer=case.timer) / case.number
            anchor.rounds.append(a)
            case.rounds.append(c)
            ratios[case.name].append(c / a)
            ratios[anchor.name].append(1.0)
    return [Result(case.name, case.number, case.rounds, ratios[case.name]) for case in [anchor, *cases]]


def cycler(fn: Callable[[str], object]) -> Callable[[], object]:
    """A no-argument callable calling ``fn(client)`` for the clients in turn."""
    state = [0]

    def call() -> object:
        i = state[0] = (state[0] + 1) % len(CLIENTS)
        return fn(CLIENTS[i])

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="timeit rounds per case (default 7)")
    parser.add_argument(
        "--number", type=int, default=20_000, help="calls per round for in-memory cases (default 20000)"
    )
    parser.add_argument(
        "--io-number", type=int, default=1_000, help="calls per round for cases with store I/O (default 1000)"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis server (default {REDIS_URL})")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis case")
    args = parser.parse_args(argv)
    print(header("bench_hot_path: one update of three metrics vs prometheus_client", argv))
    print(
        f"timeit: {args.repeat} rounds per case; {args.number} calls/round in memory, "
        f"{args.io_number} calls/round with store I/O; µs per update = round time / calls; "
        "median and best round shown; ratio = median of (round / the anchor's round next to it)\n"
    )
    r, n, io = args.repeat, args.number, args.io_number
    cpu, wall = time.thread_time, time.perf_counter

    # -- anchor: prometheus_client
    registry = CollectorRegistry()
    counters = [
        Counter(name, name, ["run_id", "client_id"], registry=registry)
        for name in ("leads_processed", "profiles_examined", "total_tokens")
    ]
    c1, c2, c3 = counters

    def prometheus(client: str) -> None:
        c1.labels(RUN_ID, client).inc(1)
        c2.labels(RUN_ID, client).inc(1)
        c3.labels(RUN_ID, client).inc(250)

    anchor = Case(f"anchor: prometheus_client 3{TIMES} labels().inc()", cycler(prometheus), n, cpu, [])
    metric_registry = MetricRegistry()
    cases = [
        Case(
            "(a) MetricRegistry.normalize (3 metrics)", lambda: metric_registry.normalize(METRICS), n, cpu, []
        )
    ]

    def update_case(name: str, service: MetricsService, number: int, timer: Callable[[], float]) -> Case:
        update = service.update_client_metrics
        return Case(name, cycler(lambda client: update(RUN_ID, client, METRICS)), number, timer, [])

    def buffered(store: Store) -> MetricsService:
        """A service whose buffer keeps updates for an hour: no store write on the call."""
        return MetricsService(store, flush_interval=3600.0, buffer_ttl=3600.0)

    services: list[MetricsService] = []
    prefix = f"bench-hot-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp:
        try:
            memory = buffered(MemoryStore())
            sqlite_cold = buffered(SQLiteStore(f"sqlite:///{tmp}/cold.sqlite3"))
            sqlite_warm = buffered(SQLiteStore(f"sqlite:///{tmp}/warm.sqlite3"))
            for client in CLIENTS:
                sqlite_warm.update_client_metrics(RUN_ID, client, METRICS)
            sqlite_warm.flush()
            sqlite_wt = MetricsService(SQLiteStore(f"sqlite:///{tmp}/wt.sqlite3"), flush_interval=0)
            services += [memory, sqlite_cold, sqlite_warm, sqlite_wt]
            cases += [
                update_case("(b) update_client_metrics, memory, buffered", memory, n, cpu),
                update_case(
                    "(c) update_client_metrics, SQLite, buffered, row not stored", sqlite_cold, n // 4, cpu
                ),
                update_case("(c) update_client_metrics, SQLite, buffered, row stored", sqlite_warm, n, cpu),
                update_case("(d) write-through (flush_interval=0), SQLite", sqlite_wt, io, wall),
            ]
            if not args.no_redis:
                redis_wt = MetricsService(RedisStore(f"{args.redis_url}?prefix={prefix}"), flush_interval=0)
                services.append(redis_wt)
                cases.append(update_case("(d) write-through (flush_interval=0), Redis", redis_wt, io, wall))
            results = run_cases(anchor, cases, r)
            services[0].flush()
            exact = all(
                _buffered_total(services[0], client) == _calls(results, "(b)") for client in CLIENTS[:1]
            )
        finally:
            for service in services:
                service.close()
            if not args.no_redis:
                delete_redis_prefix(args.redis_url, prefix)

    rows = [
        (
            res.name,
            f"{res.calls:,}",
            f"{res.median_us:,.2f}",
            f"{res.best_us:,.2f}",
            f"{statistics.median(res.ratios):,.2f}{TIMES}",
        )
        for res in results
    ]
    print(table(["case", "calls/round", "median µs/update", "best µs/update", "ratio to anchor"], rows))
    print(f"\nmemory case: the store holds every update it was given: {'✓' if exact else '✗'}")
    return 0 if exact else 1


def _calls(results: list[Result], prefix: str) -> int:
    """Updates of one client made by the case whose name starts with ``prefix`` (warm-up included)."""
    res = next(r for r in results if r.name.startswith(prefix))
    return (1 + len(res.rounds) * res.calls) // len(CLIENTS)


def _buffered_total(service: MetricsService, client: str) -> int:
    row = service.store.get_client(RUN_ID, client)
    return int(row.fields.get("Leads Processed", 0)) if row is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
