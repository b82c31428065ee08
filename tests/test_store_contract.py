"""The store protocol's behaviour, checked the same way against every store.

Each test runs on every store of ``STORE_FACTORIES`` (tests/conftest.py, the ``make_store``
fixture); a backend joins the suite by adding one entry there.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.stores.base import ClientRow, OutboxItem, Store

from .support import Clock, MakeStore

LEADS = "Leads Processed"
START = "Start Time"
END = "End Time"
STATUS = "Status"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(make_store: MakeStore, clock: Clock) -> Store:
    return make_store(clock=clock.timestamp)


def delta(client: str = "acme", run: str = "run-1", **ops: Any) -> ClientDelta:
    """A delta from keyword ops; ``Leads_Processed=("sum", 1)`` names the field ``Leads Processed``."""
    return ClientDelta(run, client, {name.replace("_", " "): op for name, op in ops.items()})


def leads(n: int, client: str = "acme", run: str = "run-1", key: str | None = None) -> ClientDelta:
    return ClientDelta(run, client, {LEADS: ("sum", n)}, idempotency_key=key)


# -- client rows -------------------------------------------------------------------------


def test_store_satisfies_protocol(store: Store) -> None:
    """Every store is a runtime ``Store`` and keeps the URL it was made from."""
    assert isinstance(store, Store)
    assert store.url.split("://")[0] in ("memory", "sqlite", "redis")


def test_sum_adds_increments(store: Store) -> None:
    """Two merges of a sum metric add up, and the row's version counts the changes."""
    store.merge_client(leads(5))
    row, applied = store.merge_client(leads(7))
    assert applied is True
    assert row.fields[LEADS] == 12
    assert row.version == 2
    assert store.get_client("run-1", "acme") == row


def test_min_max_last_and_set(store: Store) -> None:
    """min keeps the earliest, max the latest, last and set replace (set also replaces sums)."""
    store.merge_client(delta(Start_Time=("min", T0), End_Time=("max", T0), Status=("last", "Running")))
    hour = timedelta(hours=1)
    store.merge_client(delta(Start_Time=("min", T0 + hour), End_Time=("max", T0 - hour)))
    earlier = T0 - timedelta(minutes=5)
    row, _ = store.merge_client(delta(Start_Time=("min", earlier), Status=("last", "Failed")))
    assert row.fields[START] == earlier
    assert row.fields[END] == T0
    assert row.fields[STATUS] == "Failed"
    store.merge_client(leads(10))
    row, _ = store.merge_client(ClientDelta("run-1", "acme", {LEADS: ("set", 3)}))
    assert row.fields[LEADS] == 3


def test_float_and_int_values_keep_their_type(store: Store) -> None:
    """Ints stay ints and floats stay floats after a merge and a read."""
    store.merge_client(delta(Total_Tokens=("sum", 2), Score=("last", 1.5)))
    row = store.get_client("run-1", "acme")
    assert row is not None
    assert row.fields["Total Tokens"] == 2
    assert type(row.fields["Total Tokens"]) is int
    assert row.fields["Score"] == 1.5


def test_datetimes_round_trip_as_aware_utc(store: Store) -> None:
    """Datetimes come back as the same aware UTC instant, microseconds included."""
    when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=timezone.utc)
    store.merge_client(delta(Start_Time=("min", when)))
    row = store.get_client("run-1", "acme")
    assert row is not None
    value = row.fields[START]
    assert value == when
    assert value.utcoffset() == timedelta(0)


def test_new_client_row_is_running_and_creates_job(store: Store) -> None:
    """The first merge creates a Running client row and a Running job row with its start."""
    row, applied = store.merge_client(delta(Start_Time=("min", T0), Leads_Processed=("sum", 1)))
    assert applied is True
    assert row.fields[STATUS] == "Running"
    assert row.completed is False
    assert row.version == 1
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[STATUS] == "Running"
    assert job.fields[START] == T0
    assert job.client_ids == ("acme",)
    assert job.completed is False


def test_status_in_first_delta_wins_over_running(store: Store) -> None:
    """A new row created by a delta that sets Status has that status."""
    row, _ = store.merge_client(delta(Status=("last", "Completed")))
    assert row.fields[STATUS] == "Completed"


def test_complete_flag_sticks(store: Store) -> None:
    """A delta with ``complete=True`` sets the flag; later deltas do not clear it."""
    row, _ = store.merge_client(ClientDelta("run-1", "acme", {LEADS: ("sum", 1)}, complete=True))
    assert row.completed is True
    row, _ = store.merge_client(leads(1))
    assert row.completed is True
    assert row.fields[LEADS] == 2


def test_job_start_time_is_earliest_of_clients(store: Store) -> None:
    """The job's Start Time follows the earliest client start, never a later one."""
    store.merge_client(delta("a", Start_Time=("min", T0)))
    store.merge_client(delta("b", Start_Time=("min", T0 - timedelta(hours=2))))
    store.merge_client(delta("c", Start_Time=("min", T0 + timedelta(hours=2))))
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[START] == T0 - timedelta(hours=2)
    assert job.client_ids == ("a", "b", "c")


