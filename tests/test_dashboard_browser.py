"""The run page in a real browser (Debian's Chromium via Playwright) against a real server thread.

Skipped only when ``/usr/bin/chromium`` is missing outside CI; in CI (``CI`` set) it must run
(``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
    )

from flask import Flask  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from example_app import create_app, jobmetrics  # noqa: E402
from example_app.batch import score_client  # noqa: E402
from example_app.scoring import CLIENTS  # noqa: E402
from flask_jobmetrics.dashboard import views  # noqa: E402
from flask_jobmetrics.state import get_state  # noqa: E402

pytestmark = pytest.mark.slow  # a real browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 15_000

PROGRESS_AND_BARS = """([progress, bars]) =>
    document.getElementById('jm-progress-text')?.textContent === progress
    && document.querySelectorAll('#chart-tokens rect.bar').length === bars"""


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The example app with the dashboard on and an SQLite store in ``tmp_path``."""
    monkeypatch.setenv("EXAMPLE_APP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setattr(views, "REFRESH_INTERVAL_MS", 300)
    app = create_app(
        {
            "TESTING": True,
            "JOBMETRICS_STORE_URL": f"sqlite:///{tmp_path / 'jobmetrics.sqlite3'}",
            "JOBMETRICS_DASHBOARD": True,
        }
    )
    yield app
    get_state(app).service.close()


@pytest.fixture
def base_url(example: Flask) -> Iterator[str]:
    """The app served by a real threaded WSGI server on a free loopback port."""
    server = make_server("127.0.0.1", 0, example, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.fixture
def page() -> Iterator[Page]:
    """A headless Chromium page; JavaScript errors on it fail the test."""
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        new_page = context.new_page()
        new_page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield new_page
        context.close()
        browser.close()
    assert errors == []


def _score(app: Flask, run_id: str, clients: list[str]) -> None:
    with app.app_context():
        for client_id in clients:
            score_client(jobmetrics, run_id, client_id, CLIENTS[client_id])


def test_run_page_refreshes_itself_while_running_and_stops_when_finished(
    example: Flask, base_url: str, page: Page
) -> None:
    """While the job runs the page updates progress and charts in place; once finished the refresh stops."""
    names = list(CLIENTS)
    with example.app_context():
        run_id = jobmetrics.start_job(notes=f"Batch lead scoring for {len(names)} clients").run_id
        for client_id in names:  # every client is known (Running) from the start: "done / 12"
            jobmetrics.update_client_metrics(run_id, client_id, {})
    _score(example, run_id, names[:3])  # acme, Guy-Wilson, Dean-Hobin (no leads: no bar)

    page.goto(f"{base_url}/jobmetrics/runs/{run_id}")
    assert page.inner_text("#jm-progress-text") == "3 / 12"
    assert page.locator("#chart-tokens rect.bar").count() == 2
    assert page.get_attribute("html", "data-refresh-state") == "live"
    assert page.get_attribute("#jm-live", "data-refresh-ms") == "300"
    page.evaluate("() => { window.notReloaded = true; }")

    _score(example, run_id, names[3:6])  # globex, umbrella, hooli (no leads)
    page.wait_for_function(PROGRESS_AND_BARS, arg=["6 / 12", 4], timeout=WAIT_MS)
    assert page.get_attribute("#jm-progress", "value") == "6"
    assert page.inner_text("#jm-status") == "Running"
    assert page.evaluate("() => window.notReloaded") is True  # updated in place, not reloaded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-run-live.png"), full_page=True)

    _score(example, run_id, names[6:])  # initech fails at lead 50; the rest complete
    with example.app_context():
        jobmetrics.complete_job_metrics(run_id, notes="Completed batch scoring")
    page.wait_for_function(
        "() => document.documentElement.getAttribute('data-refresh-state') === 'stopped'", timeout=WAIT_MS
    )
    assert page.inner_text("#jm-status") == "Completed with Errors"
    assert page.inner_text("#jm-progress-text") == "12 / 12"
    assert page.locator("#chart-tokens rect.bar").count() == 10  # all but the two clients without leads
    assert page.locator("#chart-tokens rect.bar-failed").count() == 1
    assert page.locator("#jm-live[data-refresh-ms]").count() == 0
    assert page.inner_text("#client-initech td:nth-child(2)") == "Failed"
    assert page.evaluate("() => window.notReloaded") is True
    page.screenshot(path=str(ARTIFACTS / "dashboard-run.png"), full_page=True)


def test_runs_list_links_to_the_run_page(example: Flask, base_url: str, page: Page) -> None:
    """The runs list shows the finished run with its numbers and its ID opens the run page."""
    with example.app_context():
        run_id = jobmetrics.start_job().run_id
    _score(example, run_id, ["acme", "stark"])
    with example.app_context():
        jobmetrics.complete_job_metrics(run_id)
    page.goto(f"{base_url}/jobmetrics/")
    row = page.locator("#runs tbody tr").first
    assert row.locator("td").nth(1).inner_text() == "Completed"
    assert row.locator("td").nth(4).inner_text() == "2 / 2"
    assert row.locator("td").nth(7).inner_text() == "29,750"  # (108 + 11) scored leads x 250 tokens
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"))
    page.click(f"text={run_id}")
    page.wait_for_url(f"**/jobmetrics/runs/{run_id}")
    assert page.inner_text("#jm-progress-text") == "2 / 2"
