"""What the extension adds to a trivial POST route, against what ``PrometheusMetrics`` adds.

Three Flask apps with the same route ``POST /score`` returning ``"ok"``, driven by Flask's
test client with the headers ``X-Run-ID`` and ``X-Client-ID``:

- **bare**: the route alone;
- **anchor**: the route with ``prometheus_flask_exporter.PrometheusMetrics(app)`` (its
  default request-duration histogram and counters, its own ``CollectorRegistry``);
- **jobmetrics**: ``JobMetrics(app)`` (memory store, buffered) and the route under
  ``@jobmetrics.tracked()`` calling ``current_run.add()`` with three metrics.

The apps take turns request by request, in an order that turns with every request
(``--rounds`` rounds of ``--requests`` requests each), each request timed with
``time.thread_time`` (the CPU time of this thread, so the machine's other load barely moves
it). Reported per round: the cost each adds to the bare
app, and the ratio of the extension's to the anchor's; the median ratio is the figure
(target <= 0.5). Exactness: the store holds exactly the metrics of every request sent.

``--parts`` adds two partial apps to the turns (``@tracked`` alone; ``current_run.add()``
whose metrics are then discarded) and prints what reading the context, adding and merging
each cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import TIMES, header, table  # noqa: E402
from flask import Flask  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_flask_exporter import PrometheusMetrics  # noqa: E402

from flask_jobmetrics import JobMetrics, current_run  # noqa: E402

RUN_ID, CLIENT_ID = "250612-093015", "acme"
HEADERS = {"X-Run-ID": RUN_ID, "X-Client-ID": CLIENT_ID}
METRICS = {"Leads Processed": 1, "Profiles Examined": 1, "Total Tokens": 250}


def bare_app() -> Flask:
    app = Flask("bench_bare")

    @app.post("/score")
    def score() -> str:
        return "ok"

    return app


def prometheus_app() -> Flask:
    app = bare_app()
    PrometheusMetrics(app, registry=CollectorRegistry())
    return app


def jobmetrics_app(instance_path: str, part: str = "all") -> tuple[Flask, JobMetrics]:
    """The extension's app; ``part`` (``--parts``): ``tracked`` — the view adds nothing;
    ``add`` — it adds, then discards what it added (``current_run.discard()``), so nothing
    is merged; ``all`` — it adds, merged once the view answered (the measured case)."""
    app = Flask(f"bench_jobmetrics_{part}", instance_path=instance_path)
    app.config.update(
        JOBMETRICS_STORE_URL="memory://", JOBMETRICS_FLUSH_INTERVAL=3600.0, JOBMETRICS_BUFFER_TTL=3600.0
    )
    jobmetrics = JobMetrics(app)

    @app.post("/score")
    @jobmetrics.tracked()
    def score() -> str:
        if part != "tracked":
            current_run.add(METRICS)
        if part == "add":
            current_run.discard()
        return "ok"

    return app, jobmetrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per app per round (default 2000)"
    )
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time two partial apps, taking turns with the others: @tracked alone, and "
        "current_run.add() whose metrics are discarded (what reading the context, adding and "
        "merging each cost)",
    )
    args = parser.parse_args(argv)
    print(header("bench_request: what each extension adds to a trivial POST route", argv))
    print(
        "Flask test client; the apps take turns request by request, the order turning; "
        f"{args.rounds} rounds of {args.requests:,} requests per app; CPU µs per request (time.thread_time)\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-request-") as tmp:
        jm_app, jobmetrics = jobmetrics_app(tmp)
        partial: list[Any] = []  # the services of the --parts apps, closed at the end
        apps: dict[str, Flask] = {"bare": bare_app(), "anchor": prometheus_app(), "jobmetrics": jm_app}
        if args.parts:
            for part in ("tracked", "add"):
                apps[part], extra = jobmetrics_app(tmp, part)
                partial.append(extra.state(apps[part]).service)
        posts: list[tuple[str, Callable[..., Any]]] = [(k, a.test_client().post) for k, a in apps.items()]
        for _ in range(200):  # warm-up
            for _, post in posts:
                post("/score", headers=HEADERS)
        clock = time.thread_time
        per_round: list[dict[str, float]] = []
        statuses: set[int] = set()
        for _ in range(args.rounds):
            spent = dict.fromkeys(apps, 0.0)
            for i in range(args.requests):
                # the order turns with every request: no app always follows the same one
                # (whose objects it would find in, or push out of, the CPU's caches)
                for name, post in posts[i % len(posts) :] + posts[: i % len(posts)]:
                    began = clock()
                    response = post("/score", headers=HEADERS)
                    spent[name] += clock() - began
                    statuses.add(response.status_code)
            per_round.append({k: v / args.requests * 1e6 for k, v in spent.items()})
        sent = 200 + args.rounds * args.requests
        jobmetrics.flush()
        service = jobmetrics.state(jm_app).service
        row = service.store.get_client(RUN_ID, CLIENT_ID)
        fields = {service.registry.resolve(k).field: v for k, v in METRICS.items()}  # type: ignore[union-attr]
        exact = row is not None and all(row.fields.get(k) == v * sent for k, v in fields.items())
        exact = exact and statuses == {200}
        jobmetrics.state(jm_app).service.close()
        for service_of_part in partial:
            service_of_part.close()

    rows = []
    ratios = []
    for i, r in enumerate(per_round, 1):
        anchor, ours = r["anchor"] - r["bare"], r["jobmetrics"] - r["bare"]
        ratios.append(ours / anchor)
        rows.append((i, f"{r['bare']:.1f}", f"{anchor:+.1f}", f"{ours:+.1f}", f"{ours / anchor:.2f}{TIMES}"))
    print(table(["round", "bare µs", "PrometheusMetrics adds µs", "JobMetrics adds µs", "ratio"], rows))
    med = {k: statistics.median(r[k] for r in per_round) for k in apps}
    print(
        f"\nmedian: bare {med['bare']:.1f} µs, PrometheusMetrics {med['anchor'] - med['bare']:+.1f} µs, "
        f"JobMetrics {med['jobmetrics'] - med['bare']:+.1f} µs; "
        f"median ratio {statistics.median(ratios):.2f}{TIMES}"
    )
    if args.parts:
        tracked, added, full = (med[k] - med["bare"] for k in ("tracked", "add", "jobmetrics"))
        print(
            f"parts (medians): @tracked alone {tracked:+.1f} µs; "
            f"current_run.add() {added - tracked:+.1f} µs; "
            f"the merge once the view answered {full - added:+.1f} µs"
        )
    print(
        f"store totals = {sent:,} requests x the three metrics, every response 200: {'✓' if exact else '✗'}"
    )
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
