"""Normalization and merge rules of metrics (schema.py)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from flask_jobmetrics.models import Status
from flask_jobmetrics.schema import (
    BUILTIN_METRICS,
    MetricRegistry,
    MetricSpec,
    combine,
    normalize_datetime,
    normalize_number,
    normalize_status,
    snake_case,
)

UTC = timezone.utc


@pytest.fixture
def registry() -> MetricRegistry:
    return MetricRegistry()


def test_thirteen_builtin_metrics() -> None:
    """The 13 built-in metrics of API.md §4 with their fields and aggregations."""
    table = {(s.name, s.field, s.type, s.aggregate) for s in BUILTIN_METRICS}
    assert len(BUILTIN_METRICS) == 13
    assert ("Profiles Scored", "Profiles Successfully Scored", "number", "sum") in table
    assert ("Posts Harvested", "Total Posts Harvested", "number", "sum") in table
    assert ("Start Time", "Start Time", "datetime", "min") in table
    assert ("End Time", "End Time", "datetime", "max") in table
    assert ("Status", "Status", "string", "last") in table


@pytest.mark.parametrize(
    "name",
    [
        "Profiles Successfully Scored",
        "Profiles Scored",
        "profiles_scored",
        "profiles_successfully_scored",
    ],
)
def test_a_metric_is_found_by_field_short_name_and_snake_case(registry: MetricRegistry, name: str) -> None:
    """Field name, short name and the snake_case of either all resolve to one field."""
    assert registry.normalize({name: 3}).values == {"Profiles Successfully Scored": 3}


def test_snake_case() -> None:
    """snake_case lowercases and joins words with underscores."""
    assert snake_case("Profiles Examined for Scoring") == "profiles_examined_for_scoring"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        ("12", 12),
        (" 12 ", 12),
        ("1,234", 1234),
        ("12.5", 12.5),
        ("1e3", 1000),
        (12.0, 12),
        (2.5, 2.5),
        (Decimal("7"), 7),
        (0, 0),
    ],
)
def test_numbers_are_converted(value: Any, expected: Any) -> None:
    """Numbers and numeric strings normalize; whole numbers become int."""
    result = normalize_number(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        float("nan"),
        float("inf"),
        float("-inf"),
        "nan",
        "inf",
        "",
        "  ",
        "abc",
        "12abc",
        "0x10",
        [5],
        {},
        (1,),
        {"a": 1},
        object(),
    ],
)
def test_bad_numbers_are_rejected(registry: MetricRegistry, value: Any) -> None:
    """Bools, NaN, ±inf, unparsable strings and containers are rejected, never turned into 0."""
    result = registry.normalize({"Leads Processed": value})
    assert result.values == {}
    assert [r.metric for r in result.rejected] == ["Leads Processed"]
    assert result.rejected[0].reason


def test_unparsable_number_is_reported_as_invalid(registry: MetricRegistry) -> None:
    """The old validateMetrics turned 'not-a-number' into 0 and reported nothing."""
    result = registry.normalize(
        {
            "Leads Processed": "42",
            "Posts Processed": 55,
            "Profiles Examined for Scoring": "not-a-number",
            "Start Time": "2023-06-15T12:00:00Z",
            "Invalid Field": "some value",
        }
    )
    assert result.values == {
        "Leads Processed": 42,
        "Posts Processed": 55,
        "Start Time": datetime(2023, 6, 15, 12, tzinfo=UTC),
    }
    assert [(r.metric, r.value) for r in result.rejected] == [
        ("Profiles Examined for Scoring", "not-a-number")
    ]
    assert result.unknown == {"Invalid Field": "some value"}


def test_negative_counters_are_rejected(registry: MetricRegistry) -> None:
    """Built-in counters cannot go negative."""
    result = registry.normalize({"Total Tokens": -3})
    assert result.values == {}
    assert "negative" in result.rejected[0].reason


def test_none_means_no_change(registry: MetricRegistry) -> None:
    """None is neither merged nor rejected."""
    result = registry.normalize({"Leads Processed": None})
    assert result.values == {} and result.rejected == [] and result.unknown == {}


def test_the_same_metric_under_two_names_is_merged(registry: MetricRegistry) -> None:
    """Two names of one sum metric in one update add up."""
    assert registry.normalize({"Total Tokens": 2, "total_tokens": 3}).values == {"Total Tokens": 5}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2023, 6, 15, 12), datetime(2023, 6, 15, 12, tzinfo=UTC)),
        (
            datetime(2023, 6, 15, 14, tzinfo=timezone(timedelta(hours=2))),
            datetime(2023, 6, 15, 12, tzinfo=UTC),
        ),
        (date(2023, 6, 15), datetime(2023, 6, 15, tzinfo=UTC)),
        ("2023-06-15T12:00:00Z", datetime(2023, 6, 15, 12, tzinfo=UTC)),
        ("2023-06-15T13:00:00+01:00", datetime(2023, 6, 15, 12, tzinfo=UTC)),
        ("2023-06-15", datetime(2023, 6, 15, tzinfo=UTC)),
        (1686830400, datetime(2023, 6, 15, 12, tzinfo=UTC)),
        (1686830400000, datetime(2023, 6, 15, 12, tzinfo=UTC)),
        ("1686830400", datetime(2023, 6, 15, 12, tzinfo=UTC)),
    ],
)
def test_datetimes_become_aware_utc(value: Any, expected: datetime) -> None:
    """Datetimes, dates, ISO strings and epoch s/ms normalize to aware UTC."""
    result = normalize_datetime(value)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize("value", ["not a date", "", "06/15/2023", True, float("nan"), [1], 10**20])
def test_bad_datetimes_are_rejected(registry: MetricRegistry, value: Any) -> None:
    """Unparsable dates are rejected with a reason."""
    result = registry.normalize({"End Time": value})
    assert result.values == {}
    assert result.rejected[0].metric == "End Time"


def test_min_and_max_compare_instants_not_strings() -> None:
    """13:00+05:00 is earlier than 12:00Z (the old code compared the strings)."""
    early = normalize_datetime("2023-06-15T13:00:00+05:00")
    late = normalize_datetime("2023-06-15T12:00:00Z")
    assert combine("min", late, early) == early
    assert combine("max", early, late) == late


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Running", Status.RUNNING),
        ("completed", Status.COMPLETED),
        ("FAILED", Status.FAILED),
        ("No Leads To Score", Status.NO_LEADS),
        ("Completed with Errors", Status.COMPLETED_WITH_ERRORS),
        ("In Progress", Status.RUNNING),
        ("Pending", Status.RUNNING),
        ("Success", Status.COMPLETED),
        ("Done", Status.COMPLETED),
        ("Error", Status.FAILED),
        ("Skipped", Status.NO_LEADS),
        ("No leads to process", Status.NO_LEADS),
        (Status.FAILED, Status.FAILED),
    ],
)
def test_statuses_and_aliases(given: Any, expected: Status) -> None:
    """Statuses are case-insensitive and the documented aliases map to them."""
    assert normalize_status(given) == expected.value


@pytest.mark.parametrize("value", ["Unknown", "", 1, None.__class__, ["Running"]])
def test_unknown_statuses_are_rejected(registry: MetricRegistry, value: Any) -> None:
    """Anything but a status or an alias is rejected."""
    assert registry.normalize({"Status": value}).rejected[0].metric == "Status"


@pytest.mark.parametrize(
    ("aggregate", "old", "new", "expected"),
    [("sum", 5, 5, 10), ("min", 3, 1, 1), ("max", 3, 1, 3), ("last", "a", "b", "b"), ("set", 9, 2, 2)],
)
def test_merge_rules(aggregate: str, old: Any, new: Any, expected: Any) -> None:
    """sum adds, min/max keep the extreme, last and set replace."""
    assert combine(aggregate, old, new) == expected


def test_register_metric_adds_a_named_metric(registry: MetricRegistry) -> None:
    """A registered metric is found by name, field and snake_case and merged by its rule."""
    registry.register(MetricSpec(name="Apify Cost", field="Apify API Costs", aggregate="sum"))
    assert registry.normalize({"apify_cost": "1.5"}).values == {"Apify API Costs": 1.5}
    assert registry.aggregate_of("Apify API Costs") == "sum"


def test_register_metric_refuses_clashes(registry: MetricRegistry) -> None:
    """A second spec for a field or a name in use is an error; the same spec twice is not."""
    spec = MetricSpec(name="Errors", field="Errors")
    registry.register(spec)
    registry.register(spec)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(MetricSpec(name="Errors2", field="Errors", aggregate="max"))
    with pytest.raises(ValueError, match="already used"):
        registry.register(MetricSpec(name="Leads Processed", field="Leads"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "field": "F"},
        {"name": "N", "field": "F", "type": "bool"},
        {"name": "N", "field": "F", "aggregate": "avg"},
        {"name": "N", "field": "F", "type": "string", "aggregate": "sum"},
        {"name": "N", "field": "F", "type": "string", "aggregate": "max"},
    ],
)
def test_metric_spec_validates_itself(kwargs: dict[str, Any]) -> None:
    """An impossible MetricSpec fails when it is made, naming the problem."""
    with pytest.raises(ValueError, match=r"MetricSpec|metric"):
        MetricSpec(**kwargs)


def test_normalize_needs_a_mapping(registry: MetricRegistry) -> None:
    """A list of metrics is a TypeError naming the type."""
    with pytest.raises(TypeError, match="list"):
        registry.normalize([("Leads Processed", 1)])  # type: ignore[arg-type]


def test_non_string_metric_names_are_rejected(registry: MetricRegistry) -> None:
    """A metric named by a non-string is rejected, not looked up."""
    result = registry.normalize({1: 5})  # type: ignore[dict-item]
    assert result.rejected[0].reason == "metric name must be a string"
