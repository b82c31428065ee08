"""FakeAirtable's metadata API, rate limit, injected faults and request log, via pyairtable."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pyairtable import Api
from pyairtable.api.retrying import retry_strategy
from pyairtable.models.schema import DateTimeFieldSchema, NumberFieldSchema, SingleSelectFieldSchema

from flask_jobmetrics.testing import FakeAirtable, ManualClock
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

RUNS = "Client Run Results"
RATE_LIMIT_BODY = {
    "errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]
}
Factory = Callable[..., FakeAirtable]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(50.0)


@pytest.fixture
def limited(fake_airtable_factory: Factory, clock: ManualClock) -> FakeAirtable:
    """Airtable's 5 requests per second, a 30 s lock, on a clock the test moves."""
    return fake_airtable_factory(clock=clock)


@pytest.fixture
def fake(fake_airtable_factory: Factory, clock: ManualClock) -> FakeAirtable:
    return fake_airtable_factory(rate_limit=None, clock=clock)


def client(fake: FakeAirtable, **options: object) -> Api:
    options.setdefault("retry_strategy", None)
    return Api(API_KEY, endpoint_url=fake.url, **options)  # type: ignore[arg-type]


def status_of(call: Callable[[], object]) -> int:
    """The HTTP status a pyairtable call ends with (200 when it succeeds)."""
    try:
        call()
    except requests.HTTPError as exc:
        return exc.response.status_code if exc.response is not None else 0
    return 200


# -- metadata -----------------------------------------------------------------------------


def test_schema_parses_through_pyairtable(fake: FakeAirtable) -> None:
    """Base.schema() validates the emulator's schema into pyairtable's typed models."""
    table = client(fake).base(BASE_ID).schema().table(RUNS)
    assert table.primary_field_id == table.fields[0].id
    assert table.fields[0].name == "Run ID"
    assert isinstance(table.field("Status"), SingleSelectFieldSchema)
    assert isinstance(table.field("Start Time"), DateTimeFieldSchema)
    assert isinstance(table.field("Leads Processed"), NumberFieldSchema)
    assert table.id.startswith("tbl")
    assert table.views[0].type == "grid"


def test_create_table_and_field_through_pyairtable(fake: FakeAirtable) -> None:
    """Base.create_table and Table.create_field work and the new table takes records."""
    base = client(fake).base(BASE_ID)
    table = base.create_table(
        "Extra",
        [
            {"name": "Key", "type": "singleLineText"},
            {"name": "On", "type": "checkbox", "options": {"color": "greenBright", "icon": "check"}},
        ],
    )
    field = table.create_field("Score", "number", options={"precision": 1})
    assert field.id.startswith("fld")
    assert field.name == "Score"
    created = table.create({"Key": "k", "On": True, "Score": 1.25})
    assert created["fields"] == {"Key": "k", "On": True, "Score": 1.2}
    assert [t.name for t in base.schema(force=True).tables][-1] == "Extra"


def test_api_bases_lists_bases(fake: FakeAirtable) -> None:
    """GET /v0/meta/bases lists every base for Api.bases()."""
    fake.add_base("appOTHER000000000", "Other")
    assert [(b.id, b.name) for b in client(fake).bases()] == [
        (BASE_ID, "Job Metrics"),
        ("appOTHER000000000", "Other"),
    ]


# -- rate limit ---------------------------------------------------------------------------


def test_sixth_request_in_a_second_gets_429_and_locks_base(limited: FakeAirtable, clock: ManualClock) -> None:
    """The 6th request within one second gets 429 and the base answers 429 until the lock ends."""
    table = client(limited).table(BASE_ID, RUNS)
    assert [status_of(table.all) for _ in range(5)] == [200] * 5
    with pytest.raises(requests.HTTPError) as exc:
        table.all()
    assert exc.value.response is not None
    assert exc.value.response.json() == RATE_LIMIT_BODY
    clock.advance(29.9)
    assert status_of(table.all) == 429
    clock.advance(1.2)
    assert status_of(table.all) == 200
    assert [r.status for r in limited.requests] == [200] * 5 + [429, 429, 200]