def test_job_start_time_moves_earlier_than_its_own(store: Store) -> None:
    """A job created with a Start Time takes an earlier client start but keeps its own over a later one."""
    store.ensure_job("run-1", {STATUS: "Running", START: T0})
    store.merge_client(delta("late", Start_Time=("min", T0 + timedelta(minutes=1))))
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[START] == T0
    store.merge_client(delta("early", Start_Time=("min", T0 - timedelta(minutes=1))))
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[START] == T0 - timedelta(minutes=1)


def test_merge_clients_merges_a_batch_in_order(store: Store) -> None:
    """merge_clients returns one row per delta, in order, each seeing the deltas before it."""
    rows = store.merge_clients([leads(1, "a"), leads(2, "b"), leads(3, "a")])
    assert [(r.client_id, r.fields[LEADS]) for r in rows] == [("a", 1), ("b", 2), ("a", 4)]
    assert store.merge_clients([]) == []


def test_merge_clients_is_all_or_nothing(store: Store) -> None:
    """A batch whose second delta cannot merge changes nothing, not even its first delta."""
    store.merge_client(ClientDelta("run-1", "a", {"Notes": ("last", "text")}))
    bad = ClientDelta("run-1", "a", {"Notes": ("sum", 1)})  # str + int
    with pytest.raises(TypeError):
        store.merge_clients([leads(5, "b"), bad])
    assert store.get_client("run-1", "b") is None
    job = store.get_job("run-1")
    assert job is not None
    assert job.client_ids == ("a",)


def test_get_and_list_clients(store: Store) -> None:
    """get_client is None for an unknown row; list_clients gives one run's rows by client ID."""
    assert store.get_client("run-1", "nobody") is None
    store.merge_clients([leads(1, "zeta"), leads(1, "alpha"), leads(1, "other", run="run-2")])
    assert [r.client_id for r in store.list_clients("run-1")] == ["alpha", "zeta"]
    assert store.list_clients("run-3") == []


def test_list_clients_of_reads_several_runs_at_once(store: Store) -> None:
    """list_clients_of gives each asked run its rows by client ID, [] for a run without any."""
    store.merge_clients([leads(1, "zeta"), leads(2, "alpha"), leads(3, "beta", run="run-2")])
    store.merge_client(leads(4, "gamma", run="run-4"))
    found = store.list_clients_of(["run-2", "run-1", "run-3"])
    assert list(found) == ["run-2", "run-1", "run-3"]
    assert found["run-1"] == store.list_clients("run-1")
    assert [(r.client_id, r.fields[LEADS]) for r in found["run-1"]] == [("alpha", 2), ("zeta", 1)]
    assert [r.client_id for r in found["run-2"]] == ["beta"]
    assert found["run-3"] == []
    assert store.list_clients_of([]) == {}


def test_get_clients_of_reads_one_client_in_several_runs_at_once(store: Store) -> None:
    """get_clients_of gives the client's row in each asked run that has one, in the order asked."""
    store.merge_clients([leads(1, "acme"), leads(2, "globex"), leads(3, "acme", run="run-2")])
    store.merge_client(leads(4, "globex", run="run-3"))
    store.merge_client(leads(5, "acme", run="run-4"))
    found = store.get_clients_of("acme", ["run-2", "run-3", "run-1", "run-9"])
    assert list(found) == ["run-2", "run-1"]
    assert found["run-1"] == store.get_client("run-1", "acme")
    assert [(r.run_id, r.client_id, r.fields[LEADS]) for r in found.values()] == [
        ("run-2", "acme", 3),
        ("run-1", "acme", 1),
    ]
    assert store.get_clients_of("acme", []) == {}
    assert store.get_clients_of("nobody", ["run-1"]) == {}


def test_returned_rows_are_snapshots(store: Store) -> None:
    """Changing the fields of a returned row does not change the store."""
    row, _ = store.merge_client(leads(1))
    row.fields[LEADS] = 999  # type: ignore[index]
    fetched = store.get_client("run-1", "acme")
    assert fetched is not None
    fetched.fields[LEADS] = 999  # type: ignore[index]
    job = store.get_job("run-1")
    assert job is not None
    job.fields[STATUS] = "Hacked"  # type: ignore[index]
    stored = store.get_client("run-1", "acme")
    assert stored is not None
    assert stored.fields[LEADS] == 1
    assert store.get_job("run-1").fields[STATUS] == "Running"  # type: ignore[union-attr]


# -- idempotency -------------------------------------------------------------------------


def test_idempotency_key_applies_once(store: Store) -> None:
    """A delta whose key was applied changes nothing and returns the row as it is."""
    first, applied = store.merge_client(leads(5, key="k1"))
    assert applied is True
    again, applied = store.merge_client(leads(5, key="k1"))
    assert applied is False
    assert again == first
    assert again.fields[LEADS] == 5
    other, applied = store.merge_client(leads(5, key="k2"))
    assert applied is True
    assert other.fields[LEADS] == 10


def test_idempotency_key_applies_once_within_a_batch(store: Store) -> None:
    """The same key twice in one batch is applied once."""
    rows = store.merge_clients([leads(5, key="k"), leads(5, key="k")])
    assert [r.fields[LEADS] for r in rows] == [5, 5]
    assert rows[1].version == 1


