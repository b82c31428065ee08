"""What a live base must do for pyairtable (records, formulas, pagination, upserts,
metadata), checked against FakeAirtable with the real client: the ground pyairtable's own
integration suite covers, in tests of our own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from pyairtable import Api, Table
from pyairtable.formulas import AND, EQ, FIND, OR, RECORD_ID, Field, match
from pyairtable.utils import date_to_iso_str, datetime_to_iso_str

from flask_jobmetrics.testing import FakeAirtable, ManualClock
from flask_jobmetrics.testing.pytest_plugin import API_KEY

BASE = "appPYAIRTABLE0001"
TABLE = "Samples"
FIELDS = [
    {"name": "Label", "type": "singleLineText"},
    {"name": "Amount", "type": "number", "options": {"precision": 2}},
    {"name": "Flag", "type": "checkbox", "options": {"color": "greenBright", "icon": "check"}},
    {"name": "Seen", "type": "dateTime"},
]


@pytest.fixture
def fake(fake_airtable_factory: Callable[..., FakeAirtable]) -> FakeAirtable:
    """An emulator with one more base holding the ``Samples`` table."""
    fake = fake_airtable_factory(rate_limit=None, clock=ManualClock(10.0))
    fake.add_base(BASE, "Samples base")
    fake.add_table(BASE, TABLE, FIELDS)
    return fake


@pytest.fixture
def table(fake: FakeAirtable) -> Table:
    """The ``Samples`` table through a pyairtable client without retries."""
    return Api(API_KEY, endpoint_url=fake.url, retry_strategy=None).table(BASE, TABLE)


def field_id(fake: FakeAirtable, name: str) -> str:
    (table,) = fake.schema(BASE)["tables"]
    return next(f["id"] for f in table["fields"] if f["name"] == name)


# -- records ------------------------------------------------------------------------------


def test_create_get_update_replace_list_delete_round_trip(table: Table) -> None:
    """One record goes through create, get, update (merge), update(replace=True), all and delete."""
    created = table.create({"Label": "first", "Amount": 2, "Flag": True})
    assert table.get(created["id"])["fields"] == {"Label": "first", "Amount": 2, "Flag": True}
    merged = table.update(created["id"], {"Label": "second"})
    assert merged["fields"] == {"Label": "second", "Amount": 2, "Flag": True}
    replaced = table.update(created["id"], {"Amount": 7.5}, replace=True)
    assert replaced["fields"] == {"Amount": 7.5}
    assert [r["id"] for r in table.all()] == [created["id"]]
    assert table.delete(created["id"]) == {"id": created["id"], "deleted": True}
    assert table.all() == []


def test_batches_over_ten_records_are_split_by_pyairtable_and_all_land(
    fake: FakeAirtable, table: Table
) -> None:
    """batch_create, batch_update and batch_delete of 23 records take 3 requests each and apply to all."""
    created = table.batch_create([{"Label": f"n{i}", "Amount": i} for i in range(23)])
    assert [r["fields"]["Amount"] for r in created] == list(range(23))
    changed = table.batch_update([{"id": r["id"], "fields": {"Label": "changed"}} for r in created])
    assert {r["fields"]["Label"] for r in changed} == {"changed"}
    assert {r["fields"]["Label"] for r in fake.records(BASE, TABLE)} == {"changed"}
    deleted = table.batch_delete([r["id"] for r in created])
    assert len(deleted) == 23
    assert all(d["deleted"] for d in deleted)
    assert fake.records(BASE, TABLE) == []
    assert [fake.request_count(m) for m in ("POST", "PATCH", "DELETE")] == [3, 3, 3]


def test_field_ids_work_for_writes_and_reads(fake: FakeAirtable, table: Table) -> None:
    """use_field_ids=True: records are written by field id and come back keyed by field id."""
    label = field_id(fake, "Label")
    one = table.create({label: "by id"}, use_field_ids=True)
    assert one["fields"] == {label: "by id"}
    assert table.get(one["id"], use_field_ids=True)["fields"] == {label: "by id"}
    assert table.get(one["id"])["fields"] == {"Label": "by id"}
    many = table.batch_create([{label: "x"}, {label: "y"}], use_field_ids=True)
    formula = OR(*(RECORD_ID().eq(r["id"]) for r in many))
    found = {r["id"]: r["fields"] for r in table.all(formula=formula, use_field_ids=True)}
    assert found == {many[0]["id"]: {label: "x"}, many[1]["id"]: {label: "y"}}
    updated = table.batch_update([{"id": r["id"], "fields": {label: "z"}} for r in many], use_field_ids=True)
    assert [r["fields"] for r in updated] == [{label: "z"}, {label: "z"}]


@pytest.mark.parametrize("long_url", [False, True], ids=["GET", "POST listRecords"])
def test_every_list_option_is_accepted_by_get_and_post(
    fake: FakeAirtable, table: Table, long_url: bool
) -> None:
    """view, maxRecords, pageSize, an empty offset, fields, cellFormat=json, sort, timeZone,
    userLocale and returnFieldsByFieldId are taken by both list routes."""
    only = table.create({"Label": "only one"})
    # A formula over pyairtable's 16,000-character URL limit sends the list as POST .../listRecords.
    formula = f"{{Label}} != '{'q' * 16_500}'" if long_url else None
    options: list[dict[str, object]] = [
        {"view": "Grid view"},
        {"max_records": 1},
        {"page_size": 1},
        {"offset": ""},
        {"fields": ["Label", "Amount"]},
        {"cell_format": "json"},
        {"sort": ["Label", "-Amount"]},
        {"time_zone": "utc"},
        {"user_locale": "en-gb"},
    ]
    for option in options:
        assert table.all(formula=formula, **option) == [only], option  # type: ignore[arg-type]
    by_id = table.all(formula=formula, use_field_ids=True)
    assert by_id == [{**only, "fields": {field_id(fake, "Label"): "only one"}}]
    posted = [r for r in fake.requests if r.path.endswith("/listRecords")]
    assert len(posted) == (len(options) + 1 if long_url else 0)


# -- formulas -----------------------------------------------------------------------------


def test_match_finds_on_all_fields_or_any_field(table: Table) -> None:
    """match() needs every value to be equal; match(match_any=True) needs one."""
    target = table.create({"Label": "needle 41", "Amount": 41})
    table.create({"Label": "other", "Amount": 5})
    assert table.first(formula=match({"Label": "needle 41", "Amount": 41})) == target
    assert table.first(formula=match({"Label": "needle 41", "Amount": 40})) is None
    assert table.first(formula=match({"Label": "needle 41", "Amount": 40}, match_any=True)) == target


@pytest.mark.parametrize("label", ["Ann's list", 'the "quoted" one', "back\\slash \\' mix"])
def test_match_finds_text_with_quotes_and_backslashes(table: Table, label: str) -> None:
    """Values holding quotes and backslashes match exactly their own record."""
    table.create({"Label": label + " decoy"})
    wanted = table.create({"Label": label})
    assert table.all(formula=match({"Label": label})) == [wanted]


def test_and_of_text_number_and_checkbox(table: Table) -> None:
    """AND(EQ(text), EQ(number), EQ(checkbox, True)) picks the one record with all three."""
    wanted = table.create({"Label": "all three", "Amount": 3, "Flag": True})
    table.create({"Label": "all three", "Amount": 3})
    table.create({"Label": "all three", "Amount": 4, "Flag": True})
    formula = AND(EQ(Field("Label"), "all three"), EQ(Field("Amount"), 3), EQ(Field("Flag"), True))
    assert table.all(formula=formula) == [wanted]


def test_datetime_equality_and_date_text_search(table: Table) -> None:
    """match() on a datetime finds the record written with it; FIND(date, {dateTime}) finds that day's."""
    seen = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=timezone.utc)
    wanted = table.create({"Seen": datetime_to_iso_str(seen)})
    day_after = table.create({"Seen": datetime_to_iso_str(seen + timedelta(days=1))})
    assert table.all(formula=match({"Seen": seen})) == [wanted]
    same_day = table.create({"Seen": datetime_to_iso_str(seen.replace(hour=23))})
    found = {r["id"] for r in table.all(formula=FIND(date_to_iso_str(seen.date()), Field("Seen")))}
    assert found == {wanted["id"], same_day["id"]}
    assert day_after["id"] not in found


