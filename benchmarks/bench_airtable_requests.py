"""Airtable requests per job: what the real publisher sends to a FakeAirtable.

For each scenario (a number of clients, in one or more jobs) and each store (SQLite, Redis)
a fresh Flask app with ``JobMetrics`` publishes to a fresh ``FakeAirtable``: for every job,
``start_job``, then for each client one buffered ``update_client_metrics`` and a
``complete_client_metrics``, then ``complete_job_metrics``; then ``flush(timeout)`` waits
until the outbox is empty. The publisher's background thread runs all along, as in an app.

Anchor: the formula. A job of ``n`` clients should take ``ceil(n / 10) + 1`` write requests
(``batch_upsert`` of at most 10 records, plus the job row), no record reads (SQLite and Redis
keep the rows; only a memory store reads a row back before its first publish), and one schema
read (metadata) per publisher. Every row must be in Airtable exactly once with its values.

By default the emulator's rate limit is OFF and the publisher's pace is raised to 1000
requests/s: the requests are counted, not timed, and this keeps the run short. With
``--rate-limit`` both use Airtable's 5 requests/s on the real clock (about 75 s per store for
the default scenarios).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import REDIS_URL, TIMES, delete_redis_prefix, header, table  # noqa: E402
from flask import Flask  # noqa: E402

from flask_jobmetrics import JobMetrics  # noqa: E402
from flask_jobmetrics.testing import FakeAirtable  # noqa: E402
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, add_jobmetrics_tables  # noqa: E402

JOB_TABLE, CLIENT_TABLE = "Job Tracking", "Client Run Results"
#: (label, clients per job)
DEFAULT_SCENARIOS: list[tuple[str, list[int]]] = [
    ("30 clients, 1 job", [30]),
    ("1,000 clients, 1 job", [1000]),
    ("2,345 clients, 3 jobs", [782, 782, 781]),
]


@dataclass
class Outcome:
    store: str
    label: str
    clients: int
    jobs: int
    expected_writes: int
    writes: int
    client_writes: int
    job_writes: int
    records_sent: int
    running_sent: int
    identical_resent: int
    reads: int
    meta: int
    too_many: int
    max_per_second: int
    exactly_once: bool
    detail: str
    seconds: float


def leads(i: int) -> int:
    return 1 + i % 7


def run_scenario(
    store_kind: str, label: str, sizes: list[int], rate_limit: bool, redis_url: str, tmp: Path
) -> Outcome:
    fake = FakeAirtable(api_key=API_KEY, rate_limit=5.0 if rate_limit else None)
    add_jobmetrics_tables(fake)
    fake.start()
    prefix = ""
    if store_kind == "sqlite":
        url = f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.sqlite3"
    else:
        prefix = f"bench-airtable-{uuid.uuid4().hex[:8]}:"
        url = f"{redis_url}?prefix={prefix}"
    app = Flask(f"bench_airtable_{store_kind}")
    app.config.update(
        JOBMETRICS_STORE_URL=url,
        JOBMETRICS_AIRTABLE_API_KEY=API_KEY,
        JOBMETRICS_AIRTABLE_BASE_ID=BASE_ID,
        JOBMETRICS_AIRTABLE_ENDPOINT_URL=fake.url,
        JOBMETRICS_AIRTABLE_RATE_LIMIT=5.0 if rate_limit else 1000.0,
    )
    extension = JobMetrics(app)
    service = extension.state(app).service
    began = time.perf_counter()
    expected_clients: dict[str, int] = {}
    expected_jobs: dict[str, int] = {}
    try:
        for size in sizes:
            run = service.start_job().run_id
            for i in range(size):
                client = f"client-{i:04d}"
                n = leads(i)
                metrics = {"Leads Processed": n, "Profiles Examined": n, "Total Tokens": 250 * n}
                service.update_client_metrics(run, client, metrics)
                service.complete_client_metrics(run, client)
                expected_clients[f"{run}-{client}"] = n
            service.complete_job_metrics(run)
            expected_jobs[run] = sum(leads(i) for i in range(size))
        report = service.flush(timeout=600)
        seconds = time.perf_counter() - began
        service.close()
    finally:
        fake.stop()
        if prefix:
            delete_redis_prefix(redis_url, prefix)
    problems = (
        [] if report.pending == 0 and report.dead == 0 else [f"pending {report.pending}, dead {report.dead}"]
    )
    problems += check_rows(fake, expected_clients, expected_jobs)

    log = fake.requests
    writes = [r for r in log if r.kind == "write"]
    client_writes = [r for r in writes if r.path.endswith("/" + CLIENT_TABLE)]
    records = [rec for r in writes for rec in _records(r.json)]
    return Outcome(
        store=store_kind,
        label=label,
        clients=sum(sizes),
        jobs=len(sizes),
        expected_writes=sum(math.ceil(n / 10) + 1 for n in sizes),
        writes=len(writes),
        client_writes=len(client_writes),
        job_writes=len(writes) - len(client_writes),
        records_sent=len(records),
        running_sent=sum(1 for rec in records if rec.get("Status") == "Running"),
        identical_resent=identical_resends(records),
        reads=sum(1 for r in log if r.kind == "read"),
        meta=sum(1 for r in log if r.kind == "meta"),
        too_many=sum(1 for r in log if r.status == 429),
        max_per_second=fake.max_requests_in_any_second(BASE_ID),
        exactly_once=not problems,
        detail="; ".join(problems) or "every row once, values right",
        seconds=seconds,
    )


def _records(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        return []
    return [rec.get("fields", {}) for rec in body["records"] if isinstance(rec, dict)]


def identical_resends(records: list[dict[str, Any]]) -> int:
    """Records sent again with exactly the fields of that row's previous send."""
    last: dict[str, dict[str, Any]] = {}
    count = 0
    for fields in records:
        key = str(fields.get("Run ID"))
        if last.get(key) == fields:
            count += 1
        last[key] = fields
    return count


