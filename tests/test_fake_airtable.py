"""FakeAirtable driven by the real pyairtable client over HTTP: the records API."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from pyairtable import Api, Table
from pyairtable.formulas import EQ, OR, Field

from flask_jobmetrics.testing import FakeAirtable, ManualClock
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

RUNS = "Client Run Results"
JOBS = "Job Tracking"
RECORD_ID = re.compile(r"^rec[A-Za-z0-9]{14}$")
CREATED_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def http_error(exc: pytest.ExceptionInfo[requests.HTTPError]) -> tuple[int, Any]:
    """Status and JSON body of the response behind an HTTPError."""
    response = exc.value.response
    assert response is not None
    return response.status_code, response.json()


def raw(fake: FakeAirtable, method: str, path: str, key: str = API_KEY, **kwargs: Any) -> requests.Response:
    """A request sent with plain requests (for bodies pyairtable would not send)."""
    headers = {"Authorization": f"Bearer {key}"}
    return requests.request(method, f"{fake.url}/v0/{path}", headers=headers, timeout=5, **kwargs)


@pytest.fixture
def fake(fake_airtable_factory: Callable[..., FakeAirtable]) -> FakeAirtable:
    """An emulator without rate limit (tests of the limit are in test_fake_airtable_control)."""
    return fake_airtable_factory(rate_limit=None, clock=ManualClock(100.0))


@pytest.fixture
def api(fake: FakeAirtable) -> Api:
    return Api(API_KEY, endpoint_url=fake.url, retry_strategy=None)


@pytest.fixture
def runs(api: Api) -> Table:
    return api.table(BASE_ID, RUNS)


def seed_runs(fake: FakeAirtable, count: int) -> None:
    fake.add_records(BASE_ID, RUNS, [{"Run ID": f"r{i:03d}", "Leads Processed": i % 7} for i in range(count)])


# -- fixture, create, get -----------------------------------------------------------------


def test_plugin_fixture_serves_jobmetrics_base(fake_airtable: FakeAirtable, fake_airtable_api: Api) -> None:
    """The fake_airtable fixture is started and holds both flask_jobmetrics tables."""
    names = [t.name for t in fake_airtable_api.base(BASE_ID).schema().tables]
    assert names == [JOBS, RUNS]
    assert fake_airtable.url.startswith("http://127.0.0.1:")


def test_create_then_get_returns_airtable_shaped_record(runs: Table) -> None:
    """A created record has a rec id, a createdTime with milliseconds and Z, and its fields."""
    created = runs.create({"Run ID": "a", "Client ID": "c1", "Leads Processed": 3})
    assert RECORD_ID.match(created["id"])
    assert CREATED_TIME.match(created["createdTime"])
    assert runs.get(created["id"]) == created
    assert created["fields"] == {"Run ID": "a", "Client ID": "c1", "Leads Processed": 3}


def test_batch_create_keeps_order(fake: FakeAirtable, runs: Table) -> None:
    """batch_create returns the records in request order and stores them all."""
    created = runs.batch_create([{"Run ID": f"b{i}"} for i in range(12)])
    assert [r["fields"]["Run ID"] for r in created] == [f"b{i}" for i in range(12)]
    assert len(fake.records(BASE_ID, RUNS)) == 12
    assert fake.request_count("POST", kind="write") == 2


def test_empty_values_are_omitted(runs: Table) -> None:
    """None, "", False and [] are not returned in fields."""
    created = runs.create({"Run ID": "e", "Client ID": "", "System Notes": None, "Leads Processed": 0})
    assert created["fields"] == {"Run ID": "e", "Leads Processed": 0}
    updated = runs.update(created["id"], {"Leads Processed": None})
    assert updated["fields"] == {"Run ID": "e"}


def test_datetime_is_returned_in_utc_with_z(runs: Table) -> None:
    """A dateTime given with an offset comes back as UTC milliseconds with Z."""
    created = runs.create({"Run ID": "d", "Start Time": "2024-05-01T10:00:00+02:00"})
    assert created["fields"]["Start Time"] == "2024-05-01T08:00:00.000Z"


def test_table_is_addressable_by_id(fake: FakeAirtable, api: Api) -> None:
    """Record URLs accept the table id as well as the name."""
    table = api.table(BASE_ID, fake.table_id(BASE_ID, RUNS))
    table.create({"Run ID": "by-id"})
    assert [r["fields"]["Run ID"] for r in fake.records(BASE_ID, RUNS)] == ["by-id"]


# -- list -----------------------------------------------------------------------------------


def test_list_paginates_with_opaque_offset(fake: FakeAirtable, runs: Table) -> None:
    """Pages hold page_size records and each next page is asked for with the offset given."""
    seed_runs(fake, 25)
    pages = list(runs.iterate(page_size=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    offsets = [r.query.get("offset") for r in fake.requests]
    assert offsets[0] is None
    assert offsets[1]
    assert offsets[2]
    assert offsets[1] != offsets[2]


def test_default_page_size_is_100(fake: FakeAirtable, runs: Table) -> None:
    """Without pageSize a page holds 100 records."""
    seed_runs(fake, 130)
    assert [len(p) for p in runs.iterate()] == [100, 30]


def test_max_records_limits_the_total(fake: FakeAirtable, runs: Table) -> None:
    """maxRecords caps the records over all pages."""
    seed_runs(fake, 30)
    assert len(runs.all(max_records=15, page_size=10)) == 15


def test_fields_and_sort(fake: FakeAirtable, runs: Table) -> None:
    """fields[] keeps only the named fields; sort orders by field and direction."""
    seed_runs(fake, 10)
    rows = runs.all(fields=["Leads Processed"], sort=["-Leads Processed", "Run ID"])
    assert all(set(r["fields"]) <= {"Leads Processed"} for r in rows)
    values = [r["fields"].get("Leads Processed", 0) for r in rows]
    assert values == sorted(values, reverse=True)


def test_long_formula_goes_through_post_list_records(fake: FakeAirtable, runs: Table) -> None:
    """pyairtable falls back to POST listRecords for long URLs; filtering and paging work there."""
    seed_runs(fake, 150)
    formula = OR(*(EQ(Field("Run ID"), f"r{i:03d}") for i in range(0, 1200, 1)))
    rows = runs.all(formula=formula)
    assert len(rows) == 150
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/listRecords")]
    assert len(posts) == 2
    assert posts[1].json["offset"]
    assert all(r.kind == "read" for r in posts)


def test_stale_offset_is_rejected(fake: FakeAirtable) -> None:
    """An offset the emulator never gave gets 422 LIST_RECORDS_ITERATOR_NOT_AVAILABLE."""
    response = raw(fake, "GET", f"{BASE_ID}/{RUNS}", params={"offset": "itrNope/recNope"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"


def test_page_size_over_100_is_rejected(runs: Table) -> None:
    """pageSize above 100 gets 422 INVALID_REQUEST_UNKNOWN."""
    with pytest.raises(requests.HTTPError) as exc:
        runs.all(page_size=101)
    status, body = http_error(exc)
    assert (status, body["error"]["type"]) == (422, "INVALID_REQUEST_UNKNOWN")


# -- update, upsert, delete ------------------------------------------------------------------


def test_patch_merges_and_put_replaces(runs: Table) -> None:
    """update merges fields; update(replace=True) clears the fields not given."""
    rec = runs.create({"Run ID": "u", "Client ID": "c", "Leads Processed": 1})
    merged = runs.update(rec["id"], {"Leads Processed": 2})
    assert merged["fields"] == {"Run ID": "u", "Client ID": "c", "Leads Processed": 2}
    replaced = runs.update(rec["id"], {"Run ID": "u2"}, replace=True)
    assert replaced["fields"] == {"Run ID": "u2"}


def test_batch_update_and_unknown_record(fake: FakeAirtable, runs: Table) -> None:
    """batch_update changes each record; an unknown id fails the batch with ROW_DOES_NOT_EXIST."""
    a, b = runs.batch_create([{"Run ID": "a"}, {"Run ID": "b"}])
    out = runs.batch_update(
        [{"id": a["id"], "fields": {"Posts Processed": 1}}, {"id": b["id"], "fields": {}}]
    )
    assert [r["fields"].get("Posts Processed") for r in out] == [1, None]
    with pytest.raises(requests.HTTPError) as exc:
        runs.batch_update(
            [{"id": a["id"], "fields": {"Posts Processed": 9}}, {"id": "recXXXXXXXXXXXXXX", "fields": {}}]
        )
    status, body = http_error(exc)
    assert (status, body["error"]["type"]) == (422, "ROW_DOES_NOT_EXIST")
    assert runs.get(a["id"])["fields"]["Posts Processed"] == 1


def test_upsert_one_merge_field_creates_then_updates(runs: Table) -> None:
    """batch_upsert creates when nothing matches and updates the one match afterwards."""
    first = runs.batch_upsert([{"fields": {"Run ID": "k1", "Leads Processed": 1}}], ["Run ID"])
    assert len(first["createdRecords"]) == 1
    assert first["updatedRecords"] == []
    second = runs.batch_upsert([{"fields": {"Run ID": "k1", "Leads Processed": 5}}], ["Run ID"])
    assert second["updatedRecords"] == first["createdRecords"]
    assert second["createdRecords"] == []
    assert [r["fields"]["Leads Processed"] for r in runs.all()] == [5]


def test_upsert_two_merge_fields(runs: Table) -> None:
    """With two merge fields a record matches only when both values are equal."""
    keys = ["Run ID", "Client ID"]
    runs.batch_upsert([{"fields": {"Run ID": "r1", "Client ID": "c1", "Leads Processed": 1}}], keys)
    result = runs.batch_upsert(
        [
            {"fields": {"Run ID": "r1", "Client ID": "c1", "Leads Processed": 2}},
            {"fields": {"Run ID": "r1", "Client ID": "c2", "Leads Processed": 3}},
        ],
        keys,
    )
    assert len(result["updatedRecords"]) == 1
    assert len(result["createdRecords"]) == 1
    assert sorted(r["fields"]["Leads Processed"] for r in runs.all()) == [2, 3]


def test_upsert_with_several_matches_fails_whole_request(fake: FakeAirtable, runs: Table) -> None:
    """Two existing rows matching the merge values fail the request with 422; nothing changes."""
    runs.batch_create([{"Client ID": "dup"}, {"Client ID": "dup"}])
    with pytest.raises(requests.HTTPError) as exc:
        runs.batch_upsert(
            [{"fields": {"Client ID": "new"}}, {"fields": {"Client ID": "dup", "Leads Processed": 1}}],
            ["Client ID"],
        )
    status, body = http_error(exc)
    assert (status, body["error"]["type"]) == (422, "INVALID_REQUEST_UNKNOWN")
    assert sorted(r["fields"]["Client ID"] for r in fake.records(BASE_ID, RUNS)) == ["dup", "dup"]


def test_delete_one_and_batch(fake: FakeAirtable, runs: Table) -> None:
    """delete and batch_delete remove records and confirm each id; unknown ids get 404."""
    recs = runs.batch_create([{"Run ID": str(i)} for i in range(4)])
    assert runs.delete(recs[0]["id"]) == {"id": recs[0]["id"], "deleted": True}
    assert runs.batch_delete([r["id"] for r in recs[1:3]]) == [
        {"id": r["id"], "deleted": True} for r in recs[1:3]
    ]
    assert [r["id"] for r in fake.records(BASE_ID, RUNS)] == [recs[3]["id"]]
    with pytest.raises(requests.HTTPError) as exc:
        runs.delete(recs[0]["id"])
    assert http_error(exc) == (404, {"error": {"type": "MODEL_ID_NOT_FOUND", "message": "Record not found"}})


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_more_than_ten_records_is_rejected(fake: FakeAirtable, method: str) -> None:
    """A write of 11 records gets 422 INVALID_RECORDS and nothing is written."""
    records = [{"fields": {"Run ID": str(i)}, "id": f"rec{i:014d}"} for i in range(11)]
    response = raw(fake, method, f"{BASE_ID}/{RUNS}", json={"records": records})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "INVALID_RECORDS"
    if method == "POST":
        expected = "A maximum of 10 records can be created per request but you have provided 11."
        assert response.json()["error"]["message"] == expected
    assert fake.records(BASE_ID, RUNS) == []


def test_unknown_field_fails_whole_request(fake: FakeAirtable, runs: Table) -> None:
    """An unknown field name gets 422 UNKNOWN_FIELD_NAME and no record of the batch is created."""
    with pytest.raises(requests.HTTPError) as exc:
        runs.batch_create([{"Run ID": "ok"}, {"Run ID": "bad", "Nope": 1}])
    assert http_error(exc) == (
        422,
        {"error": {"type": "UNKNOWN_FIELD_NAME", "message": 'Unknown field name: "Nope"'}},
    )
    assert fake.records(BASE_ID, RUNS) == []


def test_select_option_needs_typecast(fake: FakeAirtable, runs: Table) -> None:
    """An unknown select option gets INVALID_MULTIPLE_CHOICE_OPTIONS; typecast creates it."""
    with pytest.raises(requests.HTTPError) as exc:
        runs.create({"Status": "Paused"})
    status, body = http_error(exc)
    assert (status, body["error"]["type"]) == (422, "INVALID_MULTIPLE_CHOICE_OPTIONS")
    assert body["error"]["message"] == 'Insufficient permissions to create new select option ""Paused""'
    created = runs.create({"Status": "Paused", "Leads Processed": "12"}, typecast=True)
    assert created["fields"] == {"Status": "Paused", "Leads Processed": 12}
    choices = [c.name for c in runs.schema(force=True).field("Status").options.choices]  # type: ignore[union-attr]
    assert "Paused" in choices


def test_wrong_type_for_number_is_rejected(runs: Table) -> None:
    """A string for a number field without typecast gets 422 INVALID_VALUE_FOR_COLUMN."""
    with pytest.raises(requests.HTTPError) as exc:
        runs.create({"Leads Processed": "12"})
    assert http_error(exc) == (
        422,
        {
            "error": {
                "type": "INVALID_VALUE_FOR_COLUMN",
                "message": 'Field "Leads Processed" cannot accept the provided value',
            }
        },
    )


def test_failed_typecast_request_leaves_no_new_option(fake: FakeAirtable, runs: Table) -> None:
    """A failing request does not keep the select option its first record created."""
    with pytest.raises(requests.HTTPError):
        runs.batch_create([{"Status": "Brand New"}, {"Leads Processed": "many"}], typecast=True)
    status = next(f for f in fake.schema(BASE_ID)["tables"][1]["fields"] if f["name"] == "Status")
    choices = [c["name"] for c in status["options"]["choices"]]
    assert "Brand New" not in choices


def test_unknown_base_table_and_route(fake: FakeAirtable) -> None:
    """Unknown base or table gets 403 INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND; unknown path gets 404."""
    for path in (f"appNOPE0000000000/{RUNS}", f"{BASE_ID}/Nope", "meta/bases/appNOPE0000000000/tables"):
        response = raw(fake, "GET", path)
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND"
    response = raw(fake, "GET", f"{BASE_ID}/{RUNS}/recXXXXXXXXXXXXXX/extra")
    assert (response.status_code, response.json()) == (404, {"error": "NOT_FOUND"})


def test_bad_api_key_gets_401(fake: FakeAirtable) -> None:
    """Any other bearer token gets 401 AUTHENTICATION_REQUIRED."""
    api = Api("patWRONG", endpoint_url=fake.url, retry_strategy=None)
    with pytest.raises(requests.HTTPError) as exc:
        api.table(BASE_ID, RUNS).all()
    assert http_error(exc) == (
        401,
        {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}},
    )


def test_malformed_json_gets_400(fake: FakeAirtable) -> None:
    """A body that is not JSON gets 400."""
    response = requests.post(
        f"{fake.url}/v0/{BASE_ID}/{RUNS}",
        data=b"{not json",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400


def test_remove_field_drops_values(fake: FakeAirtable, runs: Table) -> None:
    """After remove_field its values are gone and writing it gets UNKNOWN_FIELD_NAME."""
    runs.create({"Run ID": "x", "Client ID": "c"})
    fake.remove_field(BASE_ID, RUNS, "Client ID")
    assert runs.all()[0]["fields"] == {"Run ID": "x"}
    with pytest.raises(requests.HTTPError) as exc:
        runs.create({"Client ID": "c"})
    assert http_error(exc)[1]["error"]["type"] == "UNKNOWN_FIELD_NAME"
