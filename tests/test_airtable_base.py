"""Airtable as it really is: an existing base with other field names, cell and request limits,
read-back in pages, re-batched retries and flush from any process (against FakeAirtable)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_jobmetrics import ConfigurationError, JobMetrics, MetricSpec
from flask_jobmetrics.airtable.targets import MAX_REQUEST_BYTES
from flask_jobmetrics.cli import jobmetrics_cli
from flask_jobmetrics.extension import get_state
from flask_jobmetrics.longtext import LONG_TEXT_LIMIT
from flask_jobmetrics.models import Status
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

from .support import airtable_config, client_rows

RUN = "230615-120000"
JOBS, CLIENTS = "Job Tracking", "Client Run Results"
AppFactory = Callable[..., Flask]
Factory = Callable[..., FakeAirtable]

_DATETIME = {
    "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
    "timeFormat": {"name": "24hour", "format": "HH:mm"},
    "timeZone": "utc",
}
_STATUS = {"choices": [{"name": s.value} for s in Status]}
_COUNT = {"precision": 0}


def _fields(names: dict[str, str]) -> list[dict[str, Any]]:
    options = {"number": _COUNT, "dateTime": _DATETIME, "singleSelect": _STATUS}
    return [
        {"name": name, "type": kind, **({"options": options[kind]} if kind in options else {})}
        for name, kind in names.items()
    ]


#: The replaced system's tables (see the old-system study): Job Tracking without its
#: aggregates, Client Run Results with "Total Tokens Used" and no Leads/Posts Processed.
OLD_JOB_TRACKING = {
    "Run ID": "singleLineText",
    "Status": "singleSelect",
    "Stream": "number",
    "Start Time": "dateTime",
    "End Time": "dateTime",
    "System Notes": "multilineText",
    "Last Analyzed Log ID": "singleLineText",
}
OLD_CLIENT_RUN_RESULTS = {
    "Run ID": "singleLineText",
    "Client ID": "singleLineText",
    "Client Name": "singleLineText",
    "Status": "singleSelect",
    "Start Time": "dateTime",
    "End Time": "dateTime",
    "Profiles Examined for Scoring": "number",
    "Profiles Successfully Scored": "number",
    "Profile Scoring Tokens": "number",
    "Posts Examined for Scoring": "number",
    "Posts Successfully Scored": "number",
    "Post Scoring Tokens": "number",
    "Total Posts Harvested": "number",
    "System Notes": "multilineText",
    "Error Details": "multilineText",
    "Progress Log": "multilineText",
    "Total Tokens Used": "number",
}
#: The mapping docs/airtable.md gives for that base.
OLD_BASE_FIELD_NAMES: dict[str, Any] = {
    "Total Tokens": "Total Tokens Used",
    "Job Tracking": dict.fromkeys(
        (
            "Leads Processed",
            "Posts Processed",
            "Profiles Examined for Scoring",
            "Profiles Successfully Scored",
            "Total Posts Harvested",
            "Posts Examined for Scoring",
            "Posts Successfully Scored",
            "Profile Scoring Tokens",
            "Post Scoring Tokens",
            "Total Tokens",
            "Clients Processed",
            "Clients With Errors",
        )
    ),
}


@pytest.fixture
def old_base() -> Iterator[FakeAirtable]:
    """An emulator holding the replaced system's two tables (no rate limit)."""
    fake = FakeAirtable(API_KEY, rate_limit=None)
    fake.add_base(BASE_ID)
    fake.add_table(BASE_ID, JOBS, _fields(OLD_JOB_TRACKING))
    fake.add_table(BASE_ID, CLIENTS, _fields(OLD_CLIENT_RUN_RESULTS))
    with fake:
        yield fake


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """Apps publishing to a given emulator (SQLite in tmp_path unless told); closed after the test."""
    apps: list[Flask] = []

    def make(fake: FakeAirtable | None, *, specs: tuple[MetricSpec, ...] = (), **config: Any) -> Flask:
        app = Flask(f"base{len(apps)}", instance_path=str(tmp_path / "instance"))
        app.config.update(
            TESTING=True,
            JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
            JOBMETRICS_PROGRESS_INTERVAL=0,
            JOBMETRICS_AIRTABLE_RATE_LIMIT=1000,
            JOBMETRICS_AIRTABLE_TIMEOUT=(2, 2),
        )
        if fake is not None:
            app.config.update(airtable_config(fake))
        app.config.update(config)
        ext = JobMetrics()
        for spec in specs:
            ext.register_metric(spec)
        ext.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        get_state(app).service.close()


