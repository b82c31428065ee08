"""``airtable/schema.py`` and ``flask jobmetrics airtable check|init`` (API.md §8, §9).

Against FakeAirtable over HTTP with the real pyairtable client.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import Result
from flask import Flask
from pyairtable import Api

from flask_jobmetrics import MetricSpec, register_metric
from flask_jobmetrics.airtable.fields import field_definitions
from flask_jobmetrics.airtable.schema import (
    AirtableSchemaError,
    TypeMismatch,
    check,
    init,
    make_api,
    read_tables,
    tables_for,
)
from flask_jobmetrics.cli import jobmetrics_cli
from flask_jobmetrics.config import read_settings
from flask_jobmetrics.models import Status
from flask_jobmetrics.schema import BUILTIN_METRICS
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

from .support import AppFactory, airtable_config

JOB = "Job Tracking"
CLIENT = "Client Run Results"
TABLES = {
    JOB: field_definitions(BUILTIN_METRICS, job=True),
    CLIENT: field_definitions(BUILTIN_METRICS, job=False),
}
FIVE = [s.value for s in Status]
DATETIME_UTC = {
    "dateFormat": {"name": "iso", "format": "YYYY-MM-DD"},
    "timeFormat": {"name": "24hour", "format": "HH:mm"},
    "timeZone": "utc",
}

Factory = Callable[..., FakeAirtable]


@pytest.fixture
def fake(fake_airtable_factory: Factory) -> FakeAirtable:
    """A started emulator with both tables complete and no rate limit."""
    return fake_airtable_factory(rate_limit=None)


@pytest.fixture
def empty() -> Iterator[FakeAirtable]:
    """A started emulator whose base has no table at all."""
    emulator = FakeAirtable(API_KEY, rate_limit=None)
    emulator.add_base(BASE_ID)
    with emulator:
        yield emulator


def api_for(emulator: FakeAirtable, key: str = API_KEY) -> Api:
    return Api(key, endpoint_url=emulator.url, retry_strategy=None)


def fields_of(emulator: FakeAirtable, table: str) -> dict[str, dict[str, Any]]:
    """Field name -> the field's schema JSON, in table order."""
    (found,) = [t for t in emulator.schema(BASE_ID)["tables"] if t["name"] == table]
    return {f["name"]: f for f in found["fields"]}


def posts(emulator: FakeAirtable) -> int:
    return emulator.request_count(method="POST")


# -- read_tables --------------------------------------------------------------------------


def test_read_tables_maps_each_table_to_its_field_types(fake: FakeAirtable) -> None:
    """read_tables gives table name -> {field name: type} for every table of the base."""
    tables = read_tables(api_for(fake), BASE_ID)
    assert set(tables) == {JOB, CLIENT}
    assert list(tables[JOB]) == list(TABLES[JOB])
    assert tables[JOB]["Status"] == "singleSelect"
    assert tables[JOB]["Start Time"] == "dateTime"
    assert tables[CLIENT]["Client ID"] == "singleLineText"
    assert tables[CLIENT]["Leads Processed"] == "number"


def test_read_tables_reports_a_refused_key(fake: FakeAirtable) -> None:
    """A wrong API key raises AirtableSchemaError with Airtable's 401 and a hint."""
    with pytest.raises(AirtableSchemaError) as caught:
        read_tables(api_for(fake, "keyWRONG"), BASE_ID)
    assert str(caught.value) == (
        f"Airtable refused to read the schema of base {BASE_ID}: HTTP 401 AUTHENTICATION_REQUIRED:"
        " Authentication required (check JOBMETRICS_AIRTABLE_API_KEY)"
    )


def test_read_tables_reports_an_unknown_base(fake: FakeAirtable) -> None:
    """An unknown base ID raises AirtableSchemaError with Airtable's 403 message."""
    with pytest.raises(AirtableSchemaError, match="HTTP 403 INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND: Invalid"):
        read_tables(api_for(fake), "appNOPE0000000000")


