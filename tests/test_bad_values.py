"""Every bad value is a rejection, never a crash; sums never pass 2**53 in any store."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_jobmetrics.deltas import merge_ops
from flask_jobmetrics.exceptions import InvalidMetricError, InvalidRunIdError
from flask_jobmetrics.models import RejectedMetric
from flask_jobmetrics.schema import BUILTIN_METRICS, MAX_EXACT
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores.base import ClientRow, Store
from flask_jobmetrics.stores.memory import MemoryStore
from flask_jobmetrics.stores.sqlite import SQLiteStore

from .support import Clock

RUN = "230615-120000"
TOKENS = "Total Tokens"
MINUS_14 = timezone(timedelta(hours=-14))


def _service(store: Store | None = None, **options: Any) -> MetricsService:
    return MetricsService(
        store or MemoryStore(), clock=Clock(), buffer_ttl=3600, flush_interval=3600, **options
    )


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("Start Time", "0001-01-01T00:00:00+14:00"),
        ("Start Time", datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=14)))),
        ("End Time", datetime(9999, 12, 31, 23, tzinfo=MINUS_14)),
        ("End Time", "9999-12-31T23:00:00-14:00"),
        ("Leads Processed", Fraction(10**400)),
        ("Leads Processed", Decimal("1e400")),
        ("Leads Processed", Decimal("sNaN")),
        ("Leads Processed", "9" * 5000),
    ],
)
def test_values_out_of_range_are_rejected_not_raised(metric: str, value: Any) -> None:
    """Values that overflow on conversion are rejected and the rest of the update is kept."""
    service = _service()
    run = service.update_client_metrics(RUN, "acme", {metric: value, "Posts Processed": 2})
    assert [r.metric for r in run.rejected] == [metric]
    assert run.metrics["Posts Processed"] == 2
    service.close()


def test_rejected_value_is_the_value_as_given() -> None:
    """A rejected float NaN stays a float NaN in RejectedMetric.value (not the text 'nan')."""
    service = _service()
    run = service.update_client_metrics(RUN, "acme", {TOKENS: float("nan"), "Leads Processed": [1]})
    by_metric = {r.metric: r.value for r in run.rejected}
    assert isinstance(by_metric[TOKENS], float) and math.isnan(by_metric[TOKENS])
    assert by_metric["Leads Processed"] == [1]
    service.close()


def test_rejected_values_are_logged_cut_short(caplog: pytest.LogCaptureFixture) -> None:
    """A huge rejected value is logged, and its reason given, cut to a sane length."""
    service = _service()
    with caplog.at_level(logging.WARNING, logger="flask_jobmetrics"):
        run = service.update_client_metrics(RUN, "acme", {"Leads Processed": "x" * 100_000})
    (problem,) = run.rejected
    assert len(problem.value) == 100_000
    assert len(problem.reason) < 200
    (line,) = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(line) < 500 and "..." in line
    service.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    yield made
    made.close()


def test_a_sum_passing_2_53_is_rejected_and_reported(store: Store) -> None:
    """{"Total Tokens": 2**53} then {"Total Tokens": 1}: the second is rejected and reported;
    2**53 is stored, before and after a flush in between."""
    reports: list[list[RejectedMetric]] = []
    service = _service(store, on_rejected=lambda run, client, rejected: reports.append(rejected))
    service.update_client_metrics(RUN, "acme", {TOKENS: 2**53})
    run = service.update_client_metrics(RUN, "acme", {TOKENS: 1, "Leads Processed": 1})
    assert [(r.metric, r.value) for r in run.rejected] == [(TOKENS, 1)]
    service.flush()
    assert [r.metric for r in service.update_client_metrics(RUN, "acme", {TOKENS: 1}).rejected] == [TOKENS]
    service.flush()
    row = store.get_client(RUN, "acme")
    assert row is not None and row.fields[TOKENS] == MAX_EXACT and row.fields["Leads Processed"] == 1
    assert len(reports) == 2
    service.close()


def test_a_sum_passing_2_53_from_another_process_is_refused_by_the_store(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """When another process's sum got there first, the store refuses the merge that would pass
    2**53: the total stays 2**53, the refusal is logged as an error and reported."""
    reports: list[list[RejectedMetric]] = []
    first = _service(store)
    second = _service(store, on_rejected=lambda run, client, rejected: reports.append(rejected))
    second.update_client_metrics(RUN, "acme", {TOKENS: 1})  # this process saw no tokens yet
    first.update_client_metrics(RUN, "acme", {TOKENS: 2**53 - 1})
    first.flush()
    second.update_client_metrics(RUN, "acme", {TOKENS: 1})  # 2**53 - 1 + 2 passes 2**53
    with caplog.at_level(logging.ERROR, logger="flask_jobmetrics"):
        second.flush()
    row = store.get_client(RUN, "acme")
    assert row is not None and row.fields[TOKENS] == 2**53 - 1
    assert [(r.metric, r.value) for r in reports[0]] == [(TOKENS, 2)]
    assert any("2**53" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    first.close()
    second.close()


# -- arbitrary values ---------------------------------------------------------------------

_NAMES = sorted({name for spec in BUILTIN_METRICS for name in spec.names()} | {"unknown metric"})
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.just(Fraction(10**400)),
    st.text(max_size=30),
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{1,5})?", fullmatch=True),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.datetimes(timezones=st.builds(timezone, st.timedeltas(timedelta(hours=-23), timedelta(hours=23)))),
    st.dates(),
    st.timedeltas(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_COUNTERS = {spec.field for spec in BUILTIN_METRICS if spec.non_negative}
_UPDATES = st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6)


def _check_stored(fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert abs(value) <= MAX_EXACT, (name, value)
            if name in _COUNTERS:
                assert value >= 0, (name, value)
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0), (name, value)
        assert not isinstance(value, (date, timedelta)) or isinstance(value, datetime), (name, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(updates=st.lists(_UPDATES, min_size=1, max_size=5), strict=st.booleans())
def test_arbitrary_values_never_crash_nor_store_bad_numbers(
    updates: list[dict[str, Any]], strict: bool
) -> None:
    """Arbitrary Python values through update_client_metrics raise only documented errors, and
    the store never holds NaN, infinities, negative counters, naive times or sums past 2**53."""
    service = _service(strict=strict, unknown_metrics="keep")
    try:
        for metrics in updates:
            try:
                service.update_client_metrics(RUN, "acme", metrics)
            except InvalidMetricError:
                assert strict
        service.flush()
        row = service.store.get_client(RUN, "acme")
        if row is not None:
            _check_stored(dict(row.fields))
    finally:
        service.close()


@pytest.mark.parametrize("run_id", [None, 5, b"230615-120000", "", "not a run"])
def test_bad_run_ids_are_documented_errors(run_id: Any) -> None:
    """A run ID that is not one raises InvalidRunIdError, a ValueError."""
    service = _service()
    with pytest.raises(InvalidRunIdError):
        service.update_client_metrics(run_id, "acme", {"Leads Processed": 1})
    service.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(updates=st.lists(_UPDATES, min_size=1, max_size=5))
def test_arbitrary_values_through_the_lua_merge(redis_store: Store, updates: list[dict[str, Any]]) -> None:
    """The same through the Redis store's Lua merge: nothing but documented values is stored."""
    service = _service(redis_store, unknown_metrics="keep")
    try:
        for metrics in updates:
            service.update_client_metrics(RUN, "acme", metrics)
    finally:
        service.buffer.stop(drain=True)  # not service.close(): the store is shared by the examples
    row = redis_store.get_client(RUN, "acme")
    assert row is not None
    _check_stored(dict(row.fields))


