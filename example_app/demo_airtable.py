"""``demo --fake-airtable``: a local FakeAirtable for the demo, and what it received."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask_jobmetrics.testing import FakeAirtable

__all__ = ["LocalAirtable", "airtable_rows_report", "local_airtable"]

JOB_TABLE = "Job Tracking"
CLIENT_TABLE = "Client Run Results"


@dataclass(frozen=True)
class LocalAirtable:
    """A started FakeAirtable, its base, and the config that points an app at it."""

    fake: FakeAirtable
    base_id: str
    config: dict[str, Any]


@contextmanager
def local_airtable() -> Iterator[LocalAirtable]:
    """A FakeAirtable (Airtable's rate limit, real clock) with the two tables, and a fresh store.

    The store is a temporary SQLite file: the fake base lives only as long as this block, and
    a store that already published (or holds rows waiting for another base) would mix runs.
    """
    from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID, add_jobmetrics_tables

    fake = FakeAirtable(api_key=API_KEY)
    add_jobmetrics_tables(fake, BASE_ID)
    fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="jobmetrics-demo-") as folder:
            config = {
                "JOBMETRICS_STORE_URL": f"sqlite:///{Path(folder, 'jobmetrics.sqlite3')}",
                "JOBMETRICS_AIRTABLE_API_KEY": API_KEY,
                "JOBMETRICS_AIRTABLE_BASE_ID": BASE_ID,
                "JOBMETRICS_AIRTABLE_ENDPOINT_URL": fake.url,
                "JOBMETRICS_AIRTABLE_JOB_TABLE": JOB_TABLE,
                "JOBMETRICS_AIRTABLE_CLIENT_TABLE": CLIENT_TABLE,
            }
            yield LocalAirtable(fake, BASE_ID, config)
    finally:
        fake.stop()


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    numeric = [i > 0 and all(r[i][:1].isdigit() or r[i] == "-" for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = (c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))
        return indent + "  ".join(parts).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


_COLUMNS = (
    ("LEADS", "Leads Processed"),
    ("PROFILES SCORED", "Profiles Successfully Scored"),
    ("HARVESTED", "Total Posts Harvested"),
    ("POSTS SCORED", "Posts Successfully Scored"),
    ("TOKENS", "Total Tokens"),
)


def airtable_rows_report(local: LocalAirtable) -> list[str]:
    """The rows the fake base holds, one compact table per table, and the requests it took."""
    fake, base = local.fake, local.base_id
    jobs = [r["fields"] for r in fake.records(base, JOB_TABLE)]
    clients = sorted(
        (r["fields"] for r in fake.records(base, CLIENT_TABLE)), key=lambda f: str(f.get("Run ID"))
    )
    lines = [f"What Airtable received (FakeAirtable at {fake.url}, base {base}):", ""]
    lines.append(f"{JOB_TABLE} ({len(jobs)} row{'s' if len(jobs) != 1 else ''}):")
    job_headers = ["RUN ID", "STATUS", "CLIENTS", "FAILED", *(h for h, _ in _COLUMNS)]
    lines += _table(
        job_headers,
        [
            [
                _cell(f.get("Run ID")),
                _cell(f.get("Status")),
                _cell(f.get("Clients Processed")),
                _cell(f.get("Clients With Errors")),
                *(_cell(f.get(field)) for _, field in _COLUMNS),
            ]
            for f in jobs
        ],
    )
    lines += ["", f"{CLIENT_TABLE} ({len(clients)} rows):"]
    client_headers = ["RUN ID", "CLIENT ID", "STATUS", *(h for h, _ in _COLUMNS)]
    lines += _table(
        client_headers,
        [
            [
                _cell(f.get("Run ID")),
                _cell(f.get("Client ID")),
                _cell(f.get("Status")),
                *(_cell(f.get(field)) for _, field in _COLUMNS),
            ]
            for f in clients
        ],
    )
    keys = {(f.get("Run ID"), f.get("Client ID")) for f in clients}
    duplicates = len(clients) - len(keys)
    writes, reads, meta = (fake.request_count(kind=k, base_id=base) for k in ("write", "read", "meta"))
    rows = len(jobs) + len(clients)
    lines += [
        "",
        "(- : no value; that metric was never reported for the row.)",
        *(
            f"Error Details of {f.get('Client ID')}: {f['Error Details']}"
            for f in clients
            if f.get("Error Details")
        ),
        f"One row per client: {'yes' if not duplicates else f'NO, {duplicates} duplicate rows'}"
        f" ({len(keys)} clients, {len(clients)} rows).",
        f"It took {writes} write request{'s' if writes != 1 else ''} (batch_upsert, up to 10 records each)"
        f" for {rows} rows, plus {meta} schema read{'s' if meta != 1 else ''} and {reads} record reads;"
        f" at most {fake.max_requests_in_any_second(base)} requests in any second (Airtable allows 5).",
    ]
    return lines