def test_read_tables_reports_an_unreachable_server(empty: FakeAirtable) -> None:
    """A server that is gone raises AirtableSchemaError saying Airtable is unreachable."""
    api = api_for(empty)
    empty.stop()
    with pytest.raises(AirtableSchemaError, match=r"^Airtable unreachable \(read the schema of base"):
        read_tables(api, BASE_ID)


def test_read_tables_reports_a_dropped_connection(fake: FakeAirtable) -> None:
    """A connection closed without an answer is reported as unreachable, not leaked."""
    fake.drop_next()
    with pytest.raises(AirtableSchemaError, match=r"unreachable.*ConnectionError"):
        read_tables(api_for(fake), BASE_ID)


# -- check --------------------------------------------------------------------------------


def test_check_on_a_complete_base_is_ok(fake: FakeAirtable) -> None:
    """Every table, field and Status choice present: ok, one line per table and a verdict."""
    report = check(api_for(fake), BASE_ID, TABLES)
    assert report.ok
    assert report.missing_tables == ()
    assert report.wrong_types == ()
    assert report.lines() == [
        f"Airtable base {BASE_ID}:",
        f"  {JOB}: ok ({len(TABLES[JOB])} fields)",
        f"  {CLIENT}: ok ({len(TABLES[CLIENT])} fields)",
        "OK: every table and field is present.",
    ]


def test_check_reports_a_missing_table_and_a_missing_field(fake_airtable_factory: Factory) -> None:
    """A table that is not there and a field removed from the other are both reported."""
    fake = fake_airtable_factory(rate_limit=None)
    fake.remove_field(BASE_ID, JOB, "Total Tokens")
    report = check(api_for(fake), BASE_ID, {**TABLES, "Extra Table": {"Run ID": {"type": "singleLineText"}}})
    assert not report.ok
    assert report.missing_tables == ("Extra Table",)
    assert report.missing_fields == {JOB: (("Total Tokens", "number"),)}
    lines = report.lines()
    assert f'  {JOB}: field "Total Tokens" missing (number)' in lines
    assert "  Extra Table: table missing (1 fields to create)" in lines
    assert lines[-1] == (
        "Missing: 1 table(s), 1 field(s). `flask jobmetrics airtable init` creates the tables and fields."
    )


def test_check_warns_about_a_field_of_another_type(fake: FakeAirtable) -> None:
    """A count stored as text and a Status that is not a single select are warnings, not failures."""
    fake.set_field_type(BASE_ID, CLIENT, "Leads Processed", "singleLineText")
    fake.set_field_type(BASE_ID, JOB, "Status", "singleLineText")
    report = check(api_for(fake), BASE_ID, TABLES)
    assert report.ok
    assert set(report.wrong_types) == {
        TypeMismatch(CLIENT, "Leads Processed", "singleLineText", "number"),
        TypeMismatch(JOB, "Status", "singleLineText", "singleSelect"),
    }
    lines = report.lines()
    assert (
        f'  {CLIENT}: field "Leads Processed" is singleLineText, we write number'
        " (warning: Airtable may refuse some values)"
    ) in lines
    assert lines[-1] == "OK: every table and field is present (2 warning(s))."
    assert [f"  {w}" for w in report.warnings] == [line for line in lines if "warning:" in line]


def test_check_reports_status_choices_that_are_missing(fake: FakeAirtable) -> None:
    """A single-select Status lacking some of our five choices makes the report not ok."""
    choices = {"choices": [{"name": "Running"}, {"name": "Completed"}, {"name": "Other"}]}
    fake.set_field_type(BASE_ID, JOB, "Status", "singleSelect", choices)
    report = check(api_for(fake), BASE_ID, TABLES)
    assert not report.ok
    assert report.missing_choices == {JOB: ("Failed", "No Leads To Score", "Completed with Errors")}
    assert (
        f'  {JOB}: field "Status" lacks the choices "Failed", "No Leads To Score", "Completed with Errors"'
    ) in report.lines()
    assert report.lines()[-1] == (
        'Missing: 3 Status choice(s). Add the choices to "Status" in Airtable (the API cannot).'
    )