# -- the usual update's shortcut and the bound in the buffer's merge --------------------


_NAMES = sorted({name for spec in BUILTIN_METRICS for name in spec.names()})


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*_NAMES, "Unknown Thing", "leads"]),
        st.one_of(
            st.integers(min_value=-5, max_value=2**53 + 5),
            st.integers(min_value=2**53 - 3, max_value=2**53 + 3),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=100),
            st.none(),
            st.text(max_size=3),
        ),
        max_size=5,
    )
)
def test_the_plain_shortcut_makes_the_ops_normalize_makes(metrics: dict[str, Any]) -> None:
    """Whenever ``plain_sums`` answers, its ops are exactly those of the full path
    (``normalize`` then ``ops_of``), with nothing rejected; it answers for every dict of
    whole numbers for known sums given once."""
    service = _service()
    plain = service.registry.plain_sums(metrics)
    values, rejected = service.normalize_update(metrics, RUN, "acme")
    if plain is not None:
        assert plain == service.ops_of(values) and rejected == []
    sums = {spec.field: spec for spec in BUILTIN_METRICS if spec.aggregate == "sum"}
    fields = [service.registry.resolve(name) for name in metrics]
    usual = (
        all(spec is not None and spec.field in sums for spec in fields)
        and len({spec.field for spec in fields if spec is not None}) == len(metrics)
        and all(type(v) is int and 0 <= v <= MAX_EXACT for v in metrics.values())
    )
    assert (plain is not None) == usual
    service.close()