def check_rows(fake: FakeAirtable, clients: dict[str, int], jobs: dict[str, int]) -> list[str]:
    """Each expected row present exactly once with its Leads Processed; nothing else."""
    problems = []
    for name, expected in ((CLIENT_TABLE, clients), (JOB_TABLE, jobs)):
        rows = [r["fields"] for r in fake.records(BASE_ID, name)]
        seen = Counter(str(f.get("Run ID")) for f in rows)
        missing = [k for k in expected if seen[k] == 0]
        twice = [k for k, c in seen.items() if c > 1]
        extra = [k for k in seen if k not in expected]
        wrong = [
            f.get("Run ID")
            for f in rows
            if f.get("Run ID") in expected and f.get("Leads Processed") != expected[str(f.get("Run ID"))]
        ]
        not_done = [f.get("Run ID") for f in rows if not str(f.get("Status", "")).startswith("Completed")]
        for what, keys in (
            ("missing", missing),
            ("more than once", twice),
            ("unexpected", extra),
            ("wrong Leads Processed", wrong),
            ("not Completed", not_done),
        ):
            if keys:
                problems.append(f"{name}: {len(keys)} {what} (e.g. {keys[0]})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rate-limit",
        action="store_true",
        help="Airtable's 5 requests/s in the emulator and the publisher, real clock (slow)",
    )
    parser.add_argument("--quick", action="store_true", help="only the 30- and 1,000-client scenarios")
    parser.add_argument(
        "--stores", default="sqlite,redis", help="comma-separated: sqlite, redis (default both)"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis server (default {REDIS_URL})")
    args = parser.parse_args(argv)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or any(s not in ("sqlite", "redis") for s in stores):
        parser.error("--stores takes sqlite and/or redis")
    scenarios = DEFAULT_SCENARIOS[:2] if args.quick else DEFAULT_SCENARIOS
    print(header("bench_airtable_requests: Airtable requests per job through the real publisher", argv))
    if args.rate_limit:
        print(
            "rate limit ON: FakeAirtable 5 req/s per base (real clock), "
            "publisher JOBMETRICS_AIRTABLE_RATE_LIMIT=5"
        )
    else:
        print(
            "rate limit OFF: FakeAirtable rate_limit=None, publisher JOBMETRICS_AIRTABLE_RATE_LIMIT=1000 "
            "(requests are counted, not timed; --rate-limit for Airtable's 5 req/s)"
        )
    print(
        "per client: one buffered update_client_metrics + complete_client_metrics; "
        "then complete_job_metrics; "
        "then flush(); the background publisher runs throughout\n"
    )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-airtable-") as tmp:
        for store in stores:
            for label, sizes in scenarios:
                outcome = run_scenario(store, label, sizes, args.rate_limit, args.redis_url, Path(tmp))
                outcomes.append(outcome)
                print(f"  {store} {label}: {outcome.writes} writes (expected {outcome.expected_writes})")
    print()
    rows = []
    for o in outcomes:
        per_1000 = o.writes / o.clients * 1000
        rows.append(
            (
                o.store,
                o.label,
                o.expected_writes,
                o.writes,
                f"{o.writes / o.expected_writes:.2f}{TIMES}",
                f"{per_1000:,.1f}",
                f"{o.client_writes}/{o.job_writes}",
                f"{o.records_sent:,}",
                o.running_sent,
                o.identical_resent,
                o.reads,
                o.meta,
                o.too_many,
                o.max_per_second,
                "✓" if o.exactly_once else "✗",
                f"{o.seconds:.1f}",
            )
        )
    print(
        table(
            [
                "store",
                "scenario",
                "expected writes",
                "writes",
                "ratio",
                "writes/1000 clients",
                "client/job writes",
                "records sent",
                "sent as Running",
                "identical re-sends",
                "record reads",
                "meta",
                "429s",
                "max req in 1 s",
                "each row once",
                "seconds",
            ],
            rows,
            align="ll" + "r" * 14,
        )
    )
    print(
        "\nexpected writes = sum over jobs of ceil(clients / 10) + 1; ratio = writes / expected.\n"
        "records sent: rows in all write requests; sent as Running: rows published before they completed\n"
        "(each is sent again once completed); identical re-sends: a row sent again with exactly the\n"
        "fields of its previous send (wasted requests)."
    )
    for o in outcomes:
        print(f"  {o.store} {o.label}: {o.detail}")
    ok = all(o.exactly_once and o.writes <= o.expected_writes and o.reads == 0 for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
