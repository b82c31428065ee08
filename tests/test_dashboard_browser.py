"""The dashboard in a real browser (Debian's Chromium via Playwright) against a real server thread.

The example app's twelve clients, and a generated run of 300 clients with failures at 1366 and
390 px wide, light and dark. Screenshots and the run page's weight and height are kept in
``test-artifacts/`` (CI keeps that folder). Skipped only when ``/usr/bin/chromium`` is missing
outside CI; in CI (``CI`` set) it must run (``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True
    )

from flask import Flask  # noqa: E402
from playwright.sync_api import Browser, Page, Response, sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from example_app import create_app, jobmetrics  # noqa: E402
from example_app.batch import score_client  # noqa: E402
from example_app.scoring import CLIENTS  # noqa: E402
from flask_jobmetrics.dashboard import views  # noqa: E402
from flask_jobmetrics.service import MetricsService  # noqa: E402
from flask_jobmetrics.state import get_state  # noqa: E402

from .big_run import ERROR, client_ids, expected_failures, score  # noqa: E402
from .support import AppFactory  # noqa: E402

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
WAIT_MS = 20_000
CLIENTS_IN_BIG_RUN = 300
WIDTHS = (1366, 390)
SCHEMES = ("light", "dark")

PROGRESS_AND_BARS = """([progress, bars]) =>
    document.getElementById('jm-progress-text')?.textContent === progress
    && document.querySelectorAll('#chart-tokens rect.bar').length === bars"""
NO_OVERFLOW = "() => document.documentElement.scrollWidth <= window.innerWidth"
TABLE_READY = "() => document.querySelector('#jm-shown')?.textContent.includes('clients')"


def _shot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


@contextmanager
def _served(app: Flask) -> Iterator[str]:
    """``app`` served by a real threaded WSGI server on a free loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


PageFactory = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[PageFactory]:
    """New pages at a width and colour scheme; a JavaScript error on any of them fails the test."""
    errors: list[str] = []
    contexts = []

    def make(width: int = 1366, scheme: str = "light") -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)  # type: ignore[arg-type]
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == []


# -- the example app's twelve clients ----------------------------------------------------------------


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
    with _served(example) as url:
        yield url


def _score(app: Flask, run_id: str, clients: list[str]) -> None:
    with app.app_context():
        for client_id in clients:
            score_client(jobmetrics, run_id, client_id, CLIENTS[client_id])


def test_run_page_refreshes_itself_while_running_and_stops_when_finished(
    example: Flask, base_url: str, open_page: PageFactory
) -> None:
    """While the job runs the page updates progress and charts in place; once finished the refresh stops."""
    page = open_page(1400)
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
    assert page.get_attribute("#jm-summary", "data-refresh-ms") == "300"
    page.evaluate("() => { window.notReloaded = true; }")

    _score(example, run_id, names[3:6])  # globex, umbrella, hooli (no leads)
    page.wait_for_function(PROGRESS_AND_BARS, arg=["6 / 12", 4], timeout=WAIT_MS)
    assert page.get_attribute("#jm-progress", "value") == "6"
    assert page.inner_text("#jm-status") == "Running"
    assert page.evaluate("() => window.notReloaded") is True  # updated in place, not reloaded
    _shot(page, "dashboard-run-live.png")

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
    assert page.locator("#jm-summary[data-refresh-ms]").count() == 0
    page.wait_for_function("() => document.querySelector('#clients tbody tr')?.id === 'client-initech'")
    assert page.inner_text("#client-initech td.status .badge") == "Failed"  # failed first
    assert page.evaluate("() => window.notReloaded") is True
    _shot(page, "dashboard-run.png")


def test_runs_list_links_to_the_run_page(example: Flask, base_url: str, open_page: PageFactory) -> None:
    """The runs list shows the finished run with its numbers and its ID opens the run page."""
    page = open_page(1400)
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
    _shot(page, "dashboard-runs.png", full_page=False)
    page.click(f"#runs >> text={run_id}")
    page.wait_for_url(f"**/jobmetrics/runs/{run_id}")
    assert page.inner_text("#jm-progress-text") == "2 / 2"