def test_window_slides_with_the_clock(limited: FakeAirtable, clock: ManualClock) -> None:
    """Five requests per second are fine forever when spread over the clock."""
    table = client(limited).table(BASE_ID, RUNS)
    statuses = []
    for _ in range(20):
        statuses.append(status_of(table.all))
        clock.advance(0.2)
    assert statuses == [200] * 20
    assert limited.max_requests_in_any_second(BASE_ID) == 5


def test_metadata_requests_count_per_base(limited: FakeAirtable) -> None:
    """Schema reads count toward the base's limit; another base has its own budget."""
    limited.add_base("appOTHER000000000")
    api = client(limited)
    assert [status_of(lambda: api.base(BASE_ID).schema(force=True)) for _ in range(6)] == [200] * 5 + [429]
    assert status_of(lambda: api.base("appOTHER000000000").schema(force=True)) == 200


def test_pyairtable_retries_after_429(fake: FakeAirtable) -> None:
    """pyairtable's retry strategy retries 429 answers and then succeeds."""
    fake.fail_next(2, status=429)
    api = client(fake, retry_strategy=retry_strategy(total=3, backoff_factor=0.001))
    assert api.table(BASE_ID, RUNS).all() == []
    assert [r.status for r in fake.requests] == [429, 429, 200]


# -- faults -------------------------------------------------------------------------------


def test_fail_next_answers_503_without_applying(fake: FakeAirtable) -> None:
    """fail_next makes the next record request fail with Airtable's body; it is not applied."""
    fake.fail_next(1)
    table = client(fake).table(BASE_ID, RUNS)
    with pytest.raises(requests.HTTPError) as exc:
        table.create({"Run ID": "x"})
    assert exc.value.response is not None
    assert exc.value.response.status_code == 503
    assert exc.value.response.json()["error"]["type"] == "RETRIABLE_ERROR"
    assert fake.records(BASE_ID, RUNS) == []
    assert table.create({"Run ID": "y"})["fields"] == {"Run ID": "y"}


def test_fail_next_reaches_metadata_requests(fake: FakeAirtable) -> None:
    """Without a kind, fail_next fails the next request whatever it is, a schema read included."""
    fake.fail_next(1, status=500, body={"error": {"type": "SERVER_ERROR", "message": "boom"}})
    api = client(fake)
    assert status_of(lambda: api.base(BASE_ID).schema()) == 500
    assert status_of(api.table(BASE_ID, RUNS).all) == 200


@pytest.mark.parametrize("kind", ["read", "write", "meta"])
def test_faults_with_a_kind_wait_for_a_request_of_that_kind(fake: FakeAirtable, kind: str) -> None:
    """fail_next, drop_next and delay_next with kind= pass other requests and take the next of it."""
    api = client(fake, timeout=(1, 0.2))
    table = api.table(BASE_ID, RUNS)
    calls: dict[str, Callable[[], object]] = {
        "read": table.all,
        "write": lambda: table.create({"Run ID": "k"}),
        "meta": lambda: api.base(BASE_ID).schema(force=True),
    }
    fake.fail_next(1, status=502, kind=kind)  # type: ignore[arg-type]
    fake.drop_next(1, kind=kind)  # type: ignore[arg-type]
    fake.delay_next(1, 0.4, kind=kind)  # type: ignore[arg-type]
    for other in calls.keys() - {kind}:
        assert status_of(calls[other]) == 200
    with pytest.raises(requests.ConnectionError):
        calls[kind]()
    with pytest.raises(requests.ReadTimeout):
        calls[kind]()
    assert status_of(calls[kind]) == 502
    assert status_of(calls[kind]) == 200


def test_dropped_connection_raises_connection_error(fake: FakeAirtable) -> None:
    """drop_next closes the socket: requests raises ConnectionError and nothing is written."""
    fake.drop_next(1)
    table = client(fake).table(BASE_ID, RUNS)
    with pytest.raises(requests.ConnectionError):
        table.create({"Run ID": "x"})
    assert fake.records(BASE_ID, RUNS) == []
    assert fake.requests[-1].status is None
    assert table.create({"Run ID": "y"})["id"].startswith("rec")


