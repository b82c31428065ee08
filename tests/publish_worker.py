"""A separate process publishing one job through a shared SQLite store (for the rate tests).

Usage: python -m tests.publish_worker STORE_URL AIRTABLE_URL RUN_ID CLIENTS
"""

from __future__ import annotations

import sys

from flask import Flask

from flask_jobmetrics import JobMetrics
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID


def main(store_url: str, airtable_url: str, run_id: str, clients: int) -> None:
    app = Flask("publish_worker")
    app.config.update(
        JOBMETRICS_STORE_URL=store_url,
        JOBMETRICS_AIRTABLE_API_KEY=API_KEY,
        JOBMETRICS_AIRTABLE_BASE_ID=BASE_ID,
        JOBMETRICS_AIRTABLE_ENDPOINT_URL=airtable_url,
        JOBMETRICS_PROGRESS_INTERVAL=0,
    )
    ext = JobMetrics(app)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # the test starts every worker at once
    ext.start_job(run_id)
    for i in range(clients):
        ext.complete_client_metrics(run_id, f"c{i:03d}", {"Leads Processed": i + 1})
    ext.complete_job_metrics(run_id)
    report = ext.flush(timeout=120)
    sys.stdout.write(f"pending={report.pending} dead={report.dead}\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
