"""Resident memory as completed runs pile up: after 10,000 runs against after 1,000 (SQLite).

One ``MetricsService`` on a SQLite file (no Airtable) goes through ``--runs`` runs (default
10,000), each: ``start_job`` (with an explicit run ID, one second after the last),
``--clients`` clients (default 3) with one buffered ``update_client_metrics`` and a
``complete_client_metrics`` each, ``complete_job_metrics``;
``flush()`` after every run. RSS (``VmRSS`` from ``/proc/self/status``, after
``gc.collect()``) is read after every 1,000 runs. **Anchor**: the RSS after the first 1,000
runs of the same process; target: after 10,000 within 5 % of it (nothing per run is kept
in memory: the rows live in the store). Exactness: the store holds every job, each with the
summed ``Leads Processed`` of its clients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import header, table  # noqa: E402

from flask_jobmetrics.service import MetricsService  # noqa: E402
from flask_jobmetrics.stores.sqlite import SQLiteStore  # noqa: E402

START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def _run_id(n: int) -> str:
    """The run ID of the n-th run: one second apart from a fixed start (explicit, so that the
    figures do not include how run IDs are minted: see bench_run_ids.py)."""
    return (START + dt.timedelta(seconds=n)).strftime("%y%m%d-%H%M%S")


def leads(run: int, client: int) -> int:
    return 1 + (run + client) % 5


def rss_mib() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000, help="runs in all (default 10000)")
    parser.add_argument("--clients", type=int, default=3, help="clients per run (default 3)")
    parser.add_argument("--every", type=int, default=1000, help="runs between RSS readings (default 1000)")
    args = parser.parse_args(argv)
    print(header("bench_memory: RSS after many completed and flushed runs (SQLite)", argv))
    print(f"{args.runs:,} runs of {args.clients} clients each, flushed after every run\n")
    readings: list[tuple[int, float]] = []
    runs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        service = MetricsService(SQLiteStore(f"sqlite:///{tmp}/memory.sqlite3"))
        for n in range(1, args.runs + 1):
            run = service.start_job(_run_id(n)).run_id
            for c in range(args.clients):
                metrics = {"Leads Processed": leads(n, c), "Total Tokens": 100}
                service.update_client_metrics(run, f"client-{c}", metrics)
                service.complete_client_metrics(run, f"client-{c}")
            service.complete_job_metrics(run)
            service.flush()
            runs.append(run)
            if n % args.every == 0:
                readings.append((n, rss_mib()))
                print(f"  {n:>6,} runs: {readings[-1][1]:.1f} MiB")
        jobs = {job.run_id: job for job in service.store.list_jobs(limit=args.runs + 10)}
        exact = len(jobs) == len(runs) and all(
            jobs[run].fields.get("Leads Processed") == sum(leads(n, c) for c in range(args.clients))
            for n, run in enumerate(runs, 1)
        )
        service.close()
    anchor = readings[0][1]
    rows = [(f"{n:,}", f"{mib:.1f}", f"{(mib / anchor - 1) * 100:+.1f} %") for n, mib in readings]
    print()
    print(table(["runs", "RSS MiB", f"vs after {readings[0][0]:,}"], rows))
    growth = readings[-1][1] / anchor - 1
    print(f"\nafter {readings[-1][0]:,} runs: {growth * 100:+.1f} % of the RSS after {readings[0][0]:,}")
    print(f"every job stored with its clients' summed Leads Processed: {'✓' if exact else '✗'}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
