"""FakeAirtable refuses what Airtable refuses: upsert matching, size limits, token scopes,
merge field types and metadata API validation. Each test names the source it follows."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from pyairtable import Api, Table

from flask_jobmetrics.airtable_limits import MAX_CELL_TEXT_LENGTH, MAX_REQUEST_BODY_BYTES, text_length
from flask_jobmetrics.testing import FakeAirtable, ManualClock
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

RUNS = "Client Run Results"
JOBS = "Job Tracking"
Factory = Callable[..., FakeAirtable]


@pytest.fixture
def fake(fake_airtable_factory: Factory) -> FakeAirtable:
    return fake_airtable_factory(rate_limit=None, clock=ManualClock(0.0))


def client(fake: FakeAirtable, key: str = API_KEY) -> Api:
    return Api(key, endpoint_url=fake.url, retry_strategy=None)


@pytest.fixture
def runs(fake: FakeAirtable) -> Table:
    return client(fake).table(BASE_ID, RUNS)


def refusal(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    """Status and body of the HTTP error a pyairtable call ends with."""
    with pytest.raises(requests.HTTPError) as exc:
        call()
    response = exc.value.response
    assert response is not None
    return response.status_code, response.json()


def error_type(call: Callable[[], object]) -> tuple[int, str]:
    status, body = refusal(call)
    return status, body["error"]["type"]


def post(fake: FakeAirtable, path: str, data: bytes, key: str = API_KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return requests.post(f"{fake.url}/v0/{path}", data=data, headers=headers, timeout=5)


# -- upsert matching (Airtable's "Update multiple records"; pyairtable's test_batch_upsert) --


def test_two_records_of_one_upsert_creating_one_key_are_refused(fake: FakeAirtable, runs: Table) -> None:
    """Two records of one request that would both create the same key: 422, nothing written."""
    status, kind = error_type(
        lambda: runs.batch_upsert(
            [
                {"fields": {"Run ID": "other", "Leads Processed": 1}},
                {"fields": {"Run ID": "twin", "Leads Processed": 2}},
                {"fields": {"Run ID": "twin", "Leads Processed": 3}},
            ],
            ["Run ID"],
        )
    )
    assert (status, kind) == (422, "INVALID_REQUEST_UNKNOWN")
    assert fake.records(BASE_ID, RUNS) == []


def test_upsert_matches_against_the_table_before_the_request(fake: FakeAirtable, runs: Table) -> None:
    """A record matches by the keys the table had before the request, not by those an earlier
    record of the same request wrote."""
    alpha = runs.create({"Run ID": "a"})
    result = runs.batch_upsert(
        [
            {"id": alpha["id"], "fields": {"Run ID": "b"}},  # renames a -> b
            {"fields": {"Run ID": "b", "Leads Processed": 5}},  # no b before the request: creates
            {"fields": {"Run ID": "a", "Leads Processed": 7}},  # a existed before: updates alpha
        ],
        ["Run ID"],
    )
    created_id = result["createdRecords"][0]
    assert result["updatedRecords"] == [alpha["id"]]
    assert [r["id"] for r in result["records"]] == [alpha["id"], created_id, alpha["id"]]
    rows = {r["id"]: r["fields"] for r in fake.records(BASE_ID, RUNS)}
    assert rows == {
        alpha["id"]: {"Run ID": "a", "Leads Processed": 7},
        created_id: {"Run ID": "b", "Leads Processed": 5},
    }


def test_a_blank_merge_key_never_matches_a_blank(fake: FakeAirtable, runs: Table) -> None:
    """A blank merge value matches no record, not even a blank one; two blanks in one request both create."""
    runs.create({"Leads Processed": 1})  # Run ID blank
    result = runs.batch_upsert(
        [
            {"fields": {"Run ID": None, "Leads Processed": 2}},
            {"fields": {"Run ID": "", "Leads Processed": 3}},
        ],
        ["Run ID"],
    )
    assert (len(result["createdRecords"]), result["updatedRecords"]) == (2, [])
    assert sorted(r["fields"]["Leads Processed"] for r in fake.records(BASE_ID, RUNS)) == [1, 2, 3]


def test_a_key_with_one_blank_part_matches_nothing(fake: FakeAirtable, runs: Table) -> None:
    """With two merge fields, a record whose second value is blank creates, though the first matches."""
    runs.create({"Run ID": "r1"})
    result = runs.batch_upsert([{"fields": {"Run ID": "r1", "Client ID": None}}], ["Run ID", "Client ID"])
    assert len(result["createdRecords"]) == 1
    assert len(fake.records(BASE_ID, RUNS)) == 2


def test_merge_fields_must_be_of_a_mergeable_type(fake: FakeAirtable, runs: Table) -> None:
    """fieldsToMergeOn of a checkbox or a computed (formula) field gets 422 and nothing is written;
    text, number, select and date fields are taken (Airtable's "Update multiple records")."""
    fake.add_field(BASE_ID, RUNS, "Done", "checkbox")
    fake.add_field(BASE_ID, RUNS, "Computed", "formula", {"formula": "1"})
    for name in ("Done", "Computed"):
        record = {"fields": {"Run ID": "x", name: True}}
        status, body = refusal(lambda: runs.batch_upsert([record], [name]))  # noqa: B023
        assert (status, body["error"]["type"]) == (422, "INVALID_REQUEST_UNKNOWN")
        assert f'field "{name}"' in body["error"]["message"]
    assert fake.records(BASE_ID, RUNS) == []
    for name, value in (
        ("Leads Processed", 4),
        ("Status", "Running"),
        ("Start Time", "2026-01-02T03:04:05Z"),
    ):
        result = runs.batch_upsert([{"fields": {name: value}}], [name])
        assert len(result["createdRecords"]) == 1, name


# -- size limits --------------------------------------------------------------------------


def test_long_text_over_100000_characters_is_refused(fake: FakeAirtable, runs: Table) -> None:
    """A text cell of 100,000 characters is stored; 100,001 gets 422 INVALID_VALUE_FOR_COLUMN
    (Airtable support: single line and long text fields hold at most 100,000 characters)."""
    assert MAX_CELL_TEXT_LENGTH == 100_000
    for name in ("System Notes", "Client ID"):  # multilineText, singleLineText
        stored = runs.create({name: "n" * MAX_CELL_TEXT_LENGTH})
        assert len(stored["fields"][name]) == MAX_CELL_TEXT_LENGTH
        status, body = refusal(lambda: runs.create({name: "n" * (MAX_CELL_TEXT_LENGTH + 1)}))  # noqa: B023
        assert (status, body["error"]["type"]) == (422, "INVALID_VALUE_FOR_COLUMN")
        assert name in body["error"]["message"]
    assert len(fake.records(BASE_ID, RUNS)) == 2


def test_text_length_counts_utf16_code_units(runs: Table) -> None:
    """A character outside the BMP (an emoji) counts twice, as JavaScript's String.length counts it."""
    assert text_length("a\N{GRINNING FACE}é") == 4
    half = MAX_CELL_TEXT_LENGTH // 2
    assert runs.create({"System Notes": "\N{GRINNING FACE}" * half})["id"]
    status, _ = refusal(lambda: runs.create({"System Notes": "\N{GRINNING FACE}" * half + "x"}))
    assert status == 422


def test_request_body_over_the_limit_gets_413(fake_airtable_factory: Factory) -> None:
    """A body one byte over max_request_bytes gets 413 REQUEST_TOO_LARGE, unapplied and not
    rate-limit counted; one of exactly the limit is taken (airtable.js names 413 this way)."""
    clock = ManualClock(0.0)
    fake = fake_airtable_factory(clock=clock, max_request_bytes=1000)
    assert FakeAirtable().max_request_bytes == MAX_REQUEST_BODY_BYTES

    def body(size: int) -> bytes:
        frame = json.dumps({"fields": {"Run ID": ""}}).encode()
        data = json.dumps({"fields": {"Run ID": "p" * (size - len(frame))}}).encode()
        assert len(data) == size
        return data

    for _ in range(5):
        response = post(fake, f"{BASE_ID}/{RUNS}", body(1001))
        assert response.status_code == 413
        assert response.json() == {
            "error": {"type": "REQUEST_TOO_LARGE", "message": "Request body is too large"}
        }
    assert fake.records(BASE_ID, RUNS) == []
    assert post(fake, f"{BASE_ID}/{RUNS}", body(1000)).status_code == 200  # the 413s did not count
    assert len(fake.records(BASE_ID, RUNS)) == 1


# -- token scopes (Airtable's "Scopes" reference; a missing scope answers 403) -------------


def test_a_token_without_schema_scopes_gets_403_on_the_metadata_api(fake: FakeAirtable) -> None:
    """Without schema.bases:read the schema reads get 403 INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND;
    its record requests still work."""
    fake.add_token("patRECORDS", {"data.records:read", "data.records:write"})
    api = client(fake, "patRECORDS")
    assert error_type(lambda: api.base(BASE_ID).schema()) == (403, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND")
    assert error_type(api.bases) == (403, "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND")
    assert api.table(BASE_ID, RUNS).create({"Run ID": "r"})["fields"] == {"Run ID": "r"}
    assert api.whoami() == {"id": "usrFakeAirtable00"}


def test_schema_read_without_write_cannot_create_fields_or_tables(fake: FakeAirtable) -> None:
    """schema.bases:read alone reads the schema; creating a field or a table gets 403 and creates nothing."""
    fake.add_token("patREADSCHEMA", {"schema.bases:read"})
    base = client(fake, "patREADSCHEMA").base(BASE_ID)
    table = base.table(RUNS)
    assert table.schema().name == RUNS
    assert error_type(lambda: table.create_field("Extra", "singleLineText"))[0] == 403
    assert error_type(lambda: base.create_table("New", [{"name": "K", "type": "singleLineText"}]))[0] == 403
    assert error_type(lambda: table.create({"Run ID": "r"}))[0] == 403  # no data.records:write
    assert error_type(table.all)[0] == 403  # no data.records:read
    assert [t["name"] for t in fake.schema(BASE_ID)["tables"]] == [JOBS, RUNS]


def test_the_constructor_token_can_be_limited_and_unknown_scopes_are_refused() -> None:
    """FakeAirtable(scopes=...) limits its own token; a scope the emulator does not know is a ValueError."""
    with FakeAirtable(scopes={"data.records:read"}, rate_limit=None) as fake:
        fake.add_base(BASE_ID)
        fake.add_table(BASE_ID, "T", {"Name": "singleLineText"})
        table = client(fake).table(BASE_ID, "T")
        assert table.all() == []
        assert error_type(lambda: table.create({"Name": "n"}))[0] == 403
        with pytest.raises(ValueError, match=r"schema\.base:read"):
            fake.add_token("patTYPO", {"schema.base:read"})


# -- metadata API validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_type", "options", "missing"),
    [
        ("number", None, "Score.options"),
        ("currency", {"precision": 2}, "Score.options.symbol"),
        ("dateTime", None, "Score.options"),
        (
            "dateTime",
            {"dateFormat": {"name": "iso"}, "timeFormat": {"name": "24hour"}},
            "Score.options.timeZone",
        ),
        ("date", {"isValid": True}, "Score.options.dateFormat"),
        ("checkbox", None, "Score.options"),
        ("singleSelect", None, "Score.options"),
    ],
)
def test_a_field_created_without_its_options_is_refused(
    fake: FakeAirtable, field_type: str, options: dict[str, Any] | None, missing: str
) -> None:
    """The metadata API refuses a number, date, dateTime, checkbox or select field created without
    the options it needs: 422 INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE naming the missing option."""
    table = client(fake).table(BASE_ID, RUNS)
    status, body = refusal(lambda: table.create_field("Score", field_type, options=options))
    assert (status, body["error"]["type"]) == (422, "INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE")
    assert body["error"]["message"] == f"Failed schema validation: {missing} is missing"
    assert "Score" not in {f["name"] for f in fake.schema(BASE_ID)["tables"][1]["fields"]}


def test_fields_with_their_options_are_created_and_helpers_fill_defaults(fake: FakeAirtable) -> None:
    """With the options given the metadata API creates the fields; the data helpers still fill
    Airtable's defaults for a bare type."""
    base = client(fake).base(BASE_ID)
    table = base.create_table(
        "Scores",
        [
            {"name": "Key", "type": "singleLineText"},
            {"name": "Score", "type": "number", "options": {"precision": 1}},
            {
                "name": "At",
                "type": "dateTime",
                "options": {
                    "dateFormat": {"name": "iso"},
                    "timeFormat": {"name": "24hour"},
                    "timeZone": "utc",
                },
            },
        ],
    )
    assert [f.name for f in table.schema().fields] == ["Key", "Score", "At"]
    fake.add_field(BASE_ID, "Scores", "Bare", "number")
    bare = next(f for f in fake.schema(BASE_ID)["tables"][-1]["fields"] if f["name"] == "Bare")
    assert bare["options"] == {"precision": 0}


def test_create_table_with_a_field_lacking_options_creates_nothing(fake: FakeAirtable) -> None:
    """A table whose field list holds a number without options is refused whole."""
    base = client(fake).base(BASE_ID)
    status, kind = error_type(
        lambda: base.create_table(
            "Half", [{"name": "K", "type": "singleLineText"}, {"name": "N", "type": "number"}]
        )
    )
    assert (status, kind) == (422, "INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE")
    assert [t["name"] for t in fake.schema(BASE_ID)["tables"]] == [JOBS, RUNS]


def test_a_field_name_differing_only_by_case_is_refused(fake: FakeAirtable) -> None:
    """Field names are unique regardless of case: "leads PROCESSED" next to "Leads Processed"
    gets 422 DUPLICATE_OR_EMPTY_FIELD_NAME, through the API and the data helper alike."""
    table = client(fake).table(BASE_ID, RUNS)
    status, body = refusal(lambda: table.create_field("leads PROCESSED", "singleLineText"))
    assert (status, body["error"]["type"]) == (422, "DUPLICATE_OR_EMPTY_FIELD_NAME")
    with pytest.raises(ValueError, match="DUPLICATE_OR_EMPTY_FIELD_NAME"):
        fake.add_field(BASE_ID, RUNS, "RUN id", "singleLineText")
    with pytest.raises(ValueError, match="DUPLICATE_OR_EMPTY_FIELD_NAME"):
        fake.add_table(BASE_ID, "Twins", {"Name": "singleLineText", "NAME": "singleLineText"})