def test_delay_causes_read_timeout_and_is_not_applied(fake: FakeAirtable) -> None:
    """A delayed request times out on the client and, by default, is never applied."""
    fake.delay_next(1, 0.5)
    table = client(fake, timeout=(1, 0.2)).table(BASE_ID, RUNS)
    with pytest.raises(requests.ReadTimeout):
        table.create({"Run ID": "slow"})
    time.sleep(0.5)
    assert fake.records(BASE_ID, RUNS) == []


def test_delay_with_apply_writes_after_the_timeout(fake: FakeAirtable) -> None:
    """With apply=True the delayed request is applied although the client gave up."""
    fake.delay_next(1, 0.3, apply=True)
    table = client(fake, timeout=(1, 0.1)).table(BASE_ID, RUNS)
    with pytest.raises(requests.ReadTimeout):
        table.create({"Run ID": "late"})
    deadline = time.monotonic() + 3
    while not fake.records(BASE_ID, RUNS) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["fields"] for r in fake.records(BASE_ID, RUNS)] == [{"Run ID": "late"}]


def test_fail_records_rejects_matching_writes_whole(fake: FakeAirtable) -> None:
    """A write holding a record the predicate matches fails whole; other writes pass."""
    fake.fail_records(lambda fields: fields.get("Client ID") == "poison", message="no")
    table = client(fake).table(BASE_ID, RUNS)
    with pytest.raises(requests.HTTPError) as exc:
        table.batch_create([{"Client ID": "fine"}, {"Client ID": "poison"}])
    assert exc.value.response is not None
    assert exc.value.response.json() == {"error": {"type": "INVALID_VALUE_FOR_COLUMN", "message": "no"}}
    assert fake.records(BASE_ID, RUNS) == []
    table.create({"Client ID": "fine"})
    fake.clear_faults()
    table.create({"Client ID": "poison"})
    assert len(fake.records(BASE_ID, RUNS)) == 2


# -- request log and lifecycle ------------------------------------------------------------


def test_request_log_records_each_request(fake: FakeAirtable, clock: ManualClock) -> None:
    """The log has method, decoded path, query, JSON body, status, clock time, base and kind."""
    api = client(fake)
    table = api.table(BASE_ID, RUNS)
    table.create({"Run ID": "a"})
    clock.advance(0.5)
    table.all(fields=["Run ID"])
    clock.advance(2)
    api.base(BASE_ID).schema()
    write, read, meta = fake.requests
    assert (write.method, write.path, write.status, write.kind) == (
        "POST",
        f"/v0/{BASE_ID}/{RUNS}",
        200,
        "write",
    )
    assert write.json["fields"] == {"Run ID": "a"}
    assert write.time == 50.0
    assert (read.kind, read.query, read.time) == ("read", {"fields[]": ["Run ID"]}, 50.5)
    assert (meta.kind, meta.base_id) == ("meta", BASE_ID)
    assert fake.request_count() == 3
    assert fake.request_count("GET") == 2
    assert fake.request_count(kind="write") == 1
    assert fake.max_requests_in_any_second() == 2
    fake.reset_log()
    assert fake.requests == []


def test_concurrent_writes_are_all_applied(fake: FakeAirtable) -> None:
    """Requests handled in parallel threads all land, each record once."""
    table = client(fake).table(BASE_ID, RUNS)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: table.create({"Run ID": f"c{i}"}), range(40)))
    names = sorted(r["fields"]["Run ID"] for r in fake.records(BASE_ID, RUNS))
    assert names == sorted(f"c{i}" for i in range(40))
    assert len({r["id"] for r in fake.records(BASE_ID, RUNS)}) == 40


def test_context_manager_stops_server() -> None:
    """Leaving the with block stops serving; the data stays readable."""
    with FakeAirtable(rate_limit=None) as fake:
        fake.add_base(BASE_ID)
        fake.add_table(BASE_ID, "T", {"Name": "singleLineText"})
        url = fake.url
        Api(API_KEY, endpoint_url=url, retry_strategy=None).table(BASE_ID, "T").create({"Name": "n"})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/v0/meta/bases", timeout=1)
    assert [r["fields"] for r in fake.records(BASE_ID, "T")] == [{"Name": "n"}]