# -- pagination ---------------------------------------------------------------------------


def test_pages_of_a_long_formula_listing_are_distinct_and_sized(fake: FakeAirtable, table: Table) -> None:
    """Over 500 records picked by a formula longer than a URL: pages hold page_size distinct
    records, max_records caps the total, and both together give pages 10, 10, 5."""
    created = table.batch_create([{"Label": f"row {i}"} for i in range(520)])
    left_out = created[-1]["id"]
    formula = OR(*(RECORD_ID().eq(r["id"]) for r in created[:-1]))
    assert len(str(formula)) > Api.MAX_URL_LENGTH
    for size in (10, 50):
        pages = table.iterate(formula=formula, page_size=size)
        first, second = next(pages), next(pages)
        assert (len(first), len(second)) == (size, size)
        assert not {r["id"] for r in first} & {r["id"] for r in second}
    for cap in (10, 50):
        assert len(table.all(formula=formula, max_records=cap)) == cap
    pages = list(table.iterate(formula=formula, page_size=10, max_records=25))
    assert [len(p) for p in pages] == [10, 10, 5]
    everything = {r["id"] for r in table.all(formula=formula)}
    assert len(everything) == 519
    assert left_out not in everything
    assert all(r.method == "POST" for r in fake.requests if r.kind == "read")