def test_tables_for_uses_the_configured_table_names(tmp_path: Path) -> None:
    """tables_for maps the configured job and client table names to their field definitions."""
    config: dict[str, Any] = {
        "JOBMETRICS_AIRTABLE_JOB_TABLE": "Jobs",
        "JOBMETRICS_AIRTABLE_CLIENT_TABLE": "Clients",
    }
    settings = read_settings(config, str(tmp_path))
    assert tables_for(settings, BUILTIN_METRICS) == {"Jobs": TABLES[JOB], "Clients": TABLES[CLIENT]}


# -- init ---------------------------------------------------------------------------------


def test_init_on_an_empty_base_creates_both_tables_with_our_types(empty: FakeAirtable) -> None:
    """init creates both tables, Run ID primary, with the types the publisher writes."""
    done = init(api_for(empty), BASE_ID, TABLES)
    assert [line.split(" with ")[0] for line in done] == [
        f'Created table "{JOB}"',
        f'Created table "{CLIENT}"',
    ]
    for table in (JOB, CLIENT):
        fields = fields_of(empty, table)
        assert list(fields) == list(TABLES[table])
        assert next(iter(fields)) == "Run ID"
        status = fields["Status"]
        assert status["type"] == "singleSelect"
        assert [c["name"] for c in status["options"]["choices"]] == FIVE
        for count in ("Leads Processed", "Total Tokens"):
            assert fields[count]["type"] == "number"
            assert fields[count]["options"]["precision"] == 0
        for moment in ("Start Time", "End Time"):
            assert fields[moment]["type"] == "dateTime"
            assert fields[moment]["options"] == DATETIME_UTC
        assert fields["System Notes"]["type"] == "multilineText"
    assert fields_of(empty, CLIENT)["Client ID"]["type"] == "singleLineText"
    assert fields_of(empty, JOB)["Clients With Errors"]["options"] == {"precision": 0}
    assert check(api_for(empty), BASE_ID, TABLES).ok


def test_second_init_does_nothing(empty: FakeAirtable) -> None:
    """A second init finds everything and sends no write at all."""
    init(api_for(empty), BASE_ID, TABLES)
    before = posts(empty)
    assert init(api_for(empty), BASE_ID, TABLES) == []
    assert posts(empty) == before


def test_init_creates_only_a_removed_field(fake: FakeAirtable) -> None:
    """After one field is removed, init creates that field (same type) and nothing else."""
    fake.remove_field(BASE_ID, CLIENT, "Total Tokens")
    done = init(api_for(fake), BASE_ID, TABLES)
    assert done == [f'Created field "Total Tokens" (number) in "{CLIENT}"']
    assert posts(fake) == 1
    assert fields_of(fake, CLIENT)["Total Tokens"]["options"] == {"precision": 0}
    assert fields_of(fake, JOB).keys() == TABLES[JOB].keys()


def test_init_dry_run_changes_nothing(empty: FakeAirtable) -> None:
    """--dry-run says what it would create, sends only the schema read, and creates nothing."""
    done = init(api_for(empty), BASE_ID, TABLES, dry_run=True)
    assert [line.split(" with ")[0] for line in done] == [
        f'Would create table "{JOB}"',
        f'Would create table "{CLIENT}"',
    ]
    assert empty.schema(BASE_ID) == {"tables": []}
    assert posts(empty) == 0
    assert empty.request_count() == 1


def test_init_reports_status_choices_it_cannot_add(fake: FakeAirtable) -> None:
    """Missing Status choices are reported for a human to add; nothing is written."""
    fake.set_field_type(BASE_ID, CLIENT, "Status", "singleSelect", {"choices": [{"name": "Running"}]})
    done = init(api_for(fake), BASE_ID, TABLES)
    assert done == [
        'Cannot add the choices "Completed", "Failed", "No Leads To Score", "Completed with Errors"'
        f' to "Status" in "{CLIENT}": Airtable\'s API does not change a field\'s options;'
        " add them in Airtable"
    ]
    assert posts(fake) == 0


