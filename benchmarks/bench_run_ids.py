"""``start_job()`` minting a fresh run ID, as the runs in the store grow.

For each store (SQLite, Redis) one ``MetricsService`` starts ``--runs`` jobs (default 2,000)
without a run ID, back to back, so most of them are minted within the same few seconds of
the clock: the case where probing one second after another made every run slower than the
last. Measured per run (wall clock, ``time.perf_counter``), and reported per block of
``--block`` runs (default 300): the mean of each block and its ratio to the **anchor**, the
first block of the same store in the same run. Target: the last block within 1.5x of the first.
The ratio of the blocks' median runs is shown too: on a busy machine a stall (a WAL
checkpoint's fsync, another process) can land in one block and move its mean.

Store round trips per ``start_job``: SQLite transactions (``BEGIN`` statements seen by the
connection's trace callback), Redis requests this process sent (a script call, a pipeline
and a single command each count once). Exactness: every run ID is distinct and the
store holds exactly ``--runs`` job rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import REDIS_URL, TIMES, delete_redis_prefix, header, table  # noqa: E402

from flask_jobmetrics.service import MetricsService  # noqa: E402
from flask_jobmetrics.stores.base import Store  # noqa: E402
from flask_jobmetrics.stores.sqlite import SQLiteStore  # noqa: E402


class RoundTrips:
    """Requests this process sent to Redis: one per ``send_packed_command`` (a pipeline, a
    script call and a single command each send once and wait for the replies)."""

    def __init__(self) -> None:
        from redis.connection import AbstractConnection

        self.count = 0
        original = AbstractConnection.send_packed_command

        def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(conn, *args, **kwargs)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def run_store(name: str, store: Store, runs: int, count_trips: Callable[[], int]) -> dict[str, Any]:
    service = MetricsService(store, flush_interval=3600.0, buffer_ttl=3600.0)
    times: list[float] = []
    ids: list[str] = []
    trips_before = count_trips()
    for _ in range(runs):
        began = time.perf_counter()
        job = service.start_job()
        times.append(time.perf_counter() - began)
        ids.append(job.run_id)
    trips = count_trips() - trips_before
    rows = len(store.list_jobs(limit=runs + 10))
    service.close()
    return {"name": name, "times": times, "ids": ids, "trips": trips / runs, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000, help="jobs started per store (default 2000)")
    parser.add_argument("--block", type=int, default=300, help="runs per reported block (default 300)")
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis server (default {REDIS_URL})")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis")
    args = parser.parse_args(argv)
    print(header("bench_run_ids: start_job() minting a run ID as the runs grow", argv))
    print(f"{args.runs:,} start_job() per store, back to back; means per block of {args.block} runs\n")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-runids-") as tmp:
        sqlite = SQLiteStore(f"sqlite:///{tmp}/runs.sqlite3")
        begins = [0]

        def trace(statement: str) -> None:
            if statement.lstrip().upper().startswith("BEGIN"):
                begins[0] += 1

        sqlite._conn().set_trace_callback(trace)
        results.append(run_store("sqlite", sqlite, args.runs, lambda: begins[0]))
        if not args.no_redis:
            from flask_jobmetrics.stores.redis import RedisStore

            prefix = f"bench-runids-{uuid.uuid4().hex[:8]}:"
            try:
                trips = RoundTrips()
                redis_store = RedisStore(f"{args.redis_url}?prefix={prefix}")
                results.append(run_store("redis", redis_store, args.runs, lambda: trips.count))
            finally:
                delete_redis_prefix(args.redis_url, prefix)

    ok = True
    rows = []
    for res in results:
        times = res["times"]
        blocks = [times[i : i + args.block] for i in range(0, len(times), args.block)]
        first = statistics.fmean(blocks[0])
        last_block = times[-args.block :]
        last = statistics.fmean(last_block)
        exact = len(set(res["ids"])) == args.runs == res["rows"]
        ok = ok and exact
        span = f"{len(times) - len(last_block) + 1:,}-{len(times):,}"
        median_ratio = statistics.median(last_block) / statistics.median(blocks[0])
        rows.append(
            (
                res["name"],
                f"{first * 1e3:.3f}",
                f"{last * 1e3:.3f}",
                span,
                f"{last / first:.2f}{TIMES}",
                f"{median_ratio:.2f}{TIMES}",
                f"{res['trips']:.2f}",
                f"{res['ids'][0]} .. {res['ids'][-1]}",
                "✓" if exact else "✗",
            )
        )
        print(
            f"  {res['name']}: block means (ms) "
            + " ".join(f"{statistics.fmean(b) * 1e3:.2f}" for b in blocks)
        )
    print()
    headers = [
        "store",
        f"runs 1-{args.block} ms",
        "last block ms",
        "last block",
        "ratio last/first",
        "median ratio",
        "round trips/run",
        "run IDs",
        "distinct, all stored",
    ]
    print(table(headers, rows, align="lrrrrrrll"))
    print(
        "\nratio last/first: of the block means (the target); median ratio: of the blocks' median"
        " runs (a stall of the disk or the machine in one block moves the mean, not the median)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
