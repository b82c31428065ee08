"""``flask jobmetrics ...`` (API.md §9): runs, show, flush, sweep, outbox, and error handling."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from flask.cli import ScriptInfo

from flask_jobmetrics import JobMetrics, Status
from flask_jobmetrics.cli import _table, jobmetrics_cli, parse_duration
from flask_jobmetrics.cli_progress import publish_with_progress
from flask_jobmetrics.formatting import span
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.state import get_state
from flask_jobmetrics.stores.sqlite import SQLiteStore
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import BASE_ID

from .support import START, AppFactory, Clock, airtable_config

OLD = "230615-120000"
NEW = "230616-120000"
CLI_APP = Path(__file__).with_name("cli_app.py")
REFUSED = '422 UNKNOWN_FIELD_NAME: Unknown field name: "Leads"'


@pytest.fixture
def svc(app: Flask, clock: Clock) -> MetricsService:
    """The app's service, on the test clock."""
    service = get_state(app).service
    service.clock = clock
    return service


def invoke(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(jobmetrics_cli, list(args))


def cells(line: str) -> list[str]:
    """The cells of one table line (columns are separated by two or more spaces)."""
    return re.split(r"\s{2,}", line.strip())


def row_of(output: str, first_cell: str) -> list[str]:
    """The cells of the table line that starts with ``first_cell``."""
    found = [cells(line) for line in output.splitlines() if line.startswith(first_cell + " ")]
    assert len(found) == 1, output
    return found[0]


def seed(service: MetricsService, clock: Clock) -> None:
    """OLD: two clients, finished after 1h 02m 03s, one failed. NEW: one client, still running."""
    service.start_job(OLD, notes="nightly scoring")
    acme = {"Leads Processed": 1200, "Profiles Examined": 1200, "Profiles Scored": 1180}
    acme["Total Tokens"] = 2_345_678
    beta = {"Leads Processed": 40, "Posts Harvested": 300, "Posts Examined": 250, "Total Tokens": 81_234}
    service.update_client_metrics(OLD, "acme", acme)
    service.update_client_metrics(OLD, "beta", beta)
    clock.advance(3723)
    service.complete_client_metrics(OLD, "acme")
    service.complete_client_metrics(OLD, "beta", success=False)
    service.complete_job_metrics(OLD)
    clock.now = START + timedelta(days=1)
    service.start_job(NEW)
    service.update_client_metrics(NEW, "acme", {"Leads Processed": 5})
    service.flush()
    clock.advance(90)


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [message], result.output
    assert "Traceback" not in result.output


# -- formatting -------------------------------------------------------------------------------


def test_table_aligns_columns_and_right_aligns_numbers() -> None:
    """_table pads every column to its widest cell and right-aligns columns of numbers."""
    text = _table(["NAME", "COUNT"], [["acme", "1,200"], ["beta-corp", "5"]])
    assert text.splitlines() == [
        "NAME       COUNT",
        "---------  -----",
        "acme       1,200",
        "beta-corp      5",
    ]


def test_sub_second_durations_show_tenths_or_milliseconds_not_zero() -> None:
    """Under a second a duration shows tenths, under a tenth milliseconds; only no time at all is 0s."""
    spans = [span(s) for s in (0, 0.0002, 0.0034, 0.0941, 0.096, 0.44, 0.999, 1.7)]
    assert spans == ["0s", "<1ms", "3ms", "94ms", "0.1s", "0.4s", "1s", "1s"]


def test_durations_are_formatted_and_parsed() -> None:
    """Durations print as 45s / 3m 05s / 1h 02m 03s; --older-than accepts s, m, h, d and sums."""
    assert [span(45), span(185), span(3723), span(2 * 86400 + 60)] == [
        "45s",
        "3m 05s",
        "1h 02m 03s",
        "2d 00h 01m 00s",
    ]
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    for bad in ("", "6", "6x", "h6", "0s", "-1h"):
        with pytest.raises(ValueError, match="--older-than"):
            parse_duration(bad)


# -- runs -------------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_figures(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`runs` shows one row per job, newest first, with status, times, client counts and totals."""
    seed(svc, clock)
    result = invoke(app, "runs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert cells(lines[0]) == [
        "RUN ID",
        "STATUS",
        "START (UTC)",
        "DURATION",
        "CLIENTS DONE",
        "FAILED",
        "LEADS",
        "TOKENS",
    ]
    assert [line.split()[0] for line in lines[2:]] == [NEW, OLD]
    assert row_of(result.output, NEW) == [
        "230616-120000",
        "Running",
        "2023-06-16 12:00:00",
        "1m 30s",
        "0/1",
        "0",
        "5",
        "0",
    ]
    assert row_of(result.output, OLD) == [
        "230615-120000",
        "Completed with Errors",
        "2023-06-15 12:00:00",
        "1h 02m 03s",
        "2/2",
        "1",
        "1,240",
        "2,426,912",
    ]


def test_runs_filters_by_status_and_limits(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`runs --status` keeps one status (aliases accepted) and `--limit` keeps the newest N."""
    seed(svc, clock)
    running = invoke(app, "runs", "--status", "running")
    assert running.exit_code == 0
    assert [line.split()[0] for line in running.output.splitlines()[2:]] == [NEW]
    limited = invoke(app, "runs", "--limit", "1")
    assert [line.split()[0] for line in limited.output.splitlines()[2:]] == [NEW]
    assert invoke(app, "runs", "--status", "Failed").output == "No job runs.\n"


def test_runs_with_an_unknown_status_fails_in_one_line(app: Flask) -> None:
    """An unknown --status exits 1 with a one-line error naming the option."""
    result = invoke(app, "runs", "--status", "bogus")
    assert_one_line_error(result, "Error: --status: 'bogus' is not a known status")


def test_runs_without_jobs_says_so(app: Flask) -> None:
    """With no job runs, `runs` says so instead of printing an empty table."""
    result = invoke(app, "runs")
    assert (result.exit_code, result.output) == (0, "No job runs.\n")


# -- show -------------------------------------------------------------------------------------


def test_show_prints_the_job_and_its_client_rows(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`show RUN_ID` prints status, times, notes, aggregates and one row per client."""
    seed(svc, clock)
    result = invoke(app, "show", OLD)
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "Run:       230615-120000",
        "Status:    Completed with Errors",
        "Start:     2023-06-15 12:00:00 UTC",
        "End:       2023-06-15 13:02:03 UTC",
        "Duration:  1h 02m 03s",
        "Notes:     nightly scoring",
        "Client runs (2):",
    ):
        assert expected in out.splitlines(), out
    block = out.split("Aggregates:\n")[1].split("\n\n")[0]
    aggregates = dict(cells(line) for line in block.splitlines())
    assert aggregates["Total Tokens"] == "2,426,912"
    assert aggregates["Leads Processed"] == "1,240"
    assert aggregates["Clients Processed"] == "2"
    assert aggregates["Clients With Errors"] == "1"
    assert row_of(out, "acme") == [
        "acme",
        "Completed",
        "2023-06-15 12:00:00",
        "1h 02m 03s",
        "1,200",
        "1,200",
        "1,180",
        "0",
        "0",
        "0",
        "2,345,678",
    ]
    assert row_of(out, "beta") == [
        "beta",
        "Failed",
        "2023-06-15 12:00:00",
        "1h 02m 03s",
        "40",
        "0",
        "0",
        "300",
        "250",
        "0",
        "81,234",
    ]


def test_show_trims_long_client_notes(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """A client still running when its job completed shows its System Notes trimmed to one short line."""
    svc.update_client_metrics(OLD, "acme", {"Leads Processed": 1})
    svc.complete_job_metrics(OLD)
    notes = row_of(invoke(app, "show", OLD).output, "acme")[-1]
    assert notes.startswith("Still running when job 230615-120000")
    assert notes.endswith("...")
    assert len(notes) == 40


def test_show_accepts_the_client_form_of_a_run_id(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`show <base>-<client>` shows the job of that base run ID."""
    seed(svc, clock)
    result = invoke(app, "show", f"{OLD}-acme")
    assert result.exit_code == 0
    assert f"Run:       {OLD}" in result.output


def test_show_unknown_run_exits_1_in_one_line(app: Flask) -> None:
    """`show` of a run that does not exist exits 1 with `Error: no job run '...'`."""
    assert_one_line_error(invoke(app, "show", "230615-120001"), "Error: no job run '230615-120001'")


def test_show_malformed_run_id_exits_1_with_the_parse_error(app: Flask) -> None:
    """`show` of a malformed run ID exits 1 with the InvalidRunIdError message."""
    assert_one_line_error(
        invoke(app, "show", "yesterday"),
        "Error: run ID 'yesterday' is not of the form YYMMDD-HHMMSS or YYMMDD-HHMMSS-<client_id>",
    )


# -- flush ------------------------------------------------------------------------------------


def test_flush_merges_the_buffer_and_prints_the_report(app: Flask, svc: MetricsService) -> None:
    """`flush` merges the buffer into the store, prints the report, and says when Airtable is off."""
    svc.update_client_metrics(OLD, "acme", {"Leads Processed": 7})
    assert svc.store.get_client(OLD, "acme") is None
    result = invoke(app, "flush", "--timeout", "0")
    assert result.exit_code == 0, result.output
    assert [cells(line)[:2] for line in result.output.splitlines()] == [
        ["Flushed:", "1 buffered entries reached the store"],
        ["Published:", "0 rows"],
        ["Pending:", "0 rows still waiting in the outbox"],
        ["Dead:", "0 rows in the dead letters"],
        ["Airtable publishing is off (set JOBMETRICS_AIRTABLE_API_KEY and JOBMETRICS_AIRTABLE_BASE_ID)."],
    ]
    stored = svc.store.get_client(OLD, "acme")
    assert stored is not None
    assert stored.fields["Leads Processed"] == 7


# -- sweep ------------------------------------------------------------------------------------


def start_jobs(svc: MetricsService, clock: Clock) -> None:
    """Two Running jobs 7h old, a finished one 7h old, and a Running one 1h old."""
    for run in ("230615-120000", "230615-120001", "230615-120002"):
        svc.start_job(run)
    svc.complete_job_metrics("230615-120002")
    clock.advance(6 * 3600)
    svc.start_job("230615-180000")
    clock.advance(3600)


def test_sweep_closes_only_old_running_jobs_as_failed(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`sweep --older-than 6h` closes Running jobs started over 6h ago as Failed, with a note."""
    start_jobs(svc, clock)
    result = invoke(app, "sweep", "--older-than", "6h")
    assert result.exit_code == 0, result.output
    assert "Closed 2 job run(s) as Failed:" in result.output
    assert row_of(result.output, "230615-120000") == [
        "230615-120000",
        "2023-06-15 12:00:00",
        "7h 00m 00s",
        "0",
    ]
    assert row_of(result.output, "230615-120001")[0] == "230615-120001"
    for run in ("230615-120000", "230615-120001"):
        job = svc.get_job_run(run)
        assert job is not None
        assert job.status is Status.FAILED
        assert job.notes == "Closed by sweep: still running after 6h"
        assert job.end_time == clock()
    finished, young = svc.get_job_run("230615-120002"), svc.get_job_run("230615-180000")
    assert finished is not None
    assert finished.status is Status.COMPLETED
    assert finished.notes == ""
    assert young is not None
    assert young.status is Status.RUNNING
    assert "230615-180000" not in result.output


def test_sweep_counts_the_clients_it_closes_instead_of_logging_each(
    app: Flask, svc: MetricsService, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """`sweep` reports the client runs it closed per job and holds back their log lines; -v keeps them."""
    svc.start_job(OLD)
    for client in ("acme", "beta", "gamma"):
        svc.update_client_metrics(OLD, client, {"Leads Processed": 1})
    svc.flush()
    clock.advance(7 * 3600)
    caplog.set_level("WARNING", logger="flask_jobmetrics")
    result = invoke(app, "sweep", "--older-than", "6h")
    assert result.exit_code == 0, result.output
    assert row_of(result.output, OLD)[-1] == "3"
    assert "3 log lines held back; -v shows them" in result.output
    assert not [r for r in caplog.records if "closed as Failed" in r.getMessage()]

    svc.start_job(NEW)
    svc.update_client_metrics(NEW, "acme", {"Leads Processed": 1})
    svc.flush()
    clock.advance(7 * 3600)
    result = invoke(app, "sweep", "--older-than", "6h", "-v")
    assert row_of(result.output, NEW)[-1] == "1"
    assert "held back" not in result.output
    assert len([r for r in caplog.records if "closed as Failed" in r.getMessage()]) == 1


def test_sweep_dry_run_lists_without_changing(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`sweep --dry-run` lists the jobs it would close and leaves them Running."""
    start_jobs(svc, clock)
    result = invoke(app, "sweep", "--older-than", "6h", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Would close 2 job run(s) as Failed (dry run, nothing changed):" in result.output
    assert {line.split()[0] for line in result.output.splitlines()[3:]} == {"230615-120000", "230615-120001"}
    for run in ("230615-120000", "230615-120001", "230615-180000"):
        job = svc.get_job_run(run)
        assert job is not None
        assert job.status is Status.RUNNING
        assert job.end_time is None


def test_sweep_with_nothing_old_enough_changes_nothing(app: Flask, svc: MetricsService, clock: Clock) -> None:
    """`sweep` with no Running job older than the cutoff says so and closes nothing."""
    start_jobs(svc, clock)
    result = invoke(app, "sweep", "--older-than", "2d")
    assert result.exit_code == 0
    assert result.output == "No Running job runs started before 2023-06-13 19:00:00 UTC.\n"
    assert [j.run_id for j in svc.list_job_runs(status=Status.RUNNING)] == [
        "230615-180000",
        "230615-120001",
        "230615-120000",
    ]


def test_sweep_needs_a_valid_duration(app: Flask) -> None:
    """`sweep` without --older-than is a usage error; a bad duration exits 1 in one line."""
    assert invoke(app, "sweep").exit_code == 2
    assert_one_line_error(
        invoke(app, "sweep", "--older-than", "6 hours"),
        "Error: --older-than: '6 hours' is not a duration like 90s, 30m, 6h or 2d",
    )


# -- outbox -----------------------------------------------------------------------------------


def make_dead_letter(svc: MetricsService) -> None:
    """One job row pending and its client row dead-lettered after a 422 (queued as with publishing on)."""
    svc.store.outbox = True
    svc.update_client_metrics(OLD, "acme", {"Leads Processed": 1})
    svc.flush()
    item = next(i for i in svc.store.outbox_due(time.time(), 10) if i.kind == "client")
    svc.store.outbox_retry(item, due_at=0, error=REFUSED, dead=True)


def test_outbox_shows_counts_and_dead_entries(app: Flask, svc: MetricsService) -> None:
    """`outbox` prints the pending and dead-letter counts and one row per dead entry."""
    make_dead_letter(svc)
    result = invoke(app, "outbox")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["Pending:       1", "Dead letters:  1"]
    assert cells(lines[3]) == ["KIND", "RUN", "CLIENT", "ATTEMPTS", "LAST ERROR"]
    assert row_of(result.output, "client") == [
        "client",
        OLD,
        "acme",
        "1",
        REFUSED,
    ]
    assert svc.store.outbox_counts() == (1, 1)


def test_flush_and_outbox_report_the_same_pending_count(app: Flask, svc: MetricsService) -> None:
    """With publishing off, `flush` reports the entries `outbox` shows (queued earlier), not 0."""
    make_dead_letter(svc)
    flushed, shown = invoke(app, "flush"), invoke(app, "outbox")
    assert "Pending:    1 rows still waiting in the outbox" in flushed.output
    assert "Dead:       1 rows in the dead letters" in flushed.output
    assert shown.output.splitlines()[:2] == ["Pending:       1", "Dead letters:  1"]


def test_with_publishing_off_nothing_is_queued(app: Flask, svc: MetricsService) -> None:
    """Airtable publishing off: updates, completions and jobs leave the outbox empty."""
    assert svc.store.outbox is False
    svc.start_job(OLD)
    svc.update_client_metrics(OLD, "acme", {"Leads Processed": 1})
    svc.complete_client_metrics(OLD, "acme")
    svc.complete_job_metrics(OLD)
    assert svc.store.outbox_counts() == (0, 0)
    assert "Pending:       0" in invoke(app, "outbox").output


def test_outbox_retry_dead_revives_them(app: Flask, svc: MetricsService) -> None:
    """`outbox --retry-dead` makes every dead entry pending again and says how many."""
    make_dead_letter(svc)
    result = invoke(app, "outbox", "--retry-dead")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Revived 1 dead-letter entries; they are pending again.",
        "Pending:       2",
        "Dead letters:  0",
    ]
    assert svc.store.outbox_counts() == (2, 0)
    assert svc.store.outbox_dead() == []


# -- store failures and the real `flask` executable ----------------------------------------------


def test_store_that_cannot_be_opened_is_one_line_exit_1(tmp_path: Path) -> None:
    """An SQLite path whose parent is a file: the command exits 1 with `Error: store unreachable: ...`."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    def create_app() -> Flask:
        broken = Flask("broken", instance_path=str(tmp_path / "instance"))
        broken.config["JOBMETRICS_STORE_URL"] = f"sqlite:///{blocker}/jobmetrics.sqlite3"
        JobMetrics(broken)
        return broken

    runner = Flask("unused").test_cli_runner()
    result = runner.invoke(jobmetrics_cli, ["runs"], obj=ScriptInfo(create_app=create_app))
    assert result.exit_code == 1, result.output
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: store unreachable: sqlite store {blocker}/jobmetrics.sqlite3:")


def test_store_failing_during_a_command_is_one_line_exit_1(tmp_path: Path) -> None:
    """A store that fails mid-command (its tables are gone) exits 1 with `Error: store unreachable: ...`."""
    path = tmp_path / "jobmetrics.sqlite3"
    flask_app = Flask("failing", instance_path=str(tmp_path / "instance"))
    flask_app.config["JOBMETRICS_STORE_URL"] = f"sqlite:///{path}"
    ext = JobMetrics(flask_app)
    try:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE jobs")
        result = invoke(flask_app, "runs")
        assert result.exit_code == 1, result.output
        assert len(result.output.splitlines()) == 1
        assert result.output.startswith("Error: store unreachable: sqlite store")
        assert "no such table: jobs" in result.output
    finally:
        ext.state(flask_app).service.close()


def run_flask(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``flask --app tests/cli_app.py jobmetrics ARGS`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env["FLASK_JOBMETRICS_STORE_URL"] = store_url
    flask = Path(sys.executable).with_name("flask")
    return subprocess.run(
        [str(flask), "--app", str(CLI_APP), "jobmetrics", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_flask_executable_finds_the_command_through_the_entry_point(tmp_path: Path, clock: Clock) -> None:
    """The installed `flask` executable runs `jobmetrics runs` against an SQLite file."""
    url = f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}"
    service = MetricsService(SQLiteStore(url), clock=clock)
    try:
        seed(service, clock)
    finally:
        service.close()
    proc = run_flask(url, "runs")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:]] == [NEW, OLD]
    assert "Completed with Errors" in row_of(proc.stdout, OLD)


@pytest.mark.slow
def test_flask_executable_reports_an_unreachable_store_without_traceback(tmp_path: Path) -> None:
    """`flask ... jobmetrics runs` with an unusable SQLite path exits 1 with one error line
    (after the one line the app logs when it starts without its store)."""
    (tmp_path / "a-file").write_text("")
    proc = run_flask(f"sqlite:///{tmp_path / 'a-file' / 'jobmetrics.sqlite3'}", "runs")
    assert proc.returncode == 1
    assert proc.stdout == ""
    started, error = proc.stderr.splitlines()
    assert "cannot be reached at start-up" in started
    assert error.startswith("Error: store unreachable: sqlite store ")
    assert "Traceback" not in proc.stderr


def test_the_group_is_on_app_cli_for_the_apps_own_tests(
    app: Flask, svc: MetricsService, clock: Clock
) -> None:
    """`app.test_cli_runner().invoke(args=["jobmetrics", "runs"])` finds the group on `app.cli`."""
    seed(svc, clock)
    result = app.test_cli_runner().invoke(args=["jobmetrics", "runs"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[2:]] == [NEW, OLD]


# -- flush progress -----------------------------------------------------------------------------


class _Terminal(io.StringIO):
    """Captured output that says it is a terminal, so click draws its progress bar."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def airtable_app(make_app: AppFactory, fake_airtable: FakeAirtable) -> Flask:
    """An app on the memory store publishing to ``fake_airtable`` (running rows wait for completion)."""
    return make_app(
        **airtable_config(fake_airtable),
        JOBMETRICS_PROGRESS_INTERVAL=0,
    )


def _completed_clients(service: MetricsService, count: int) -> str:
    run = service.start_job().run_id
    for i in range(count):
        service.complete_client_metrics(run, f"client-{i:02d}", {"Leads Processed": i + 1})
    service.complete_job_metrics(run)
    return run


def test_flush_progress_shows_rows_sent_and_pending_on_a_terminal(
    airtable_app: Flask, fake_airtable: FakeAirtable
) -> None:
    """On a terminal, flush draws a bar with rows sent / pending and requests left, then reports."""
    service = get_state(airtable_app).service
    with airtable_app.app_context():
        _completed_clients(service, 25)
        terminal = _Terminal()
        report = publish_with_progress(service, 30, terminal)
    assert report.pending == 0
    drawn = terminal.getvalue()
    assert "Publishing  [" in drawn
    sent = re.findall(r"(\d+) sent · 0 pending · ~0 requests left", drawn)  # the background sender may
    assert sent and int(sent[-1]) >= report.published  # have sent some before the bar started
    assert len(fake_airtable.records(BASE_ID, "Client Run Results")) == 25


def test_flush_stays_quiet_in_a_pipe(airtable_app: Flask, fake_airtable: FakeAirtable) -> None:
    """Piped (not a terminal), flush prints only its report: no progress bar."""
    with airtable_app.app_context():
        _completed_clients(get_state(airtable_app).service, 3)
    result = invoke(airtable_app, "flush", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == "Published:  4 rows"
    assert "Publishing" not in result.output and "requests left" not in result.output