# -- upserts ------------------------------------------------------------------------------


def test_batch_upsert_by_id_by_key_and_creating(table: Table) -> None:
    """One upsert updates a record by id, another by its key, and creates a third; fields merge."""
    alpha, beta = table.batch_create([{"Label": "alpha"}, {"Label": "beta"}])
    result = table.batch_upsert(
        [
            {"id": alpha["id"], "fields": {"Amount": 1}},
            {"fields": {"Label": "beta", "Amount": 2}},
            {"fields": {"Label": "gamma", "Amount": 3}},
        ],
        key_fields=["Label"],
    )
    assert set(result["updatedRecords"]) == {alpha["id"], beta["id"]}
    (gamma_id,) = result["createdRecords"]
    assert [(r["id"], r["fields"]) for r in result["records"]] == [
        (alpha["id"], {"Label": "alpha", "Amount": 1}),
        (beta["id"], {"Label": "beta", "Amount": 2}),
        (gamma_id, {"Label": "gamma", "Amount": 3}),
    ]


def test_batch_upsert_replace_clears_and_a_blank_key_creates(table: Table) -> None:
    """With replace=True unnamed fields are cleared, and a record whose key is blank is created,
    even when an earlier record of the same request blanked another record's key."""
    alpha, beta = table.batch_create([{"Label": "alpha", "Amount": 1}, {"Label": "beta", "Amount": 2}])
    result = table.batch_upsert(
        [
            {"id": alpha["id"], "fields": {"Amount": 10}},  # clears alpha's Label
            {"fields": {"Label": "beta"}},  # clears beta's Amount
            {"fields": {"Label": None, "Amount": 30}},  # blank key: matches nothing, creates
        ],
        key_fields=["Label"],
        replace=True,
    )
    assert [r["fields"] for r in result["records"]] == [{"Amount": 10}, {"Label": "beta"}, {"Amount": 30}]
    assert result["updatedRecords"] == [alpha["id"], beta["id"]]
    assert len(result["createdRecords"]) == 1
    assert len(table.all()) == 3


def test_batch_upsert_returns_fields_by_id_when_asked(fake: FakeAirtable, table: Table) -> None:
    """batch_upsert(use_field_ids=True) answers with the record keyed by field ids."""
    beta = table.create({"Label": "beta"})
    result = table.batch_upsert([{"fields": {"Label": "beta", "Amount": 8}}], ["Label"], use_field_ids=True)
    label, amount = field_id(fake, "Label"), field_id(fake, "Amount")
    assert result["records"] == [
        {"id": beta["id"], "createdTime": beta["createdTime"], "fields": {label: "beta", amount: 8}}
    ]


# -- metadata -----------------------------------------------------------------------------


def test_bases_base_and_schemas(fake: FakeAirtable, table: Table) -> None:
    """Api.bases(), Api.base(validate=True), Base.schema() and Table.schema() describe the base;
    a field is found in the schema by its name and by its id."""
    api = table.api
    bases = {b.id: b for b in api.bases()}
    assert bases[BASE].name == "Samples base"
    assert bases[BASE].table(TABLE).name == TABLE
    assert api.base(BASE, validate=True).name == "Samples base"
    assert api.base(BASE).schema().table(TABLE).name == TABLE
    schema = table.schema()
    label = field_id(fake, "Label")
    assert schema.field("Label").id == label
    assert schema.field(label).name == "Label"
    assert [f.name for f in schema.fields] == [f["name"] for f in FIELDS]
