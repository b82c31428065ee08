"""The publisher against a FakeAirtable token without the schema scopes: it cannot read the
base's fields, so it learns the missing ones from Airtable's 422s."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from flask_jobmetrics import JobMetrics
from flask_jobmetrics.extension import get_state
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import BASE_ID

RECORDS_ONLY = "patRECORDSONLY"
CLIENTS = "Client Run Results"


@pytest.fixture
def fake(fake_airtable_factory: Callable[..., FakeAirtable]) -> FakeAirtable:
    fake = fake_airtable_factory(rate_limit=None)
    fake.add_token(RECORDS_ONLY, {"data.records:read", "data.records:write"})
    return fake


def test_without_schema_scope_missing_fields_are_learned_from_422s(
    tmp_path: Path, fake: FakeAirtable, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema read gets 403; one 422 UNKNOWN_FIELD_NAME, then every row lands without the field."""
    fake.remove_field(BASE_ID, CLIENTS, "Total Tokens")
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(
        TESTING=True,
        JOBMETRICS_STORE_URL=f"sqlite:///{tmp_path}/store.sqlite3",
        JOBMETRICS_AIRTABLE_API_KEY=RECORDS_ONLY,
        JOBMETRICS_AIRTABLE_BASE_ID=BASE_ID,
        JOBMETRICS_AIRTABLE_ENDPOINT_URL=fake.url,
    )
    JobMetrics(app)
    ext = get_state(app).extension
    try:
        with caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
            for batch in range(2):
                for i in range(12):
                    ext.complete_client_metrics(
                        "230615-120000", f"c{batch}-{i:02d}", {"Total Tokens": 10 + i}
                    )
                report = ext.flush(timeout=30)
                assert (report.pending, report.dead) == (0, 0)
    finally:
        get_state(app).service.close()
    assert [r.status for r in fake.requests if r.kind == "meta"] == [403]
    assert sum(r.status == 422 for r in fake.requests) == 1
    rows = [r["fields"] for r in fake.records(BASE_ID, CLIENTS)]
    assert sorted(r["Client ID"] for r in rows) == sorted(
        f"c{b}-{i:02d}" for b in range(2) for i in range(12)
    )
    assert all("Total Tokens" not in r for r in rows)
    assert any("schema not readable" in r.getMessage() for r in caplog.records)
