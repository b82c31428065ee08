"""flask_jobmetrics against FakeAirtable tokens with fewer scopes: the publisher without the
schema scopes learns missing fields from 422s; `airtable check`/`init` say which scope is missing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from pyairtable import Api

from flask_jobmetrics.airtable.fields import field_definitions
from flask_jobmetrics.airtable.schema import AirtableSchemaError, check, init
from flask_jobmetrics.schema import BUILTIN_METRICS
from flask_jobmetrics.state import get_state
from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing.pytest_plugin import BASE_ID

from .support import jobmetrics_app

RECORDS_ONLY = "patRECORDSONLY"
SCHEMA_READ = "patSCHEMAREAD"
CLIENTS = "Client Run Results"
JOBS = "Job Tracking"


@pytest.fixture
def fake(fake_airtable_factory: Callable[..., FakeAirtable]) -> FakeAirtable:
    fake = fake_airtable_factory(rate_limit=None)
    fake.add_token(RECORDS_ONLY, {"data.records:read", "data.records:write"})
    fake.add_token(SCHEMA_READ, {"schema.bases:read"})
    return fake


def api_for(fake: FakeAirtable, token: str) -> Api:
    return Api(token, endpoint_url=fake.url, retry_strategy=None)


def tables() -> dict[str, dict[str, dict[str, object]]]:
    return {
        JOBS: field_definitions(BUILTIN_METRICS, job=True),
        CLIENTS: field_definitions(BUILTIN_METRICS, job=False),
    }


def test_without_schema_scope_missing_fields_are_learned_from_422s(
    tmp_path: Path, fake: FakeAirtable, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema read gets 403; one 422 UNKNOWN_FIELD_NAME, then every row lands without the field."""
    fake.remove_field(BASE_ID, CLIENTS, "Total Tokens")
    airtable = {"API_KEY": RECORDS_ONLY, "BASE_ID": BASE_ID, "ENDPOINT_URL": fake.url}
    settings = {f"JOBMETRICS_AIRTABLE_{key}": value for key, value in airtable.items()}
    with jobmetrics_app(tmp_path, **settings) as app:
        ext = get_state(app).extension
        with caplog.at_level(logging.INFO, logger="flask_jobmetrics"):
            for batch in range(2):
                for i in range(3):
                    ext.complete_client_metrics(
                        "230615-120000", f"c{batch}-{i:02d}", {"Total Tokens": 10 + i}
                    )
                report = ext.flush(timeout=30)
                assert (report.pending, report.dead) == (0, 0)
    assert [r.status for r in fake.requests if r.kind == "meta"] == [403]
    assert sum(r.status == 422 for r in fake.requests) == 1
    rows = [r["fields"] for r in fake.records(BASE_ID, CLIENTS)]
    assert sorted(r["Client ID"] for r in rows) == sorted(f"c{b}-{i:02d}" for b in range(2) for i in range(3))
    assert all("Total Tokens" not in r for r in rows)
    assert any("schema not readable" in r.getMessage() for r in caplog.records)


def test_check_without_schema_read_names_the_scopes(fake: FakeAirtable) -> None:
    """`airtable check` with a token lacking schema.bases:read fails on the 403 with the scopes hint."""
    with pytest.raises(AirtableSchemaError, match=r"HTTP 403 .*schema\.bases:read and schema\.bases:write"):
        check(api_for(fake, RECORDS_ONLY), BASE_ID, tables())


def test_init_with_schema_read_only_checks_but_creates_nothing(fake: FakeAirtable) -> None:
    """With schema.bases:read alone `check` works and `init` is refused at its first creation."""
    fake.remove_field(BASE_ID, CLIENTS, "Total Tokens")
    api = api_for(fake, SCHEMA_READ)
    assert check(api, BASE_ID, tables()).missing_fields == {CLIENTS: (("Total Tokens", "number"),)}
    with pytest.raises(AirtableSchemaError, match=r'create field "Total Tokens" .*HTTP 403') as caught:
        init(api, BASE_ID, tables())
    assert caught.value.done == []
    assert "Total Tokens" not in {f["name"] for f in fake.schema(BASE_ID)["tables"][1]["fields"]}