def test_a_small_sum_onto_a_stored_sum_near_2_53_is_refused_in_the_buffer(store: Store) -> None:
    """A row stored with a sum near 2**53 leaves no headroom: the buffer's merge looks that
    sum up and leaves out an update whose total would pass 2**53, keeping the rest; a sum
    of another field of the row is added."""
    service = _service(store)
    service.update_client_metrics(RUN, "acme", {TOKENS: 2**53 - 2, "Leads Processed": 1})
    service.flush()
    refused = service.update_client_metrics(RUN, "acme", {TOKENS: 3, "Leads Processed": 2})
    kept = service.update_client_metrics(RUN, "acme", {TOKENS: 2, "Leads Processed": 4})
    assert [(r.metric, r.value) for r in refused.rejected] == [(TOKENS, 3)]
    assert kept.rejected == [] and kept.metrics[TOKENS] == 2**53
    service.flush()
    row = store.get_client(RUN, "acme")
    assert row is not None and row.fields[TOKENS] == 2**53 and row.fields["Leads Processed"] == 7
    service.close()


def test_a_rows_headroom_is_how_far_its_largest_number_is_from_2_53() -> None:
    """``ClientRow.headroom``: 2**53 minus the largest number of the row (0 when one is
    at the bound); text and times do not count."""
    assert ClientRow("r", "c", {}).headroom == MAX_EXACT
    assert ClientRow("r", "c", {"A": 5, "B": -9, "S": "x" * 20}).headroom == MAX_EXACT - 9
    assert ClientRow("r", "c", {"A": 2.5}).headroom == MAX_EXACT - 3
    assert ClientRow("r", "c", {"A": MAX_EXACT}).headroom == 0
    assert ClientRow("r", "c", {"A": math.inf}).headroom == 0


def test_a_str_subclass_name_is_never_taken_by_the_shortcut() -> None:
    """A name that is a ``str`` subclass (an enum member) is an unknown metric to
    ``normalize``; the shortcut does not take it either, whatever the rest of the update."""

    class Metric(str, enum.Enum):
        LEADS = "Leads Processed"

    service = _service()
    assert service.registry.plain_sums({Metric.LEADS: 5}) is None
    alone = service.update_client_metrics(RUN, "acme", {Metric.LEADS: 5})
    mixed = service.update_client_metrics(RUN, "acme", {Metric.LEADS: 5, TOKENS: 1.5})
    assert [r.metric for r in alone.rejected] == [r.metric for r in mixed.rejected] == ["Leads Processed"]
    service.close()


def test_a_sum_onto_a_total_is_bounded_by_the_total_not_the_stored_value() -> None:
    """A total (``set``) replaces the stored value: a sum onto it is checked against 2**53
    alone, not with the stored value added."""
    held = {TOKENS: ("set", 2**53 - 5)}
    assert merge_ops(held, {TOKENS: ("sum", 3)}, {TOKENS: 2**53 - 1}, 0) == []
    assert held[TOKENS] == ("set", 2**53 - 2)
    assert merge_ops(held, {TOKENS: ("sum", 3)}, {TOKENS: 0}, 0) == [(TOKENS, 3)]


def test_an_update_with_a_key_lists_a_sum_the_store_refused(store: Store) -> None:
    """With an idempotency key the update goes straight to the store; a sum it refuses (the
    total would pass 2**53) is listed in the returned view's rejections."""
    service = _service(store)
    service.update_client_metrics(RUN, "acme", {TOKENS: 2**53 - 1}, idempotency_key="first")
    run = service.update_client_metrics(
        RUN, "acme", {TOKENS: 2, "Leads Processed": 1}, idempotency_key="second"
    )
    assert [(r.metric, r.value) for r in run.rejected] == [(TOKENS, 2)]
    assert run.metrics[TOKENS] == 2**53 - 1 and run.metrics["Leads Processed"] == 1
    service.close()
