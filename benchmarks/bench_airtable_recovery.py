"""Airtable requests when things go wrong: a memory store after a restart, and failing writes.

Scenario "restart": a ``memory://`` app publishes a job of N clients; a second app (the same
process after a restart: an empty memory store) updates every client again, completes the
job and flushes. Counted: the record reads and writes of the second life. Anchor: one read
per table (2) and ``ceil(N / 10) + 1`` writes.

Scenario "failures": an SQLite app publishes a job of N clients to an emulator that answers
503 to a share of the write requests (seeded, so every run fails the same requests).
Counted: the write requests Airtable accepted. Anchor: ``ceil(N / 10) + 1``, as without
failures, since rows retried together go out together, 10 a request.

Every row must be in Airtable exactly once with its values.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import header, table  # noqa: E402
from flask import Flask  # noqa: E402

from flask_jobmetrics import JobMetrics  # noqa: E402
from flask_jobmetrics.testing import FakeAirtable  # noqa: E402
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, add_jobmetrics_tables  # noqa: E402

RUN = "230615-120000"
CLIENT_TABLE = "Client Run Results"


class FlakyAirtable(FakeAirtable):
    """A FakeAirtable answering 503 to a seeded share of the record write requests."""

    def __init__(self, share: float, seed: int, **options: Any) -> None:
        super().__init__(**options)
        self.share = share
        self.random = random.Random(seed)

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        writes = environ["REQUEST_METHOD"].upper() in ("PATCH", "POST") and "/meta/" not in path
        if writes and not path.endswith("/listRecords") and self.random.random() < self.share:
            self.fail_next(1, status=503)
        return super().wsgi_app(environ, start_response)


def make_app(name: str, url: str, fake: FakeAirtable, instance: str) -> Flask:
    app = Flask(name, instance_path=instance)
    app.config.update(
        JOBMETRICS_STORE_URL=url,
        JOBMETRICS_AIRTABLE_API_KEY=API_KEY,
        JOBMETRICS_AIRTABLE_BASE_ID=BASE_ID,
        JOBMETRICS_AIRTABLE_ENDPOINT_URL=fake.url,
        JOBMETRICS_AIRTABLE_RATE_LIMIT=1000.0,
        JOBMETRICS_PROGRESS_INTERVAL=0,
    )
    JobMetrics(app)
    return app


def run_job(app: Flask, clients: int, leads: int) -> None:
    ext: JobMetrics = app.extensions["jobmetrics"].extension
    with app.app_context():
        ext.start_job(RUN)
        for i in range(clients):
            ext.update_client_metrics(RUN, f"c{i:03d}", {"Leads Processed": leads})
            ext.complete_client_metrics(RUN, f"c{i:03d}")
        ext.complete_job_metrics(RUN)
        report = ext.flush(timeout=120)
        assert (report.pending, report.dead) == (0, 0), report
    app.extensions["jobmetrics"].service.close()


def exact(fake: FakeAirtable, clients: int, leads: int) -> bool:
    rows = [r["fields"] for r in fake.records(BASE_ID, CLIENT_TABLE)]
    return len(rows) == clients and all(r.get("Leads Processed") == leads for r in rows)


def restart(clients: int) -> list[Any]:
    fake = FakeAirtable(api_key=API_KEY, rate_limit=None)
    add_jobmetrics_tables(fake)
    fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_job(make_app("life1", "memory://", fake, tmp), clients, 2)
            fake.reset_log()
            run_job(make_app("life2", "memory://", fake, tmp), clients, 3)
        reads, writes = fake.request_count(kind="read"), fake.request_count(kind="write")
        return [
            f"restart, {clients} clients",
            reads,
            2,
            writes,
            math.ceil(clients / 10) + 1,
            exact(fake, clients, 5),
        ]
    finally:
        fake.stop()


def failures(clients: int, share: float, seed: int) -> list[Any]:
    fake = FlakyAirtable(share, seed, api_key=API_KEY, rate_limit=None)
    add_jobmetrics_tables(fake)
    fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_job(make_app("flaky", f"sqlite:///{tmp}/s.sqlite3", fake, tmp), clients, 4)
        accepted = sum(1 for r in fake.requests if r.kind == "write" and r.status == 200)
        failed = sum(1 for r in fake.requests if r.kind == "write" and r.status == 503)
        label = f"{clients} clients, {share:.0%} of writes fail"
        return [label, failed, "-", accepted, math.ceil(clients / 10) + 1, exact(fake, clients, 4)]
    finally:
        fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=30, help="clients of the restart scenario")
    parser.add_argument("--failing-clients", type=int, default=26, help="clients of the failure scenario")
    parser.add_argument("--share", type=float, default=0.3, help="share of write requests that fail")
    parser.add_argument("--seeds", type=int, default=5, help="failure scenarios, seeds 0..n-1")
    args = parser.parse_args(argv)
    print(header("bench_airtable_recovery.py", argv))
    rows = [restart(args.clients)]
    rows += [failures(args.failing_clients, args.share, seed) for seed in range(args.seeds)]
    headers = ["scenario", "reads / failed", "anchor", "accepted writes", "anchor", "exact"]
    print(table(headers, rows))
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