def run_job(app: Flask, clients: int, metrics: Callable[[int], dict[str, Any]]) -> None:
    ext = get_state(app).extension
    with app.app_context():
        ext.start_job(RUN)
        for i in range(clients):
            ext.complete_client_metrics(RUN, f"c{i:02d}", metrics(i))
        ext.complete_job_metrics(RUN)


# -- an existing base with other field names ----------------------------------------------


def test_field_names_rename_and_leave_out_fields_in_writes(
    make_app: AppFactory, old_base: FakeAirtable, caplog: pytest.LogCaptureFixture
) -> None:
    """The replaced system's base: tokens go to "Total Tokens Used", no aggregates in Job Tracking, no 422."""
    old_base.add_field(BASE_ID, CLIENTS, "Leads Processed", "number", _COUNT)
    old_base.add_field(BASE_ID, CLIENTS, "Posts Processed", "number", _COUNT)
    app = make_app(old_base, JOBMETRICS_AIRTABLE_FIELD_NAMES=OLD_BASE_FIELD_NAMES)
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run_job(app, 3, lambda i: {"Leads Processed": i + 1, "Total Tokens": 10 * i})
        report = get_state(app).extension.flush(timeout=30)
    assert (report.pending, report.dead) == (0, 0)
    rows = client_rows(old_base)
    assert {c: (r["Leads Processed"], r.get("Total Tokens Used", 0)) for c, r in rows.items()} == {
        "c00": (1, 0),
        "c01": (2, 10),
        "c02": (3, 20),
    }
    assert all("Total Tokens" not in r for r in rows.values())
    (job,) = [r["fields"] for r in old_base.records(BASE_ID, JOBS)]
    assert set(job) == {"Run ID", "Status", "Start Time", "End Time"}
    assert all(entry.status in (200, None) for entry in old_base.requests)
    assert not [r for r in caplog.records if "has no field" in r.getMessage()]


