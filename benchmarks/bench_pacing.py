"""Publishing one job to an Airtable emulator that enforces 5 requests/s, against the floor.

A Flask app with ``JobMetrics`` on SQLite publishes one job of ``--clients`` clients (default
1,000: per client one buffered ``update_client_metrics`` and a ``complete_client_metrics``,
then ``complete_job_metrics`` and ``flush()``) to a ``FakeAirtable`` whose rate limit is on:
more than 5 requests in any sliding second get 429 and lock the base for 30 s, on the real
clock. The publisher paces at ``JOBMETRICS_AIRTABLE_RATE_LIMIT = 5``.

Measured: the wall time from the first request the emulator received to the last one
(``span``), and the **anchor**, the floor: the least time in which those ``n`` requests fit
without ever putting more than 5 in one second, ``(n - 5) / 5`` seconds. Reported: span /
floor (target <= 1.15), 429s (target 0), and the *slack*: the smallest ``t[i+5] - t[i] - 1 s``
over the arrivals, i.e. how much nearer six requests came to fitting into one second.

``--margins 1.0,1.02,1.05`` repeats the run with the publisher's ``PACING_MARGIN`` set to
each value (how close the emulator's real clock lets the pacing go); ``--repeat`` runs each
margin several times. Exactness: every row in the emulator exactly once with its values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import TIMES, header, table  # noqa: E402
from bench_airtable_requests import CLIENT_TABLE, check_rows, leads  # noqa: E402
from flask import Flask  # noqa: E402

import flask_jobmetrics.airtable.publisher as publisher_module  # noqa: E402
from flask_jobmetrics import JobMetrics  # noqa: E402
from flask_jobmetrics.testing import FakeAirtable  # noqa: E402
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, add_jobmetrics_tables  # noqa: E402

LIMIT = 5


def publish_one_job(clients: int, tmp: Path) -> dict[str, Any]:
    fake = FakeAirtable(api_key=API_KEY, rate_limit=float(LIMIT))
    add_jobmetrics_tables(fake)
    fake.start()
    app = Flask("bench_pacing")
    app.config.update(
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.sqlite3",
        JOBMETRICS_AIRTABLE_API_KEY=API_KEY,
        JOBMETRICS_AIRTABLE_BASE_ID=BASE_ID,
        JOBMETRICS_AIRTABLE_ENDPOINT_URL=fake.url,
        JOBMETRICS_AIRTABLE_RATE_LIMIT=float(LIMIT),
    )
    service = JobMetrics(app).state(app).service
    expected_clients: dict[str, int] = {}
    began = time.perf_counter()
    try:
        run = service.start_job().run_id
        for i in range(clients):
            client = f"client-{i:04d}"
            n = leads(i)
            service.update_client_metrics(run, client, {"Leads Processed": n, "Total Tokens": 250 * n})
            service.complete_client_metrics(run, client)
            expected_clients[f"{run}-{client}"] = n
        service.complete_job_metrics(run)
        report = service.flush(timeout=600)
        seconds = time.perf_counter() - began
        service.close()
    finally:
        fake.stop()
    problems = check_rows(fake, expected_clients, {run: sum(expected_clients.values())})
    if report.pending or report.dead:
        problems.append(f"pending {report.pending}, dead {report.dead}")
    log = fake.requests
    times = sorted(r.time for r in log)
    slack = min((times[i + LIMIT] - times[i] - 1.0 for i in range(len(times) - LIMIT)), default=float("inf"))
    writes = [r for r in log if r.kind == "write"]
    return {
        "requests": len(log),
        "writes": len(writes),
        "client_writes": sum(1 for r in writes if r.path.endswith("/" + CLIENT_TABLE)),
        "too_many": sum(1 for r in log if r.status == 429),
        "span": times[-1] - times[0],
        "floor": (len(log) - LIMIT) / LIMIT,
        "slack": slack,
        "seconds": seconds,
        "exact": not problems,
        "detail": "; ".join(problems) or "every row once, values right",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000, help="clients in the job (default 1000)")
    parser.add_argument(
        "--margins", default="", help="comma-separated PACING_MARGIN values to try (default: the shipped one)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per margin (default 1)")
    args = parser.parse_args(argv)
    shipped = publisher_module.PACING_MARGIN
    margins = [float(m) for m in args.margins.split(",") if m.strip()] or [shipped]
    print(header("bench_pacing: one job published to an emulator enforcing 5 requests/s", argv))
    print(
        f"{args.clients:,} clients in one job on SQLite; FakeAirtable {LIMIT} req/s per base (sliding "
        f"second, real clock); publisher JOBMETRICS_AIRTABLE_RATE_LIMIT={LIMIT};"
        f" shipped PACING_MARGIN={shipped}\n"
    )
    rows = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
        for margin in margins:
            publisher_module.PACING_MARGIN = margin
            for _ in range(args.repeat):
                res = publish_one_job(args.clients, Path(tmp))
                ok = ok and res["exact"] and res["too_many"] == 0
                print(
                    f"  margin {margin}: {res['requests']} requests in {res['span']:.2f} s, {res['detail']}"
                )
                rows.append(
                    (
                        f"{margin:g}",
                        res["requests"],
                        f"{res['client_writes']}/{res['writes'] - res['client_writes']}",
                        f"{res['span']:.2f}",
                        f"{res['floor']:.2f}",
                        f"{res['span'] / res['floor']:.3f}{TIMES}",
                        res["too_many"],
                        f"{res['slack'] * 1e3:.0f}",
                        f"{res['seconds']:.1f}",
                        "✓" if res["exact"] else "✗",
                    )
                )
    publisher_module.PACING_MARGIN = shipped
    print()
    print(
        table(
            [
                "margin",
                "requests",
                "client/job writes",
                "span s",
                "floor s",
                "span/floor",
                "429s",
                "slack ms",
                "total s",
                "each row once",
            ],
            rows,
        )
    )
    print(
        "\nspan: first to last request at the emulator; floor = (requests - 5) / 5 s; slack: the smallest\n"
        "t[i+5] - t[i] - 1 s over the arrivals (below 0 means six requests in one second: a 429)."
    )
    if len(rows) > 1:
        for margin in margins:
            ratios = [float(r[5][:-1]) for r in rows if r[0] == f"{margin:g}"]
            print(f"  margin {margin:g}: median span/floor {statistics.median(ratios):.3f}{TIMES}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