# -- a generated run of 300 clients ------------------------------------------------------------------


def _big_app(make_app: AppFactory, tmp_path: Path, **config: Any) -> Flask:
    """A dashboard app on an SQLite file."""
    return make_app(
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path / 'big.sqlite3'}", JOBMETRICS_DASHBOARD=True, **config
    )


@pytest.fixture
def big(
    make_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Flask, MetricsService]:
    """An app (SQLite store) whose dashboard refreshes every 300 ms, and its service."""
    monkeypatch.setattr(views, "REFRESH_INTERVAL_MS", 300)
    app = _big_app(make_app, tmp_path)
    return app, get_state(app).service


def _finished_runs(service: MetricsService, runs: int = 6) -> str:
    """``runs`` finished runs of growing size, the last with all 300 clients; returns its ID."""
    ids = client_ids(CLIENTS_IN_BIG_RUN)
    run = ""
    for k in range(runs):
        size = CLIENTS_IN_BIG_RUN if k == runs - 1 else 60 + 40 * k
        run = service.start_job(notes=f"Nightly scoring, batch {k + 1}").run_id
        score(service, run, ids[:size], offset=k)
        service.complete_job_metrics(run, notes="done")
    return run


def _rows(page: Page) -> list[dict[str, str]]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#clients tbody tr')).map(tr => ({
            id: tr.id.slice(7), status: tr.dataset.status,
            tokens: tr.children[tr.children.length - 2].textContent}))"""
    )


def _tokens(text: str) -> int:
    return int(text.replace(",", ""))


def test_big_run_page_sorts_filters_searches_and_pages(
    big: tuple[Flask, MetricsService], open_page: PageFactory
) -> None:
    """300 clients: failed first; sort by tokens both ways; filter Failed; search; page on; client link."""
    app, service = big
    run = _finished_runs(service, runs=1)
    failed = expected_failures(client_ids(CLIENTS_IN_BIG_RUN))
    with _served(app) as url:
        page = open_page(1366)
        page.goto(f"{url}/jobmetrics/runs/{run}")
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)
        rows = _rows(page)
        assert len(rows) == 100
        assert [r["id"] for r in rows[: len(failed)]] == sorted(failed, key=str.casefold)
        assert page.inner_text("#jm-pager span") == "1\N{EN DASH}100 of 300 · page 1 of 3"

        page.click("#clients thead th[data-field='Total Tokens'] button")
        tokens = [_tokens(r["tokens"]) for r in _rows(page)]
        assert tokens == sorted(tokens, reverse=True)
        assert page.get_attribute("#clients thead th[data-field='Total Tokens']", "aria-sort") == "descending"
        page.click("#clients thead th[data-field='Total Tokens'] button")
        tokens = [_tokens(r["tokens"]) for r in _rows(page)]
        assert tokens == sorted(tokens) and tokens[0] == 0
        assert "sort=m%3ATotal+Tokens" in page.url and "dir=asc" in page.url
        _shot(page, "dashboard-300-sorted-1366-light.png", full_page=False)

        page.click("#jm-status-filter button[data-status='Failed']")
        rows = _rows(page)
        assert {r["status"] for r in rows} == {"Failed"} and len(rows) == len(failed)
        assert page.inner_text("#jm-shown") == f"{len(failed)} of 300 clients"
        assert page.is_hidden("#jm-pager")

        page.click("#jm-status-filter button[data-status='']")
        matching = [c for c in client_ids(CLIENTS_IN_BIG_RUN) if "holdings-1" in c.casefold()]
        page.fill("#jm-search", "holdings-1")
        page.wait_for_function(
            "(n) => document.querySelectorAll('#clients tbody tr').length === n", arg=len(matching)
        )
        assert sorted(r["id"] for r in _rows(page)) == sorted(matching)
        _shot(page, "dashboard-300-search-1366-light.png", full_page=False)

        page.fill("#jm-search", "")
        page.wait_for_function("() => document.querySelectorAll('#clients tbody tr').length === 100")
        page.click("#jm-pager button[data-rel='next']")
        assert page.inner_text("#jm-pager span") == "101\N{EN DASH}200 of 300 · page 2 of 3"

        target = _rows(page)[0]["id"]
        page.click(f"#client-{target} th a")
        page.wait_for_url(f"**/jobmetrics/clients/{target}")
        assert page.locator("#client-runs tbody tr").count() == 1
        assert page.locator("#client-tokens rect.col").count() == 1
        page.click(f"#client-runs a[href$='{run}-{target}']")  # back to the run, at the client's row
        page.wait_for_function(
            "(id) => document.querySelector('tr.is-target')?.id === id", arg=f"client-{target}"
        )
        assert page.inner_text("#jm-pager span").startswith("101\N{EN DASH}200")


def test_big_run_page_tells_long_names_apart_and_shows_errors_once(
    big: tuple[Flask, MetricsService], open_page: PageFactory
) -> None:
    """Long client IDs lose their middle and stay in their cell on hover (the whole ID in the title
    and the link); an error is in its column and the details below; durations match the client
    page's; the client page shows each run's log."""
    app, service = big
    run = _finished_runs(service, runs=1)
    long_failed = next(c for c in expected_failures(client_ids(CLIENTS_IN_BIG_RUN)) if c.startswith("A-Very"))
    with _served(app) as url:
        page = open_page(1366)
        page.goto(f"{url}/jobmetrics/runs/{run}")
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)
        names = page.eval_on_selector_all(
            "#clients tbody th.client a", "links => links.map(a => a.innerText)"
        )
        long_names = [n for n in names if "\N{HORIZONTAL ELLIPSIS}" in n]
        assert long_names and len(set(long_names)) == len(long_names)
        link = page.locator(f"#client-{long_failed} th.client a")
        assert link.get_attribute("title") == long_failed
        assert link.get_attribute("href", timeout=WAIT_MS).endswith(f"/jobmetrics/clients/{long_failed}")
        assert link.get_attribute("aria-label") == long_failed
        row = page.locator(f"#client-{long_failed}")
        link.hover()
        assert "\N{HORIZONTAL ELLIPSIS}" in link.inner_text()  # hovered, it stays inside its cell
        name_box = row.locator("th.client").bounding_box()
        badge_box = row.locator("td.status .badge").bounding_box()
        assert name_box is not None and badge_box is not None
        assert name_box["x"] + name_box["width"] <= badge_box["x"]
        badge_seen = page.evaluate(
            "([x, y]) => !!document.elementFromPoint(x, y).closest('.badge')",
            [badge_box["x"] + badge_box["width"] / 2, badge_box["y"] + badge_box["height"] / 2],
        )
        assert badge_seen  # nothing drawn over the badge
        assert row.locator("td.error").get_attribute("title") == ERROR
        assert row.locator("td.status .reason").count() == 0  # not repeated under the status
        details = page.locator(f"#details-{long_failed}")
        assert ERROR in details.locator("pre.error").inner_text()
        assert "fetched" in details.locator("pre.log").inner_text()
        assert page.evaluate(NO_OVERFLOW)
        durations = page.eval_on_selector_all(
            "#clients tbody tr",
            "rows => Object.fromEntries(rows.map(r => [r.id.slice(7), r.children[4].innerText]))",
        )
        assert durations[long_failed] != "0s"  # reported, then closed: a sub-second span, not nothing
        page.evaluate(f"() => document.getElementById('details-{long_failed}').scrollIntoView()")
        _shot(page, "dashboard-300-details-1366-light.png", full_page=False)

        page.goto(f"{url}/jobmetrics/clients/{long_failed}")
        history = page.locator(f"#run-{run}")
        assert history.locator("td.error").get_attribute("title") == ERROR
        assert history.locator("td").nth(3).inner_text() == durations[long_failed]  # server and script agree
        assert "fetched" in page.locator(f"#details-{run} pre.log").inner_text()
        assert page.get_attribute(f"#details-{run}", "open") is not None


DETAILS_ORDER = (
    "() => Array.from(document.querySelectorAll('#jm-details-list > details')).map(d => d.id.slice(8))"
)


def test_big_run_details_follow_the_tables_sort_and_load_when_opened(
    big: tuple[Flask, MetricsService], open_page: PageFactory
) -> None:
    """The details under the table are the table page's clients with an error or notes in the
    table's order, after a sort too; a block opened fetches the client's whole texts then."""
    app, service = big
    run = _finished_runs(service, runs=1)
    with _served(app) as url:
        listed = json.loads(urllib.request.urlopen(f"{url}/jobmetrics/api/runs/{run}").read())["clients"]
        detailed = {c["client_id"] for c in listed if c["details"]}
        page = open_page(1366)
        page.goto(f"{url}/jobmetrics/runs/{run}")
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)
        first = page.evaluate(DETAILS_ORDER)
        assert first == [r["id"] for r in _rows(page) if r["id"] in detailed]

        page.click("#clients thead th[data-field='Total Tokens'] button")
        by_tokens = page.evaluate(DETAILS_ORDER)
        assert by_tokens == [r["id"] for r in _rows(page) if r["id"] in detailed]
        assert by_tokens != first
        page.click("#clients thead th[data-key='client'] button")
        by_name = page.evaluate(DETAILS_ORDER)
        assert (
            by_name == [r["id"] for r in _rows(page) if r["id"] in detailed] == sorted(by_name, key=str.lower)
        )

        target = next(c for c in by_name if c not in first)  # not on the server's first page
        block = page.locator(f"[id='details-{target}']")
        assert block.get_attribute("open") is None and block.locator("pre").count() == 0
        with page.expect_response(lambda r: r.url.endswith(f"/api/runs/{run}/clients/{target}")) as answer:
            block.locator("summary").click()
        assert answer.value.ok
        block.locator("pre.log").wait_for(timeout=WAIT_MS)
        whole = service.get_client_run(run, target)
        assert whole is not None
        assert block.locator("pre.log").inner_text() == whole.progress_log
        assert whole.notes in block.inner_text()
        _shot(page, "dashboard-300-details-by-name-1366-light.png", full_page=False)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_big_run_pages_fit_the_screen_light_and_dark(
    big: tuple[Flask, MetricsService], open_page: PageFactory, width: int, scheme: str
) -> None:
    """Run, runs list and client page never scroll sideways; on a phone the clients are cards, the
    chart text stays 12 px; the run page's weight and height are kept with the screenshots."""
    app, service = big
    run = _finished_runs(service)
    with _served(app) as url:
        page = open_page(width, scheme)
        run_url = f"{url}/jobmetrics/runs/{run}"
        page.goto(run_url)
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)
        assert page.evaluate(NO_OVERFLOW)
        label_size = page.evaluate(
            "() => getComputedStyle(document.querySelector('#chart-tokens .chart-label')).fontSize"
        )
        assert label_size == "12px"
        label_box = page.locator("#chart-tokens .chart-label").first.bounding_box()
        assert label_box is not None and label_box["height"] >= 11  # drawn at 12 px, not scaled down
        phone = width < 640
        thead = page.evaluate("() => getComputedStyle(document.querySelector('#clients thead')).display")
        assert (thead == "none") is phone
        shown = 25 if phone else 100
        assert page.locator("#clients tbody tr").count() == shown
        _shot(page, f"dashboard-300-run-{width}-{scheme}.png")
        page.evaluate("() => document.getElementById('jm-clients').scrollIntoView()")
        _shot(page, f"dashboard-300-table-{width}-{scheme}.png", full_page=False)
        figures = {
            "html_bytes": len(urllib.request.urlopen(run_url).read()),
            "json_bytes": len(urllib.request.urlopen(f"{url}/jobmetrics/api/runs/{run}").read()),
            "height_px": page.evaluate("() => document.documentElement.scrollHeight"),
        }

        page.goto(f"{url}/jobmetrics/")
        assert page.evaluate(NO_OVERFLOW)
        first_run = page.locator("#runs tbody tr").first
        run_id_box = first_run.locator("td.client").bounding_box()
        status_box = first_run.locator("td.status").bounding_box()
        assert run_id_box is not None and status_box is not None
        assert run_id_box["y"] < status_box["y"] if phone else run_id_box["x"] < status_box["x"]  # ID first
        for chart in ("trend-tokens", "trend-scored", "trend-failed", "trend-duration"):
            assert page.locator(f"#{chart} rect.col").count() == 6
        _shot(page, f"dashboard-300-runs-{width}-{scheme}.png")

        page.goto(f"{url}/jobmetrics/clients/client-005")
        assert page.evaluate(NO_OVERFLOW)
        assert page.locator("#client-runs tbody tr").count() == 6
        _shot(page, f"dashboard-300-client-{width}-{scheme}.png")
    ARTIFACTS.mkdir(exist_ok=True)
    figures_file = ARTIFACTS / f"dashboard-300-figures-{width}-{scheme}.json"
    figures_file.write_text(json.dumps(figures, indent=2) + "\n")