def test_seen_key_for_a_missing_row_creates_nothing(store: Store) -> None:
    """A seen key on another row returns an empty row and creates neither row nor job."""
    store.merge_client(leads(1, "a", key="shared"))
    row, applied = store.merge_client(leads(1, "b", run="run-2", key="shared"))
    assert applied is False
    assert row == ClientRow("run-2", "b", {})
    assert store.get_client("run-2", "b") is None
    assert store.get_job("run-2") is None


def test_idempotency_key_expires_after_ttl(make_store: MakeStore, clock: Clock) -> None:
    """After the TTL (by the store's clock) the same key is applied again."""
    store = make_store(clock=clock.timestamp, idempotency_ttl=60.0)
    store.merge_client(leads(1, key="k"))
    clock.advance(59.0)
    assert store.merge_client(leads(1, key="k"))[1] is False
    clock.advance(1.0)
    row, applied = store.merge_client(leads(1, key="k"))
    assert applied is True
    assert row.fields[LEADS] == 2
    clock.advance(30.0)
    assert store.merge_client(leads(1, key="k"))[1] is False


# -- delivery tokens ---------------------------------------------------------------------


def test_a_batch_delivered_twice_with_its_token_is_merged_once(store: Store) -> None:
    """Re-sending a batch with the same token changes nothing and returns the rows as stored."""
    first = store.merge_clients([leads(2, "a"), leads(3, "b")], token="t1")
    again = store.merge_clients([leads(2, "a"), leads(3, "b")], token="t1")
    assert [r.fields[LEADS] for r in again] == [2, 3]
    assert [r.version for r in again] == [r.version for r in first]
    assert store.merge_clients([leads(2, "a")], token="t2")[0].fields[LEADS] == 4
    assert store.merge_clients([leads(1, "a")])[0].fields[LEADS] == 5  # no token: always applied


def test_a_seen_token_on_a_missing_row_creates_nothing(store: Store) -> None:
    """A replayed token returns an empty row for a row that does not exist, and creates none."""
    store.merge_clients([leads(1, "a")], token="t")
    (row,) = store.merge_clients([leads(1, "b", run="run-2")], token="t")
    assert row == ClientRow("run-2", "b", {})
    assert store.get_job("run-2") is None


def test_a_token_is_not_an_idempotency_key(store: Store) -> None:
    """A token and a caller's idempotency key of the same text do not shadow each other."""
    store.merge_clients([leads(1)], token="same")
    assert store.merge_client(leads(1, key="same"))[1] is True


def test_a_failed_batch_records_no_token(store: Store) -> None:
    """A batch that fails leaves its token unrecorded, so the batch can be delivered again."""
    bad = ClientDelta("run-1", "acme", {LEADS: ("sum", "text")})
    with pytest.raises((TypeError, ValueError)):
        store.merge_clients([leads(1), bad], token="t")
    assert store.merge_clients([leads(1)], token="t")[0].fields[LEADS] == 1


def test_tokens_expire_with_idempotency_keys(make_store: MakeStore, clock: Clock) -> None:
    """A token is remembered for the idempotency TTL, then forgotten."""
    store = make_store(clock=clock.timestamp, idempotency_ttl=60.0)
    store.merge_clients([leads(1)], token="t")
    clock.advance(59.0)
    assert store.merge_clients([leads(1)], token="t")[0].fields[LEADS] == 1
    clock.advance(1.0)
    assert store.merge_clients([leads(1)], token="t")[0].fields[LEADS] == 2


def test_a_sum_beyond_2_53_is_refused_and_reported(store: Store) -> None:
    """A sum that would pass 2**53 is not added (the field keeps its value), the rest of the
    delta is, and the returned row lists what was refused."""
    store.merge_client(ClientDelta("run-1", "acme", {"Total Tokens": ("sum", 2**53), "F": ("sum", 9e15)}))
    ops = {"Total Tokens": ("sum", 1), "F": ("sum", 1e15), LEADS: ("sum", 2)}
    row, applied = store.merge_client(ClientDelta("run-1", "acme", ops))
    assert applied is True
    assert dict(row.refused) == {"Total Tokens": 1, "F": 1e15}
    stored = store.get_client("run-1", "acme")
    assert stored is not None
    assert (stored.fields["Total Tokens"], stored.fields["F"], stored.fields[LEADS]) == (2**53, 9e15, 2)
    assert stored.refused == ()
    (again,) = store.merge_clients([ClientDelta("run-1", "acme", {"Total Tokens": ("sum", -1)})])
    assert again.refused == () and again.fields["Total Tokens"] == 2**53 - 1


# -- finalize ----------------------------------------------------------------------------


