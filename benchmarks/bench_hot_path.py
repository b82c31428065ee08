"""The update hot path, against prometheus_client's labelled counters.

Anchor: three ``Counter(...).labels(run_id, client_id).inc(n)`` calls (the counters made
once, the ``.labels()`` lookup timed, as a real app does it). Measured in the same run:

(a) ``MetricRegistry.normalize`` of the three metrics;
(b) ``MetricsService.update_client_metrics`` with the three metrics, memory store, long
    flush interval (the update is buffered: no store write on the call);
(c) the same on the SQLite store, for a row not yet in the store (every update asks the
    store for the row) and for a row already flushed once (the service remembers it);
(d) write-through (``flush_interval=0``): every update merged into SQLite / Redis.

Each is timed with ``timeit`` (``--repeat`` rounds of a fixed number of calls); the table
gives the median and the best round in microseconds per update, and the median's ratio to
the anchor's median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
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

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds) * 1e6

    @property
    def best_us(self) -> float:
        return min(self.rounds) * 1e6


def measure(name: str, fn: Callable[[], object], number: int, repeat: int) -> Result:
    fn()  # warm (first-call costs: connections, caches)
    rounds = timeit.repeat(fn, number=number, repeat=repeat)
    return Result(name, number, [r / number for r in rounds])


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
        "median and best round shown, ratio = median / anchor median\n"
    )

    results: list[Result] = []
    r, n, io = args.repeat, args.number, args.io_number

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

    results.append(measure(f"anchor: prometheus_client 3{TIMES} labels().inc()", cycler(prometheus), n, r))

    # -- (a) normalize
    metric_registry = MetricRegistry()
    results.append(
        measure("(a) MetricRegistry.normalize (3 metrics)", lambda: metric_registry.normalize(METRICS), n, r)
    )

    def service_case(name: str, service: MetricsService, number: int) -> Result:
        update = service.update_client_metrics
        return measure(name, cycler(lambda client: update(RUN_ID, client, METRICS)), number, r)

    def buffered(store: Store) -> MetricsService:
        """A service whose buffer keeps updates for an hour: no store write on the call."""
        return MetricsService(store, flush_interval=3600.0, buffer_ttl=3600.0)

    with tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp:
        # -- (b) buffered, memory store
        memory = buffered(MemoryStore())
        results.append(service_case("(b) update_client_metrics, memory, buffered", memory, n))
        memory.close()

        # -- (c) buffered, SQLite: rows not yet stored, then rows flushed once
        sqlite_cold = buffered(SQLiteStore(f"sqlite:///{tmp}/cold.sqlite3"))
        results.append(
            service_case("(c) update_client_metrics, SQLite, buffered, row not stored", sqlite_cold, n // 4)
        )
        sqlite_cold.close()
        sqlite_warm = buffered(SQLiteStore(f"sqlite:///{tmp}/warm.sqlite3"))
        for client in CLIENTS:
            sqlite_warm.update_client_metrics(RUN_ID, client, METRICS)
        sqlite_warm.flush()
        results.append(
            service_case("(c) update_client_metrics, SQLite, buffered, row stored", sqlite_warm, n)
        )
        sqlite_warm.close()

        # -- (d) write-through
        sqlite_wt = MetricsService(SQLiteStore(f"sqlite:///{tmp}/wt.sqlite3"), flush_interval=0)
        results.append(service_case("(d) write-through (flush_interval=0), SQLite", sqlite_wt, io))
        sqlite_wt.close()
        if not args.no_redis:
            prefix = f"bench-hot-{uuid.uuid4().hex[:8]}:"
            try:
                redis_wt = MetricsService(RedisStore(f"{args.redis_url}?prefix={prefix}"), flush_interval=0)
                results.append(service_case("(d) write-through (flush_interval=0), Redis", redis_wt, io))
                redis_wt.close()
            finally:
                delete_redis_prefix(args.redis_url, prefix)

    anchor = results[0].median_us
    rows = [
        (
            res.name,
            f"{res.calls:,}",
            f"{res.median_us:,.2f}",
            f"{res.best_us:,.2f}",
            f"{res.median_us / anchor:,.1f}{TIMES}",
        )
        for res in results
    ]
    print(table(["case", "calls/round", "median µs/update", "best µs/update", "ratio to anchor"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