def test_big_run_refreshes_through_the_api_with_304s_until_finished(
    big: tuple[Flask, MetricsService], open_page: PageFactory
) -> None:
    """A live 300-client run: the page polls the JSON API (304 while unchanged, never the page
    itself), shows progress as clients finish (a new error in its column and its details), and
    stops at the finished state."""
    app, service = big
    ids = client_ids(CLIENTS_IN_BIG_RUN)
    run = service.start_job(notes="Live batch").run_id
    for client in ids:
        service.update_client_metrics(run, client, {})
    service.flush()
    with _served(app) as url:
        page = open_page(1366, "dark")
        seen: list[tuple[str, int]] = []

        def record(response: Response) -> None:
            seen.append((response.url.removeprefix(url), response.status))

        page.on("response", record)
        page.goto(f"{url}/jobmetrics/runs/{run}")
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)
        assert page.inner_text("#jm-progress-text") == "0 / 300"
        page.wait_for_function(
            "() => document.documentElement.getAttribute('data-refresh-state') === 'live'", timeout=WAIT_MS
        )
        with page.expect_response(lambda r: r.status == 304 and "/api/runs/" in r.url, timeout=WAIT_MS):
            pass  # unchanged: a poll costs a 304

        score(service, run, ids[:150], details=False)
        service.flush()
        done = 150 - len(expected_failures(ids[:150]))  # those stay Running until the job completes
        page.wait_for_function(
            "(text) => document.getElementById('jm-progress-text').textContent === text",
            arg=f"{done} / 300",
            timeout=WAIT_MS,
        )
        _shot(page, "dashboard-300-live-1366-dark.png", full_page=False)
        assert page.locator("#clients thead th[data-key='error']").count() == 0

        reason = "Scoring API answered 429 three times"
        service.complete_client_metrics(run, ids[150], error=reason)
        page.wait_for_function(  # the first error adds the Error column in place
            "() => document.querySelector('#clients thead th[data-key=error] button') !== null",
            timeout=WAIT_MS,
        )
        row = page.locator(f"#client-{ids[150]}")
        assert row.locator("td.error").inner_text() == reason
        assert row.locator("td.status .reason").count() == 0  # said once, in its column
        block = page.locator(f"[id='details-{ids[150]}']")  # new, with an error: open, filled from its JSON
        block.locator("pre.error").wait_for(timeout=WAIT_MS)
        assert block.get_attribute("open") is not None
        assert block.locator("pre.error").inner_text() == reason
        assert "error: " + reason in block.locator("pre.log").inner_text()
        page.evaluate("() => document.getElementById('jm-clients').scrollIntoView()")
        _shot(page, "dashboard-300-error-1366-dark.png", full_page=False)

        score(service, run, ids[151:], offset=151)
        service.complete_job_metrics(run)
        page.wait_for_function(
            "() => document.documentElement.getAttribute('data-refresh-state') === 'stopped'", timeout=WAIT_MS
        )
        assert page.inner_text("#jm-status") == "Completed with Errors"
        assert page.inner_text("#jm-progress-text") == "300 / 300"
        failed = len(expected_failures(ids)) + 1  # and the one that reported its error
        assert page.inner_text("#jm-failed") == str(failed)
        assert {r["status"] for r in _rows(page)[:failed]} == {"Failed"}
        _shot(page, "dashboard-300-finished-1366-dark.png", full_page=False)
    page_loads = [u for u, _ in seen if u.startswith(f"/jobmetrics/runs/{run}") and "/summary" not in u]
    assert page_loads == [f"/jobmetrics/runs/{run}"]  # the page itself was fetched once
    assert any(status == 304 for u, status in seen if u == f"/jobmetrics/api/runs/{run}")