def test_init_paces_every_request(empty: FakeAirtable) -> None:
    """init calls ``pace`` once before each request it sends."""
    paced: list[int] = []
    init(api_for(empty), BASE_ID, TABLES, pace=lambda: paced.append(empty.request_count()))
    assert paced == [0, 1, 2]
    assert empty.request_count() == 3


def test_init_failure_keeps_what_was_done(empty: FakeAirtable) -> None:
    """A refused creation raises AirtableSchemaError listing what was created before it."""
    empty.add_table(BASE_ID, CLIENT, {"Run ID": "singleLineText"})
    tables = {JOB: TABLES[JOB], CLIENT: {"Run ID": {"type": "singleLineText"}, " ": {"type": "number"}}}
    with pytest.raises(AirtableSchemaError) as caught:
        init(api_for(empty), BASE_ID, tables)
    assert [line.split(" with ")[0] for line in caught.value.done] == [f'Created table "{JOB}"']
    assert str(caught.value).startswith(f'Airtable refused to create field " " in "{CLIENT}": HTTP 422 ')


# -- the commands -------------------------------------------------------------------------


@pytest.fixture
def make_app(make_app: AppFactory) -> AppFactory:
    """``make_app(emulator, **config)``: apps pointed at an emulator (None: Airtable off)."""

    def make(emulator: FakeAirtable | None, **config: Any) -> Flask:
        airtable: dict[str, Any] = {}
        if emulator is not None:
            airtable.update(airtable_config(emulator))
        return make_app(
            JOBMETRICS_PROGRESS_INTERVAL=0,
            JOBMETRICS_AIRTABLE_RATE_LIMIT=1000,  # the shared pacing must not slow the tests
            **{**airtable, **config},
        )

    return make


def run(flask_app: Flask, *args: str) -> Result:
    return flask_app.test_cli_runner().invoke(jobmetrics_cli, ["airtable", *args])


def test_cli_check_on_a_complete_base_exits_0(make_app: AppFactory, fake: FakeAirtable) -> None:
    """`airtable check` prints the report and exits 0 when nothing is missing."""
    result = run(make_app(fake), "check")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "OK: every table and field is present."


def test_cli_check_with_a_missing_field_exits_1(make_app: AppFactory, fake: FakeAirtable) -> None:
    """`airtable check` exits 1 with the report when a field is missing."""
    fake.remove_field(BASE_ID, JOB, "System Notes")
    result = run(make_app(fake), "check")
    assert result.exit_code == 1
    assert f'  {JOB}: field "System Notes" missing (multilineText)' in result.output.splitlines()
    assert result.output.splitlines()[-1].startswith("Missing: 1 field(s).")


def test_cli_init_creates_then_has_nothing_to_do(make_app: AppFactory, empty: FakeAirtable) -> None:
    """`airtable init` prints what it created; run again it says there is nothing to do."""
    flask_app = make_app(empty)
    result = run(flask_app, "init")
    assert result.exit_code == 0, result.output
    assert [line.split(" with ")[0] for line in result.output.splitlines()] == [
        f'Created table "{JOB}"',
        f'Created table "{CLIENT}"',
    ]
    again = run(flask_app, "init")
    assert again.exit_code == 0, again.output
    assert again.output == f"Nothing to do: base {BASE_ID} has every table and field.\n"
    assert run(flask_app, "check").exit_code == 0


def test_cli_init_dry_run_changes_nothing(make_app: AppFactory, fake: FakeAirtable) -> None:
    """`airtable init --dry-run` lists what it would create and leaves the base alone."""
    fake.remove_field(BASE_ID, JOB, "Clients Processed")
    result = run(make_app(fake), "init", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f'Would create field "Clients Processed" (number) in "{JOB}"',
        "Dry run: nothing was changed.",
    ]
    assert "Clients Processed" not in fields_of(fake, JOB)
    assert posts(fake) == 0