def test_check_and_init_honour_the_field_names(make_app: AppFactory, old_base: FakeAirtable) -> None:
    """`airtable check` on the replaced base asks only for two CRR fields; `init` creates just those."""
    app = make_app(old_base, JOBMETRICS_AIRTABLE_FIELD_NAMES=OLD_BASE_FIELD_NAMES)
    runner = app.test_cli_runner()
    before = runner.invoke(jobmetrics_cli, ["airtable", "check"])
    assert before.exit_code == 1, before.output
    assert f"{JOBS}: ok (5 fields)" in before.output
    assert f'{CLIENTS}: field "Leads Processed" missing (number)' in before.output
    assert f'{CLIENTS}: field "Posts Processed" missing (number)' in before.output
    assert "Missing: 2 field(s)." in before.output
    created = runner.invoke(jobmetrics_cli, ["airtable", "init"])
    assert created.exit_code == 0, created.output
    assert created.output.count("Created field") == 2
    after = runner.invoke(jobmetrics_cli, ["airtable", "check"])
    assert after.exit_code == 0, after.output
    names = [f["name"] for t in old_base.schema(BASE_ID)["tables"] for f in t["fields"]]
    assert "Total Tokens" not in names and names.count("Total Tokens Used") == 1


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"Total Tokes": "Total Tokens Used"},
            'Total Tokes\': is not one of our fields (did you mean "Total Tokens"?)',
        ),
        ({"Job Tracking": {"Client ID": "X"}}, "is not one of our fields in 'Job Tracking'"),
        ({"Jobs": {"Total Tokens": None}}, "is neither one of our fields nor a table"),
        ({"Run ID": None}, "is a merge key of its table"),
        ({"Total Tokens": "Leads Processed"}, "names two of our fields"),
        ({"Total Tokens": 7}, "each value must be a field name or None"),
        ({"Job Tracking": {"Status": {"x": "y"}}}, "each value must be a field name or None"),
    ],
)
def test_a_bad_field_name_mapping_fails_at_init_app(
    make_app: AppFactory, old_base: FakeAirtable, mapping: dict[str, Any], message: str
) -> None:
    """A mapping key that is not one of our fields (or a bad value) is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match="JOBMETRICS_AIRTABLE_FIELD_NAMES") as raised:
        make_app(old_base, JOBMETRICS_AIRTABLE_FIELD_NAMES=mapping)
    assert message in str(raised.value)


def test_a_bad_field_name_mapping_fails_with_publishing_off(make_app: AppFactory) -> None:
    """The mapping is checked even when Airtable publishing is off."""
    with pytest.raises(ConfigurationError, match='did you mean "Leads Processed"'):
        make_app(None, JOBMETRICS_AIRTABLE_FIELD_NAMES={"Leeds Processed": None})


# -- limits -------------------------------------------------------------------------------

FULL_RUN_LOG = MetricSpec("full_run_log", "Full Run Log", type="string", aggregate="last")


@pytest.fixture
def fake(fake_airtable_factory: Factory) -> FakeAirtable:
    """An emulator without rate limit whose Client Run Results also has a long-text "Full Run Log"
    (a field of the replaced system)."""
    emulator = fake_airtable_factory(rate_limit=None)
    emulator.add_field(BASE_ID, CLIENTS, "Full Run Log", "multilineText")
    return emulator


def test_a_text_over_the_cell_limit_is_sent_cut_with_its_newest_text(
    make_app: AppFactory, fake: FakeAirtable
) -> None:
    """A 150,000-character text lands as at most 100,000 characters: a cut mark, then its end."""
    app = make_app(fake, specs=(FULL_RUN_LOG,))
    text = "".join(f"line {n:06d}\n" for n in range(150_000 // 12)) + "the last line"
    run_job(app, 1, lambda i: {"Full Run Log": text})
    assert get_state(app).extension.flush(timeout=30).pending == 0
    landed = client_rows(fake)["c00"]["Full Run Log"]
    assert len(landed) <= LONG_TEXT_LIMIT
    assert landed.startswith("[… ") and landed.endswith("the last line")
    assert text.endswith(landed.split("\n", 1)[1])


def test_every_request_body_stays_within_the_payload_limit(make_app: AppFactory, fake: FakeAirtable) -> None:
    """Ten full cells of "é" (6 bytes each as JSON) go out in bodies under 2 MiB, every row whole."""
    app = make_app(fake, specs=(FULL_RUN_LOG,))
    run_job(app, 10, lambda i: {"Full Run Log": f"{i}" + "é" * (LONG_TEXT_LIMIT - 1)})
    assert get_state(app).extension.flush(timeout=30).pending == 0
    writes = [r for r in fake.requests if r.kind == "write" and r.path.endswith(CLIENTS)]
    assert all(r.status == 200 and len(json.dumps(r.json)) <= MAX_REQUEST_BYTES for r in writes)
    assert len(writes) > 1
    assert {
        c: r["Full Run Log"][0] + str(len(r["Full Run Log"])) for c, r in client_rows(fake).items()
    } == {f"c{i:02d}": f"{i}{LONG_TEXT_LIMIT}" for i in range(10)}


def test_a_record_too_large_for_one_request_has_its_longest_text_cut() -> None:
    """fit() cuts the longest text (newest kept, marked) until one request holds the record."""
    from flask_jobmetrics.airtable.targets import fit, request_bytes

    record = fit({"Run ID": "r", "Long": "a" * 5_000 + "end", "Short": "b" * 100}, budget=2_000)
    assert request_bytes([record]) <= 2_000
    assert record["Short"] == "b" * 100 and record["Run ID"] == "r"
    assert record["Long"].startswith("[… ") and record["Long"].endswith("aend")


# -- memory:// reads back in pages ---------------------------------------------------------


def test_a_thirty_client_run_is_read_back_with_one_request_per_table(
    make_app: AppFactory, fake_airtable_factory: Factory
) -> None:
    """After a restart, a memory store reads a 30-client run with one read per table, and adds to it."""
    fake = fake_airtable_factory(rate_limit=None)
    for _life in range(2):  # two lives of the process, each with an empty memory store
        app = make_app(fake, JOBMETRICS_STORE_URL="memory://")
        fake.reset_log()
        run_job(app, 30, lambda i: {"Leads Processed": i + 1})
        assert get_state(app).extension.flush(timeout=30).pending == 0
        get_state(app).service.close()
    assert fake.request_count(kind="read") == 2
    assert fake.request_count(kind="write") == 4
    assert {c: r["Leads Processed"] for c, r in client_rows(fake).items()} == {
        f"c{i:02d}": 2 * (i + 1) for i in range(30)
    }
    (job,) = [r["fields"] for r in fake.records(BASE_ID, JOBS)]
    assert job["Leads Processed"] == 2 * sum(range(1, 31))


# -- retries re-batched ---------------------------------------------------------------------


def client_write_statuses(app: Flask, fake: FakeAirtable, clients: int, fail: int, status: int) -> list[Any]:
    """Publish a job of ``clients`` whose first ``fail`` write requests get ``status``; every
    row must land, none dead. Returns the statuses of the Client Run Results writes."""
    fake.fail_next(fail, status=status, kind="write")
    run_job(app, clients, lambda i: {"Leads Processed": i})
    report = get_state(app).extension.flush(timeout=60)
    assert (report.pending, report.dead) == (0, 0)
    assert len(client_rows(fake)) == clients
    return [r.status for r in fake.requests if r.kind == "write" and r.path.endswith(CLIENTS)]


def test_rows_of_a_failed_request_are_retried_together(make_app: AppFactory, fake: FakeAirtable) -> None:
    """26 rows whose three first requests fail (503) cost three accepted client writes, not one per row."""
    statuses = client_write_statuses(make_app(fake), fake, 26, 3, 503)
    assert (statuses.count(503), statuses.count(200)) == (3, 3)


# -- flush publishes now, in every process ---------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL two apps share: an SQLite file, or the test's own prefix on the test Redis."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return f"sqlite:///{tmp_path}/shared.sqlite3"


def test_flush_without_the_lease_has_the_holder_publish_at_once(
    make_app: AppFactory, fake_airtable_factory: Factory, shared_store_url: str
) -> None:
    """Two apps on one store: a flush in the one without the lease gets a running row published."""
    fake = fake_airtable_factory(rate_limit=None)
    config = {"JOBMETRICS_PROGRESS_INTERVAL": 3600, "JOBMETRICS_STORE_URL": shared_store_url}
    holder, other = make_app(fake, **config), make_app(fake, **config)
    get_state(holder).extension.complete_client_metrics(RUN, "first", {"Leads Processed": 1})
    assert get_state(holder).extension.flush(timeout=20).pending == 0  # the holder has the lease
    get_state(other).extension.update_client_metrics(RUN, "second", {"Leads Processed": 2})
    report = get_state(other).extension.flush(timeout=20)
    assert (report.pending, report.published) == (0, 0)  # sent, and by the holder
    row = client_rows(fake)["second"]
    assert (row["Leads Processed"], row["Status"]) == (2, "Running")


def test_a_413_splits_the_batch_and_every_row_lands(make_app: AppFactory, fake: FakeAirtable) -> None:
    """A request refused as too large (413) is sent again in halves; no row is dead-lettered."""
    assert client_write_statuses(make_app(fake), fake, 10, 1, 413) == [413, 200, 200]