def test_finalize_sees_merged_fields_and_its_changes_are_stored(store: Store) -> None:
    """finalize gets the merged fields in the transaction; what it sets is stored."""
    store.merge_client(leads(3))
    seen: dict[str, Any] = {}

    def finalize(fields: dict[str, Any]) -> None:
        seen.update(fields)
        fields[STATUS] = "Completed" if fields[LEADS] > 0 else "No Leads To Score"
        fields[END] = T0

    row, applied = store.merge_client(
        ClientDelta("run-1", "acme", {LEADS: ("sum", 2)}, complete=True), finalize
    )
    assert applied is True
    assert seen[LEADS] == 5
    assert row.fields[STATUS] == "Completed"
    assert row.completed is True
    assert store.get_client("run-1", "acme") == row


def test_finalize_failure_changes_nothing(store: Store) -> None:
    """An exception in finalize rolls the merge back: no row, no job, no outbox, key unused."""

    def finalize(fields: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.merge_client(leads(1, key="k"), finalize)
    assert store.get_client("run-1", "acme") is None
    assert store.get_job("run-1") is None
    assert store.outbox_counts() == (0, 0)
    assert store.merge_client(leads(1, key="k"))[1] is True


def test_finalize_is_not_called_for_a_seen_key(store: Store) -> None:
    """A delta whose key was seen does not run finalize."""
    store.merge_client(leads(1, key="k"))
    calls: list[int] = []
    _, applied = store.merge_client(leads(1, key="k"), lambda fields: calls.append(1))
    assert applied is False
    assert calls == []


def test_store_calls_inside_callbacks_join_the_transaction(store: Store) -> None:
    """finalize and update callbacks may call the store; they see the changes made so far."""
    store.merge_client(leads(1, "other"))
    seen: list[Any] = []

    def finalize(fields: dict[str, Any]) -> None:
        seen.append(store.get_client("run-1", "other"))
        seen.append(store.merge_client(leads(10, "other"))[0].fields[LEADS])

    store.merge_client(leads(1), finalize)
    assert seen[0].fields[LEADS] == 1
    assert seen[1] == 11

    def update(fields: dict[str, Any], clients: Any) -> None:
        fields["Seen"] = len(store.list_clients("run-1"))

    assert store.update_job("run-1", update).fields["Seen"] == 2


def test_failure_after_a_nested_call_rolls_back_both(store: Store) -> None:
    """A callback that merged another row and then raised leaves neither change."""

    def finalize(fields: dict[str, Any]) -> None:
        store.merge_client(leads(5, "other"))
        raise RuntimeError("late failure")

    with pytest.raises(RuntimeError):
        store.merge_client(leads(1), finalize)
    assert store.get_client("run-1", "other") is None
    assert store.get_job("run-1") is None

    def update(fields: dict[str, Any], clients: Any) -> None:
        store.merge_client(leads(5, "other", run="run-2"))
        raise RuntimeError("late failure")

    store.ensure_job("run-2", {})
    with pytest.raises(RuntimeError):
        store.update_job("run-2", update)
    assert store.get_client("run-2", "other") is None


# -- job rows ----------------------------------------------------------------------------


def test_ensure_job_creates_once(store: Store) -> None:
    """ensure_job creates the job with the fields given, then returns it unchanged."""
    job, created = store.ensure_job("run-1", {STATUS: "Running", "System Notes": "first"})
    assert created is True
    assert job.fields == {STATUS: "Running", "System Notes": "first"}
    assert job.version == 1
    again, created = store.ensure_job("run-1", {STATUS: "Failed", "System Notes": "second"})
    assert created is False
    assert again.fields["System Notes"] == "first"
    assert again.version == 1


def test_ensure_job_lists_existing_clients(store: Store) -> None:
    """ensure_job on a job created by client merges returns its client IDs, sorted."""
    store.merge_clients([leads(1, "b"), leads(1, "a")])
    job, created = store.ensure_job("run-1", {})
    assert created is False
    assert job.client_ids == ("a", "b")


def test_reserve_job_takes_the_earliest_second_when_free(store: Store) -> None:
    """reserve_job creates the job at ``earliest`` when no job holds it and nothing was reserved."""
    job = store.reserve_job("240501-120000", {STATUS: "Running"})
    assert job.run_id == "240501-120000"
    assert job.fields == {STATUS: "Running"}
    assert job.version == 1
    assert store.get_job("240501-120000") is not None


def test_reserve_job_moves_past_its_high_water_mark(store: Store) -> None:
    """Reservations in the same second take the following seconds, in order, across a day's end."""
    ids = [store.reserve_job("241231-235958", {}).run_id for _ in range(4)]
    assert ids == ["241231-235958", "241231-235959", "250101-000000", "250101-000001"]


def test_reserve_job_steps_over_jobs_made_with_explicit_ids(store: Store) -> None:
    """A second held by a job created with an explicit run ID (or by a client merge) is skipped."""
    store.ensure_job("240501-120000", {})
    store.merge_clients([ClientDelta("240501-120001", "acme", {LEADS: ("sum", 1)})])
    assert store.reserve_job("240501-120000", {}).run_id == "240501-120002"
    assert store.reserve_job("240501-120000", {}).run_id == "240501-120003"


def test_reserve_job_follows_the_clock_once_it_passed_the_mark(store: Store) -> None:
    """A later ``earliest`` than the mark is taken as it is (the mark never holds IDs back)."""
    store.reserve_job("240501-120000", {})
    assert store.reserve_job("240501-130000", {}).run_id == "240501-130000"
    assert store.reserve_job("240501-120000", {}).run_id == "240501-130001"


def test_update_job_sees_client_rows_and_bumps_version(store: Store) -> None:
    """update_job passes the job's fields and its client rows (by client ID) and stores the result."""
    store.merge_clients([leads(2, "b"), leads(3, "a"), leads(100, "x", run="run-2")])
    before = store.get_job("run-1")
    assert before is not None

    def aggregate(fields: dict[str, Any], clients: Any) -> None:
        assert [c.client_id for c in clients] == ["a", "b"]
        fields[LEADS] = sum(c.fields[LEADS] for c in clients)

    job = store.update_job("run-1", aggregate)
    assert job.fields[LEADS] == 5
    assert job.version == before.version + 1
    assert job.client_ids == ("a", "b")
    assert job.completed is False
    assert store.get_job("run-1") == job


def test_update_job_complete_flag(store: Store) -> None:
    """``complete=True`` sets the job's flag, ``None`` keeps it, ``False`` clears it."""
    store.ensure_job("run-1", {})
    assert store.update_job("run-1", lambda f, c: None, complete=True).completed is True
    assert store.update_job("run-1", lambda f, c: None).completed is True
    assert store.update_job("run-1", lambda f, c: None, complete=False).completed is False


def test_update_job_unknown_raises_key_error(store: Store) -> None:
    """update_job of a job that does not exist raises KeyError and creates nothing."""
    with pytest.raises(KeyError):
        store.update_job("missing", lambda f, c: None)
    assert store.get_job("missing") is None


def test_update_job_failure_changes_nothing(store: Store) -> None:
    """An exception in the update callback leaves the job as it was."""
    store.ensure_job("run-1", {STATUS: "Running"})

    def update(fields: dict[str, Any], clients: Any) -> None:
        fields[STATUS] = "Failed"
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        store.update_job("run-1", update)
    job = store.get_job("run-1")
    assert job is not None
    assert job.fields[STATUS] == "Running"
    assert job.version == 1


def test_get_job_unknown_is_none(store: Store) -> None:
    """get_job of an unknown run is None."""
    assert store.get_job("nope") is None


def test_list_jobs_newest_first_with_status_and_limit(store: Store) -> None:
    """list_jobs orders by Start Time newest first (then run ID), filters by status, limits."""
    store.ensure_job("j-old", {STATUS: "Completed", START: T0 - timedelta(days=2)})
    store.ensure_job("j-new", {STATUS: "Running", START: T0})
    store.ensure_job("j-mid", {STATUS: "Completed", START: T0 - timedelta(days=1)})
    store.ensure_job("j-tie", {STATUS: "Running", START: T0})
    store.ensure_job("j-none", {STATUS: "Running"})
    store.merge_client(delta("c1", run="j-mid"))
    ids = [j.run_id for j in store.list_jobs()]
    assert ids == ["j-tie", "j-new", "j-mid", "j-old", "j-none"]
    assert [j.run_id for j in store.list_jobs(status="Completed")] == ["j-mid", "j-old"]
    assert [j.run_id for j in store.list_jobs(limit=2)] == ["j-tie", "j-new"]
    assert store.list_jobs(status="Failed") == []
    mid = store.list_jobs(status="Completed", limit=1)[0]
    assert mid.client_ids == ("c1",)
    assert mid.fields[START] == T0 - timedelta(days=1)


def test_list_jobs_compares_instants(store: Store) -> None:
    """Start Times are ordered as instants, including fractions of a second."""
    store.ensure_job("a", {START: T0 + timedelta(microseconds=500)})
    store.ensure_job("b", {START: T0})
    store.ensure_job("c", {START: T0 + timedelta(seconds=1)})
    assert [j.run_id for j in store.list_jobs()] == ["c", "a", "b"]


# -- outbox ------------------------------------------------------------------------------


def _key(item: OutboxItem) -> tuple[str, str, str]:
    return (item.kind, item.run_id, item.client_id)


def test_outbox_coalesces_one_entry_per_row(store: Store) -> None:
    """Many changes to one row leave one entry, at the row's newest version."""
    for _ in range(3):
        store.merge_client(leads(1))
    due = store.outbox_due(now=0.0, limit=10)
    assert [(_key(i), i.version) for i in due] == [
        (("job", "run-1", ""), 1),
        (("client", "run-1", "acme"), 3),
    ]
    assert store.outbox_counts() == (2, 0)


def test_outbox_done_removes_only_unchanged_rows(store: Store) -> None:
    """outbox_done with an old version keeps the entry; with the current version removes it."""
    store.merge_client(leads(1))
    taken = store.outbox_due(now=0.0, limit=10)
    store.merge_client(leads(1))  # the client row changes while being published
    store.outbox_done(taken)
    left = store.outbox_due(now=0.0, limit=10)
    assert [(_key(i), i.version) for i in left] == [(("client", "run-1", "acme"), 2)]
    store.outbox_done(left)
    assert store.outbox_due(now=0.0, limit=10) == []
    assert store.outbox_counts() == (0, 0)
    store.outbox_done([])


def test_outbox_due_order_and_limit(store: Store) -> None:
    """Due entries come oldest due first (jobs before clients when equal), at most ``limit``."""
    store.merge_clients([leads(1, "b"), leads(1, "a")])
    items = store.outbox_due(now=0.0, limit=10)
    assert [_key(i) for i in items] == [
        ("job", "run-1", ""),
        ("client", "run-1", "a"),
        ("client", "run-1", "b"),
    ]
    store.outbox_retry(items[0], due_at=50.0, error=None)
    assert [_key(i) for i in store.outbox_due(now=10.0, limit=10)] == [
        ("client", "run-1", "a"),
        ("client", "run-1", "b"),
    ]
    assert [_key(i) for i in store.outbox_due(now=50.0, limit=10)][-1] == ("job", "run-1", "")
    assert len(store.outbox_due(now=50.0, limit=2)) == 2


def test_outbox_retry_counts_attempts_and_keeps_error(store: Store) -> None:
    """outbox_retry postpones; an error adds an attempt; a postponement without one ends the
    streak (attempts 0) but keeps the last error for the record."""
    store.merge_client(leads(1))
    client = store.outbox_due(now=0.0, limit=10)[1]
    store.outbox_retry(client, due_at=100.0, error="HTTP 503")
    assert [_key(i) for i in store.outbox_due(now=99.0, limit=10)] == [("job", "run-1", "")]
    item = store.outbox_due(now=100.0, limit=10)[1]
    assert (item.attempts, item.due_at, item.last_error, item.dead) == (1, 100.0, "HTTP 503", False)
    store.outbox_retry(item, due_at=200.0, error=None)
    item = store.outbox_due(now=200.0, limit=10)[1]
    assert (item.attempts, item.due_at, item.last_error) == (0, 200.0, "HTTP 503")
    store.outbox_retry(item, due_at=300.0, error="HTTP 429")
    item = store.outbox_due(now=300.0, limit=10)[1]
    assert (item.attempts, item.last_error) == (1, "HTTP 429")


def test_outbox_retry_keeps_the_newer_version(store: Store) -> None:
    """Retrying an entry whose row changed meanwhile keeps the row's newer version."""
    store.merge_client(leads(1))
    old = store.outbox_due(now=0.0, limit=10)[1]
    store.merge_client(leads(1))
    store.outbox_retry(old, due_at=5.0, error="timeout")
    item = store.outbox_due(now=5.0, limit=10)[1]
    assert (item.version, item.attempts) == (2, 1)


def test_outbox_dead_letters_and_revive(store: Store) -> None:
    """A dead entry is not due and is counted as dead until revived, then due now."""
    store.merge_clients([leads(1, "a"), leads(1, "b")])
    items = store.outbox_due(now=0.0, limit=10)
    bad = next(i for i in items if i.client_id == "b")
    store.outbox_retry(bad, due_at=0.0, error="422 UNKNOWN_FIELD_NAME", dead=True)
    assert store.outbox_counts() == (2, 1)
    assert all(i.client_id != "b" for i in store.outbox_due(now=1e12, limit=10))
    dead = store.outbox_dead()
    assert [(_key(i), i.dead, i.last_error, i.attempts) for i in dead] == [
        (("client", "run-1", "b"), True, "422 UNKNOWN_FIELD_NAME", 1)
    ]
    assert store.outbox_revive() == 1
    assert store.outbox_revive() == 0
    assert store.outbox_counts() == (3, 0)
    assert store.outbox_dead() == []
    revived = next(i for i in store.outbox_due(now=0.0, limit=10) if i.client_id == "b")
    assert revived.dead is False
    assert revived.attempts == 1


def test_a_store_without_outbox_queues_no_change(make_store: MakeStore, clock: Clock) -> None:
    """outbox=False (publishing off): merges, job updates and completions queue nothing."""
    store = make_store(clock=clock.timestamp, outbox=False)
    assert store.outbox is False
    store.merge_clients([leads(1), leads(2, client="beta")])
    store.merge_client(ClientDelta("run-1", "acme", {LEADS: ("sum", 1)}, complete=True))
    store.ensure_job("run-2", {})
    store.update_job("run-1", lambda fields, clients: None, complete=True)
    assert store.outbox_counts() == (0, 0)
    assert store.outbox_due(float("inf"), 100) == []


def test_outbox_counts_empty(store: Store) -> None:
    """A new store has nothing pending and nothing dead."""
    assert store.outbox_counts() == (0, 0)
    assert store.outbox_due(now=1e12, limit=10) == []
    assert store.outbox_dead() == []


# -- coordination ------------------------------------------------------------------------


def test_lease_is_exclusive_until_expiry(store: Store) -> None:
    """Only one owner holds a lease until it expires; then another may take it."""
    assert store.acquire_lease("publisher", "w1", ttl=10.0, now=100.0) is True
    assert store.acquire_lease("publisher", "w2", ttl=10.0, now=105.0) is False
    assert store.acquire_lease("publisher", "w2", ttl=10.0, now=109.999) is False
    assert store.acquire_lease("other", "w2", ttl=10.0, now=105.0) is True
    assert store.acquire_lease("publisher", "w2", ttl=10.0, now=110.0) is True
    assert store.acquire_lease("publisher", "w1", ttl=10.0, now=111.0) is False


def test_lease_renewal_by_owner_extends_it(store: Store) -> None:
    """The owner renews its lease, pushing the expiry to ``now + ttl``."""
    assert store.acquire_lease("publisher", "w1", ttl=10.0, now=0.0) is True
    assert store.acquire_lease("publisher", "w1", ttl=10.0, now=8.0) is True
    assert store.acquire_lease("publisher", "w2", ttl=10.0, now=15.0) is False
    assert store.acquire_lease("publisher", "w2", ttl=10.0, now=18.0) is True


def test_take_token_paces_without_burst(store: Store) -> None:
    """take_token never grants more than ``rate`` slots in any 1 s window, and says how long to wait."""
    rate = 5.0
    assert store.take_token("base", rate, now=1000.0) == 0.0
    assert store.take_token("base", rate, now=1000.0) == pytest.approx(0.2)
    assert store.take_token("base", rate, now=1000.15) == pytest.approx(0.05)
    granted = [1000.0]
    now = 1000.0
    while now < 1004.0:
        now = round(now + 0.01, 2)
        if store.take_token("base", rate, now=now) == 0.0:
            granted.append(now)
    for start in granted:
        assert sum(1 for t in granted if start <= t < start + 1.0) <= rate
    assert len(granted) >= 20
    assert store.take_token("other-base", rate, now=now) == 0.0


def test_take_token_after_idle_does_not_burst(store: Store) -> None:
    """A long idle period does not bank slots: after it, slots are still 1/rate apart."""
    assert store.take_token("base", 2.0, now=0.0) == 0.0
    assert store.take_token("base", 2.0, now=100.0) == 0.0
    assert store.take_token("base", 2.0, now=100.0) == pytest.approx(0.5)


def test_close_twice_is_safe(store: Store) -> None:
    """close() may be called more than once."""
    store.merge_client(leads(1))
    store.close()
    store.close()


# -- threads -----------------------------------------------------------------------------


def test_threads_merge_exactly(store: Store) -> None:
    """8 threads x 2,000 merges into one row through one store object give exactly 16,000."""
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            start.wait()
            for _ in range(500):  # single merges ...
                store.merge_client(leads(1))
            for _ in range(15):  # ... and batches of 100
                store.merge_clients([leads(1)] * 100)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    row = store.get_client("run-1", "acme")
    assert row is not None
    assert row.fields[LEADS] == 16_000
    assert row.version == 16_000


def test_completing_a_row_makes_its_postponed_entry_due(store: Store) -> None:
    """A running row postponed by the publisher is due again as soon as it completes."""
    store.merge_clients([ClientDelta("230615-120000", "acme", {"Leads Processed": ("sum", 1)})])
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    store.outbox_retry(item, due_at=1e12, error=None)
    assert [i for i in store.outbox_due(0.0, 10) if i.kind == "client"] == []
    store.merge_client(ClientDelta("230615-120000", "acme", {}, complete=True))
    assert [i.client_id for i in store.outbox_due(0.0, 10) if i.kind == "client"] == ["acme"]


def test_completing_does_not_cut_an_error_backoff_short(store: Store) -> None:
    """An entry backing off after an error keeps its due time when the row completes."""
    store.merge_clients([ClientDelta("230615-120000", "acme", {"Leads Processed": ("sum", 1)})])
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    store.outbox_retry(item, due_at=1e12, error="HTTP 503")
    store.merge_client(ClientDelta("230615-120000", "acme", {}, complete=True))
    assert [i for i in store.outbox_due(0.0, 10) if i.kind == "client"] == []


def test_merged_rows_say_whether_their_job_had_completed(store: Store) -> None:
    """A merge reports whether the row's job was already completed (late updates recompute its totals)."""
    delta = ClientDelta("230615-120000", "acme", {"Leads Processed": ("sum", 1)})
    (row,) = store.merge_clients([delta])
    assert row.job_completed is False
    store.update_job("230615-120000", lambda fields, clients: None, complete=True)
    (late,) = store.merge_clients([delta])
    assert late.job_completed is True
    row, _ = store.merge_client(delta, lambda fields: None)
    assert row.job_completed is True
    stored = store.get_client("230615-120000", "acme")
    assert stored is not None and stored.job_completed is False  # a merge's report, not stored


def test_a_postponement_ends_a_failure_streak(store: Store) -> None:
    """outbox_retry without an error resets the attempts; with one it counts them up."""
    store.merge_clients([ClientDelta("230615-120000", "acme", {"Leads Processed": ("sum", 1)})])
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    store.outbox_retry(item, due_at=0.0, error="HTTP 503")
    store.outbox_retry(item, due_at=0.0, error="HTTP 503")
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    assert item.attempts == 2
    store.outbox_retry(item, due_at=0.0, error=None)
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    assert item.attempts == 0


def test_a_dead_row_that_changes_is_tried_again(store: Store) -> None:
    """A dead-lettered row whose content changes is live and due again."""
    delta = ClientDelta("230615-120000", "acme", {"Leads Processed": ("sum", 1)})
    store.merge_clients([delta])
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    store.outbox_retry(item, due_at=0.0, error="422 INVALID_VALUE_FOR_COLUMN", dead=True)
    assert [i.client_id for i in store.outbox_dead()] == ["acme"]
    store.merge_clients([delta])
    assert store.outbox_dead() == []
    (item,) = [i for i in store.outbox_due(0.0, 10) if i.kind == "client"]
    assert (item.attempts, item.dead) == (0, False)


# -- appended text (Progress Log, System Notes) -------------------------------------------

LOG = "Progress Log"


def _line(second: int, message: str) -> str:
    from flask_jobmetrics.journal import log_line

    return log_line(T0 + timedelta(seconds=second), message)


def _append(text: str, limit: int = 20_000, client: str = "acme") -> ClientDelta:
    from flask_jobmetrics.journal import append_op

    return ClientDelta("run-1", client, {LOG: append_op(text, limit)})


def test_append_keeps_lines_in_time_order(store: Store) -> None:
    """Appended lines merge in the order of their timestamps, whatever order they arrive in."""
    store.merge_clients([_append(_line(1, "one")), _append(_line(3, "three"))])
    store.merge_clients([_append(_line(2, "two") + "\n" + _line(4, "four"))])
    row = store.get_client("run-1", "acme")
    assert row is not None
    expected = [_line(1, "one"), _line(2, "two"), _line(3, "three"), _line(4, "four")]
    assert row.fields[LOG].split("\n") == expected


def test_append_bounds_the_text_keeping_the_newest(store: Store) -> None:
    """An appended field is cut to its limit as Airtable counts (an emoji is two UTF-16 units):
    the newest lines stay, a mark counts the cut characters, exactly as in Python."""
    from flask_jobmetrics.airtable_limits import text_length
    from flask_jobmetrics.journal import append_text

    expected: str | None = None
    for batch in range(6):
        lines = "\n".join(_line(batch * 100 + i, f"élan {batch}.{i} 🚀 " + "…" * 30) for i in range(12))
        store.merge_clients([_append(lines, limit=1_500)])
        expected = append_text(expected, (1_500, lines))
    row = store.get_client("run-1", "acme")
    assert row is not None
    text = row.fields[LOG]
    assert text == expected
    assert text_length(text) <= 1_500
    assert text.startswith("[… ") and " earlier characters cut …]\n" in text
    assert text.endswith(_line(511, "élan 5.11 🚀 " + "…" * 30))


def test_append_to_a_finalized_row_matches_the_script(store: Store) -> None:
    """An append merged with a finalize callback gives the same text as one merged without."""
    store.merge_clients([_append(_line(5, "five"))])
    store.merge_client(_append(_line(4, "four")), lambda fields: None)
    store.merge_clients([_append(_line(4, "four"), client="other")])
    store.merge_clients([_append(_line(5, "five"), client="other")])
    first, second = store.get_client("run-1", "acme"), store.get_client("run-1", "other")
    assert first is not None and second is not None
    assert first.fields[LOG] == second.fields[LOG] == _line(4, "four") + "\n" + _line(5, "five")


@pytest.mark.parametrize("limit", [1_000, 1_001, 1_333])
def test_append_cuts_between_whole_characters_as_python_does(store: Store, limit: int) -> None:
    """A bound falling inside a wide character (two UTF-16 units) cuts before it, as
    longtext.bound_text does; a text without line breaks is cut mid-line the same way."""
    from flask_jobmetrics.journal import append_text

    expected: str | None = None
    for n in range(4):
        text = f"{n} " + "🚀é" * 300  # one long line: no line break to start at
        store.merge_clients([_append(text, limit=limit)])
        expected = append_text(expected, (limit, text))
    row = store.get_client("run-1", "acme")
    assert row is not None and row.fields[LOG] == expected


def test_an_append_redelivered_under_its_key_is_appended_once(store: Store) -> None:
    """An appended line travels with its delta: a delta re-delivered under the same
    idempotency key appends nothing the second time, like its sums."""
    from flask_jobmetrics.journal import append_op

    once = ClientDelta(
        "run-1", "acme", {LOG: append_op(_line(1, "webhook 1")), LEADS: ("sum", 1)}, idempotency_key="k1"
    )
    store.merge_client(once)
    row, applied = store.merge_client(once)
    assert applied is False
    assert row.fields[LOG] == _line(1, "webhook 1") and row.fields[LEADS] == 1


def test_a_batch_of_lines_delivered_twice_with_its_token_is_appended_once(store: Store) -> None:
    """Progress Log lines ride on the buffer's delivery token: a re-sent batch appends nothing."""
    batch = [_append(_line(1, "one")), _append(_line(2, "two"), client="other")]
    store.merge_clients(batch, token="t-lines")
    store.merge_clients(batch, token="t-lines")
    acme, other = store.get_client("run-1", "acme"), store.get_client("run-1", "other")
    assert acme is not None and acme.fields[LOG] == _line(1, "one")
    assert other is not None and other.fields[LOG] == _line(2, "two")