def test_token_login_once_then_the_cookie_opens_the_dashboard(
    make_app: AppFactory, tmp_path: Path, open_page: PageFactory
) -> None:
    """With a token, the 401 page links to the login form; after signing in the browser is let in."""
    app = _big_app(make_app, tmp_path, JOBMETRICS_DASHBOARD_TOKEN="s3cret-token")
    run = _finished_runs(get_state(app).service, runs=1)
    with _served(app) as url:
        page = open_page(390, "dark")
        page.goto(f"{url}/jobmetrics/runs/{run}")
        assert page.inner_text(".error-code") == "401"
        _shot(page, "dashboard-401-390-dark.png", full_page=False)
        page.click("text=Sign in with the token")
        page.fill("#jm-token", "wrong")
        page.click("form.login button")
        assert "not the dashboard's token" in page.inner_text(".form-error")
        _shot(page, "dashboard-login-390-dark.png", full_page=False)
        page.fill("#jm-token", "s3cret-token")
        page.click("form.login button")
        page.wait_for_url(f"**/jobmetrics/runs/{run}")
        page.wait_for_function(TABLE_READY, timeout=WAIT_MS)  # the API answers with the cookie too
        cookie = next(c for c in page.context.cookies() if c["name"] == "jobmetrics_session")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        page.click("form.signout button")
        page.goto(f"{url}/jobmetrics/")
        assert page.inner_text(".error-code") == "401"


def test_runs_list_refreshes_through_the_api_until_no_run_is_running(
    big: tuple[Flask, MetricsService], open_page: PageFactory
) -> None:
    """The runs list polls /api/runs (304 while unchanged) and re-renders when a run finishes."""
    app, service = big
    run = service.start_job().run_id
    service.complete_client_metrics(run, "acme", {"Leads Processed": 3})
    with _served(app) as url:
        page = open_page(390, "light")
        page.goto(f"{url}/jobmetrics/")
        assert page.inner_text("#runs tbody tr td.status") == "Running"
        with page.expect_response(lambda r: r.status == 304 and "/api/runs" in r.url, timeout=WAIT_MS):
            pass
        service.complete_job_metrics(run)
        page.wait_for_function(
            "() => document.documentElement.getAttribute('data-refresh-state') === 'stopped'", timeout=WAIT_MS
        )
        assert page.inner_text("#runs tbody tr td.status") == "Completed"
        assert page.evaluate(NO_OVERFLOW)