def test_cli_bad_api_key_is_one_line_exit_1(make_app: AppFactory, fake: FakeAirtable) -> None:
    """A key Airtable refuses: both commands exit 1 with one `Error: ...` line."""
    flask_app = make_app(fake, JOBMETRICS_AIRTABLE_API_KEY="keyWRONG")
    for command in ("check", "init"):
        result = run(flask_app, command)
        assert result.exit_code == 1
        assert result.output.splitlines() == [
            f"Error: Airtable refused to read the schema of base {BASE_ID}: HTTP 401"
            " AUTHENTICATION_REQUIRED: Authentication required (check JOBMETRICS_AIRTABLE_API_KEY)"
        ]


def test_cli_without_airtable_settings_says_publishing_is_off(make_app: AppFactory) -> None:
    """Without key and base ID, check and init exit 1 saying Airtable publishing is off."""
    flask_app = make_app(None)
    for command in ("check", "init"):
        result = run(flask_app, command)
        assert result.exit_code == 1
        assert result.output == (
            "Error: Airtable publishing is off"
            " (set JOBMETRICS_AIRTABLE_API_KEY and JOBMETRICS_AIRTABLE_BASE_ID).\n"
        )


def test_cli_includes_registered_metrics(make_app: AppFactory, fake: FakeAirtable) -> None:
    """A metric registered on the app is checked and created in both tables."""
    flask_app = make_app(fake)
    with flask_app.app_context():
        register_metric(MetricSpec(name="Emails Sent", field="Emails Sent", non_negative=True))
    result = run(flask_app, "check")
    assert result.exit_code == 1
    for table in (JOB, CLIENT):
        assert f'  {table}: field "Emails Sent" missing (number)' in result.output.splitlines()
    created = run(flask_app, "init")
    assert created.exit_code == 0, created.output
    assert created.output.splitlines() == [
        f'Created field "Emails Sent" (number) in "{JOB}"',
        f'Created field "Emails Sent" (number) in "{CLIENT}"',
    ]
    assert fields_of(fake, CLIENT)["Emails Sent"]["options"] == {"precision": 0}
    assert run(flask_app, "check").exit_code == 0


def test_make_api_follows_the_settings(tmp_path: Path) -> None:
    """make_api uses the key, endpoint and timeout from the settings, without retries."""
    config: dict[str, Any] = {
        "JOBMETRICS_AIRTABLE_API_KEY": "keyX",
        "JOBMETRICS_AIRTABLE_BASE_ID": BASE_ID,
        "JOBMETRICS_AIRTABLE_ENDPOINT_URL": "http://127.0.0.1:9",
        "JOBMETRICS_AIRTABLE_TIMEOUT": (2, 7),
    }
    api = make_api(read_settings(config, str(tmp_path)))
    assert api.api_key == "keyX"
    assert api.endpoint_url == "http://127.0.0.1:9"
    assert api.timeout == (2.0, 7.0)
    assert type(api.session) is requests.Session  # pyairtable's retrying session is not used


@pytest.mark.slow
def test_airtable_cli_module_imports_first() -> None:
    """Importing flask_jobmetrics.airtable.cli before flask_jobmetrics.cli works (no import cycle)."""
    code = (
        "import flask_jobmetrics.airtable.cli as a, flask_jobmetrics.cli as c;"
        "assert c.jobmetrics_cli.commands['airtable'] is a.airtable_cli;"
        "print(sorted(a.airtable_cli.commands))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['check', 'init']\n"


def test_check_and_init_know_the_error_and_journal_fields(make_app: AppFactory, fake: FakeAirtable) -> None:
    """A Client Run Results table without Error Details and Progress Log fails `check`, and
    `init` adds both as long-text fields."""
    for name in ("Error Details", "Progress Log"):
        fake.remove_field(BASE_ID, CLIENT, name)
    flask_app = make_app(fake)
    result = run(flask_app, "check")
    assert result.exit_code == 1
    for name in ("Error Details", "Progress Log"):
        assert f'  {CLIENT}: field "{name}" missing (multilineText)' in result.output.splitlines()
    assert run(flask_app, "init").exit_code == 0
    fields = fields_of(fake, CLIENT)
    assert fields["Error Details"]["type"] == fields["Progress Log"]["type"] == "multilineText"
    assert "Error Details" not in fields_of(fake, JOB)
    assert run(flask_app, "check").exit_code == 0
