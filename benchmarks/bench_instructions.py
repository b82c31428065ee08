"""Instructions per call of the two hot targets, counted by valgrind: a figure the machine's
load cannot move.

The timed benchmarks (``bench_hot_path.py``, ``bench_request.py``) measure CPU time, which
a shared or virtual machine makes noisy. This one runs each case in a fresh interpreter under
``valgrind --tool=callgrind`` twice, once making ``--calls`` calls and once none, and reports
the difference divided by the calls: the instructions one call costs, start-up excluded.
Instructions are not time (cache misses and branches are not counted), so this is the
companion of the timed figures, not their replacement.

- **update**: ``MetricsService.update_client_metrics`` of three metrics, memory store,
  buffered (as ``bench_hot_path.py`` (b)), against three ``prometheus_client``
  ``Counter(...).labels(run, client).inc(n)`` calls;
- **request**: what ``JobMetrics`` + ``@tracked`` + ``current_run.add()`` of three metrics
  add to a trivial POST route (Flask test client, memory store, as ``bench_request.py``),
  against what ``PrometheusMetrics(app)`` adds; both minus the bare route.

Needs valgrind (Debian's ``valgrind`` package).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import ROOT, TIMES, header, table  # noqa: E402

#: One case per run: ``python bench_instructions.py --case NAME CALLS`` makes CALLS calls.
CASES = ("update", "prometheus", "bare", "anchor", "jobmetrics")


def run_case(case: str, calls: int) -> None:
    """Set the case up, make ``calls`` calls (after a few warm-up calls)."""
    run_id, clients = "250612-093015", ("acme", "globex", "umbrella", "wayne")
    metrics = {"Leads Processed": 1, "Profiles Examined": 1, "Total Tokens": 250}
    if case in ("update", "prometheus"):
        if case == "update":
            from flask_jobmetrics.service import MetricsService
            from flask_jobmetrics.stores.memory import MemoryStore

            update = MetricsService(
                MemoryStore(), flush_interval=3600.0, buffer_ttl=3600.0
            ).update_client_metrics

            def call(client: str) -> None:
                update(run_id, client, metrics)

        else:
            from prometheus_client import CollectorRegistry, Counter

            registry = CollectorRegistry()
            c1, c2, c3 = (Counter(n, n, ["run_id", "client_id"], registry=registry) for n in "abc")

            def call(client: str) -> None:
                c1.labels(run_id, client).inc(1)
                c2.labels(run_id, client).inc(1)
                c3.labels(run_id, client).inc(250)

        for i in range(8 + calls):
            call(clients[i % 4])
        return
    from bench_request import HEADERS, bare_app, jobmetrics_app, prometheus_app

    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        app = {"bare": bare_app, "anchor": prometheus_app, "jobmetrics": lambda: jobmetrics_app(tmp)[0]}[
            case
        ]()
        post = app.test_client().post
        for _ in range(50 + calls):
            post("/score", headers=HEADERS)


def instructions(case: str, calls: int) -> int:
    """Instructions ``valgrind --tool=callgrind`` counts for one run of the case."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--case",
        case,
        str(calls),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.split()[-1])
    raise RuntimeError(f"no instruction count in valgrind's output of {case}: {done.stderr[-500:]}")


def per_call(case: str, calls: int) -> float:
    with ThreadPoolExecutor(2) as pool:
        base, full = pool.map(lambda n: instructions(case, n), (0, calls))
    return (full - base) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="updates per run (default 2000)")
    parser.add_argument("--requests", type=int, default=500, help="requests per run (default 500)")
    parser.add_argument("--case", nargs=2, metavar=("NAME", "CALLS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        run_case(args.case[0], int(args.case[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("bench_instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 1
    print(header("bench_instructions: instructions per call (valgrind), against the anchors", argv))
    print(
        f"each case: a run of {args.calls:,} updates / {args.requests:,} requests minus a run of none, "
        "divided by the calls\n"
    )
    update, prometheus = per_call("update", args.calls), per_call("prometheus", args.calls)
    bare, anchor, ours = (per_call(case, args.requests) for case in ("bare", "anchor", "jobmetrics"))
    update_ratio, request_ratio = update / prometheus, (ours - bare) / (anchor - bare)
    rows = [
        ("update_client_metrics, memory, buffered", f"{update:,.0f}", f"{update_ratio:.2f}{TIMES}"),
        (f"anchor: prometheus_client 3{TIMES} labels().inc()", f"{prometheus:,.0f}", f"1.00{TIMES}"),
        ("request: JobMetrics adds", f"{ours - bare:+,.0f}", f"{request_ratio:.2f}{TIMES}"),
        ("anchor: PrometheusMetrics(app) adds", f"{anchor - bare:+,.0f}", f"1.00{TIMES}"),
        ("(the bare route's request)", f"{bare:,.0f}", ""),
    ]
    print(table(["case", "instructions per call", "ratio to anchor"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
