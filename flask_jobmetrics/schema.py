"""Metrics: their specs, names, normalization and merge rules.

The hot path (``normalize``) is plain Python: one dict lookup per
name, ``type()`` checks per value. Pydantic is not used here.

Canonical values after normalization: ``int`` or finite ``float`` for numbers, an aware
UTC ``datetime`` for datetimes, the ``Status`` value string for ``Status``, ``str`` for
strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, timezone
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .formatting import shorten
from .model_loading import MODEL_LOCK
from .status import Status

if TYPE_CHECKING:  # the models load pydantic: imported where a model is made
    from .models import RejectedMetric

__all__ = [
    "AGGREGATES",
    "BUILTIN_METRICS",
    "METRIC_TYPES",
    "MetricRegistry",
    "MetricSpec",
    "Normalized",
    "combine",
    "normalize_datetime",
    "normalize_number",
    "normalize_status",
    "beyond_exact",
    "rejection",
    "snake_case",
]

MetricType = Literal["number", "datetime", "string"]
Aggregate = Literal["sum", "min", "max", "last"]
METRIC_TYPES: frozenset[str] = frozenset({"number", "datetime", "string"})
AGGREGATES: frozenset[str] = frozenset({"sum", "min", "max", "last"})

STATUS = "Status"
START_TIME = "Start Time"
END_TIME = "End Time"
SYSTEM_NOTES = "System Notes"
ERROR_DETAILS = "Error Details"
PROGRESS_LOG = "Progress Log"
#: When a client row last received an update (the watchdog's clock); internal fields start
#: with ``_``: stored and merged like any other, never published or listed as a metric.
LAST_UPDATE = "_last_update"
CLIENTS_PROCESSED = "Clients Processed"
CLIENTS_WITH_ERRORS = "Clients With Errors"

_EPOCH_MS_THRESHOLD = 1e11  # 1e11 s is the year 5138: larger numbers are milliseconds


class InvalidValue(ValueError):
    """Raised by a normalizer; its message is the reason given in ``RejectedMetric``."""


#: The model class, imported with the first rejection (the models load pydantic).
_rejected_metric: type[RejectedMetric] | None = None


def rejection(metric: str, value: Any, reason: str) -> RejectedMetric:
    """``RejectedMetric(metric=metric, value=value, reason=reason)``, without importing the
    models (and pydantic) before the first metric is rejected."""
    global _rejected_metric
    if _rejected_metric is None:
        with MODEL_LOCK:
            from .models import RejectedMetric

        _rejected_metric = RejectedMetric
    return _rejected_metric(metric=metric, value=value, reason=reason)


def snake_case(name: str) -> str:
    """``"Profiles Examined for Scoring"`` -> ``"profiles_examined_for_scoring"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


# -- value normalizers ------------------------------------------------------------------


#: Numbers beyond 2**53 are not exact in Airtable (JavaScript numbers) nor in floats.
MAX_EXACT = 2**53
#: The reason given when a sum would pass ``MAX_EXACT`` (the value is not added).
SUM_TOO_LARGE = "the sum would pass 2**53, which Airtable cannot hold exactly (not added)"


def beyond_exact(value: Any) -> bool:
    """Whether an int or float is beyond ``MAX_EXACT`` in size (False for anything else)."""
    kind = type(value)  # type(), not isinstance: a bool is no number here, and this is the hot path
    return (kind is int or kind is float) and not -MAX_EXACT <= value <= MAX_EXACT


_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _parse_number_text(text: str) -> int | float:
    cleaned = text.strip()
    if "," in cleaned:  # thousands separators only: "1,234" yes, "12,5" or "1,,2" no
        if _GROUPED.fullmatch(cleaned) is None:
            raise InvalidValue(f"{shorten(text)} is not a number (commas only as thousands separators)")
        cleaned = cleaned.replace(",", "")
    if not cleaned:
        raise InvalidValue("empty string is not a number")
    try:
        return int(cleaned)
    except ValueError:
        pass
    try:
        return float(cleaned)
    except ValueError:
        raise InvalidValue(f"{shorten(text)} is not a number") from None


def normalize_number(value: Any) -> int | float:
    """An int, a finite float or a numeric string -> ``int`` (whole) or ``float``, at most
    ``2**53`` in size (beyond it Airtable cannot hold the value exactly)."""
    number = _normalize_number(value)
    if abs(number) > MAX_EXACT:
        raise InvalidValue(f"{shorten(value, 40)} is beyond 2**53, which Airtable cannot hold exactly")
    return number


def _normalize_number(value: Any) -> int | float:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        raise InvalidValue("a bool is not a number")
    if kind is float or isinstance(value, (float, Decimal, Fraction)):
        try:
            number: int | float = float(value)
        except (OverflowError, ValueError):  # Fraction(10**400), Decimal("sNaN")
            raise InvalidValue(f"{shorten(value)} is not a finite number a float can hold") from None
    elif isinstance(value, int):
        return int(value)
    elif isinstance(value, str):
        number = _parse_number_text(value)
        if type(number) is int:
            return number
    else:
        raise InvalidValue(f"a {kind.__name__} is not a number")
    if not math.isfinite(number):
        raise InvalidValue(f"{shorten(value)} is not a finite number")
    return int(number) if float(number).is_integer() else number


def _from_epoch(seconds: float) -> datetime:
    if abs(seconds) >= _EPOCH_MS_THRESHOLD:
        seconds /= 1000.0
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidValue(f"{shorten(seconds)} is out of the range of datetimes") from None


def normalize_datetime(value: Any) -> datetime:
    """A datetime (naive = UTC), date, ISO-8601 string or epoch s/ms -> aware UTC datetime."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            return value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:  # 0001-01-01T00:00+14:00 is before the first UTC datetime
            raise InvalidValue(f"{shorten(value)} is out of the range of datetimes in UTC") from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise InvalidValue("a bool is not a datetime")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidValue(f"{shorten(value)} is not a finite epoch time")
        return _from_epoch(float(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidValue("empty string is not a datetime")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return _from_epoch(float(text))
        if text[-1] in "zZ":
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidValue(f"{shorten(value)} is not an ISO-8601 datetime") from None
        return normalize_datetime(parsed)
    raise InvalidValue(f"a {type(value).__name__} is not a datetime")


_STATUS_ALIASES: dict[str, str] = {s.value.casefold(): s.value for s in Status}
_STATUS_ALIASES.update(
    {
        "in progress": Status.RUNNING.value,
        "pending": Status.RUNNING.value,
        "success": Status.COMPLETED.value,
        "done": Status.COMPLETED.value,
        "error": Status.FAILED.value,
        "skipped": Status.NO_LEADS.value,
        "no leads to process": Status.NO_LEADS.value,
    }
)


def normalize_status(value: Any) -> str:
    """A ``Status`` or its name/alias, case-insensitive -> the ``Status`` value string."""
    if isinstance(value, Status):
        return value.value
    if not isinstance(value, str):
        raise InvalidValue(f"a {type(value).__name__} is not a status")
    found = _STATUS_ALIASES.get(" ".join(value.split()).casefold())
    if found is None:
        raise InvalidValue(f"{shorten(value)} is not a known status")
    return found


def _normalize_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise InvalidValue(f"a {type(value).__name__} is not a string")


_TYPE_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "number": normalize_number,
    "datetime": normalize_datetime,
    "string": _normalize_string,
}


# -- specs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how it is named, typed and merged.

    ``name`` is the short name, ``field`` the Airtable field name. ``aliases`` are extra
    accepted names. ``non_negative`` rejects negative numbers. ``normalize`` replaces the
    type's normalizer (it raises ``ValueError`` with the reason for a bad value).
    """

    name: str
    field: str
    type: MetricType = "number"
    aggregate: Aggregate = "sum"
    aliases: tuple[str, ...] = ()
    non_negative: bool = False
    description: str = ""
    normalize: Callable[[Any], Any] | None = dataclass_field(default=None, compare=False)

    _normalizer: Callable[[Any], Any] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for attr in ("name", "field"):
            text = getattr(self, attr)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"MetricSpec.{attr} must be a non-empty string, got {text!r}")
        if self.type not in METRIC_TYPES:
            raise ValueError(f"MetricSpec.type must be one of {sorted(METRIC_TYPES)}, got {self.type!r}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(
                f"MetricSpec.aggregate must be one of {sorted(AGGREGATES)}, got {self.aggregate!r}"
            )
        if self.aggregate == "sum" and self.type != "number":
            raise ValueError(f"metric {self.name!r}: aggregate 'sum' needs type 'number'")
        if self.aggregate in ("min", "max") and self.type == "string":
            raise ValueError(f"metric {self.name!r}: aggregate {self.aggregate!r} needs a number or datetime")
        # chosen once here, not on every value (coerce is on the update path)
        object.__setattr__(self, "_normalizer", self.normalize or _TYPE_NORMALIZERS[self.type])

    def names(self) -> set[str]:
        """Every name this metric is accepted under."""
        given = {self.name, self.field, *self.aliases}
        return given | {snake_case(n) for n in given}

    def coerce(self, value: Any) -> Any:
        """Normalize ``value`` or raise ``ValueError`` with the reason."""
        result = self._normalizer(value)
        if self.non_negative and result < 0:
            raise InvalidValue(f"{shorten(value)} is negative")
        return result


def _counter(name: str, field: str) -> MetricSpec:
    return MetricSpec(name=name, field=field, non_negative=True)


BUILTIN_METRICS: tuple[MetricSpec, ...] = (
    _counter("Leads Processed", "Leads Processed"),
    _counter("Posts Processed", "Posts Processed"),
    _counter("Profiles Examined", "Profiles Examined for Scoring"),
    _counter("Profiles Scored", "Profiles Successfully Scored"),
    _counter("Posts Harvested", "Total Posts Harvested"),
    _counter("Posts Examined", "Posts Examined for Scoring"),
    _counter("Posts Scored", "Posts Successfully Scored"),
    _counter("Profile Tokens", "Profile Scoring Tokens"),
    _counter("Post Tokens", "Post Scoring Tokens"),
    _counter("Total Tokens", "Total Tokens"),
    MetricSpec(name=START_TIME, field=START_TIME, type="datetime", aggregate="min"),
    MetricSpec(name=END_TIME, field=END_TIME, type="datetime", aggregate="max"),
    MetricSpec(name=STATUS, field=STATUS, type="string", aggregate="last", normalize=normalize_status),
)

#: The metrics that say whether a client had anything to score.
WORK_FIELDS: tuple[str, ...] = (
    "Leads Processed",
    "Posts Processed",
    "Profiles Examined for Scoring",
    "Posts Examined for Scoring",
)


class Normalized(NamedTuple):
    """The result of normalizing one update."""

    #: Airtable field -> canonical value, for every valid known metric.
    values: dict[str, Any]
    #: Known metrics with invalid values, and unknown names given with containers.
    rejected: list[RejectedMetric]
    #: Unknown metric name -> value as given (the caller applies UNKNOWN_METRICS).
    unknown: dict[str, Any]


class MetricRegistry:
    """The metrics one app knows: the built-ins plus those registered."""

    def __init__(self, specs: Iterable[MetricSpec] = BUILTIN_METRICS) -> None:
        self._by_field: dict[str, MetricSpec] = {}
        self._by_name: dict[str, MetricSpec] = {}
        #: Every name of a ``sum`` metric with the number type's own normalizer ->
        #: (its field, the smallest whole number it accepts): ``plain_sums`` reads it.
        self._plain: dict[str, tuple[str, int]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: MetricSpec) -> None:
        """Add ``spec``; registering an equal spec again is a no-op, a clash is an error."""
        if not isinstance(spec, MetricSpec):
            raise TypeError(f"register_metric needs a MetricSpec, got {type(spec).__name__}")
        existing = self._by_field.get(spec.field)
        if existing is not None:
            if existing == spec:
                return
            raise ValueError(f"metric field {spec.field!r} is already registered as {existing!r}")
        names = spec.names()
        for name in names:
            other = self._by_name.get(name)
            if other is not None:
                raise ValueError(f"metric name {name!r} is already used by field {other.field!r}")
        self._by_field[spec.field] = spec
        plain = spec.aggregate == "sum" and spec.normalize is None
        floor = 0 if spec.non_negative else -MAX_EXACT
        for name in names:
            self._by_name[name] = spec
            if plain:
                self._plain[name] = (spec.field, floor)

    def resolve(self, name: str) -> MetricSpec | None:
        """The spec named ``name`` (field, short name or snake_case of either), else None."""
        return self._by_name.get(name)

    def by_field(self, field_name: str) -> MetricSpec | None:
        return self._by_field.get(field_name)

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return tuple(self._by_field.values())

    def aggregate_of(self, field_name: str) -> str:
        """The aggregation of a field; unknown (kept) fields merge as ``last``."""
        spec = self._by_field.get(field_name)
        return spec.aggregate if spec is not None else "last"

    def plain_sums(self, metrics: Any) -> dict[str, tuple[str, Any]] | None:
        """The ops of the usual update, a ``dict`` of whole numbers for known ``sum``
        metrics with each field given once: ``{field: ("sum", n)}``, exactly what
        ``normalize`` makes of it. None for anything else: the caller then takes
        ``normalize``, which also says what is wrong."""
        if type(metrics) is not dict:
            return None
        plain = self._plain
        ops: dict[str, tuple[str, Any]] = {}
        for name, value in metrics.items():
            found = plain.get(name) if type(name) is str else None  # as normalize: str names only
            if found is None or type(value) is not int or not found[1] <= value <= MAX_EXACT:
                return None
            ops[found[0]] = ("sum", value)
        return ops if len(ops) == len(metrics) else None  # a field given twice: normalize combines

    def normalize(self, metrics: Mapping[str, Any]) -> Normalized:
        """Normalize one update: names to fields, values to canonical values.

        ``None`` values are "no change": neither merged nor rejected.
        """
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a mapping of name to value, got {type(metrics).__name__}")
        values: dict[str, Any] = {}
        rejected: list[RejectedMetric] = []
        unknown: dict[str, Any] = {}
        lookup = self._by_name
        for name, value in metrics.items():
            if value is None:
                continue
            spec = lookup.get(name) if type(name) is str else None
            if spec is None:
                if not isinstance(name, str):
                    rejected.append(rejection(shorten(name), value, "metric name must be a string"))
                else:
                    unknown[name] = value
                continue
            try:
                coerced = spec.coerce(value)
            except (ValueError, TypeError, ArithmeticError) as exc:
                rejected.append(rejection(spec.field, value, shorten(exc, 300, quote=False)))
                continue
            if (
                spec.aggregate == "sum"
                and spec.field in values
                and beyond_exact(values[spec.field] + coerced)
            ):
                rejected.append(rejection(spec.field, value, SUM_TOO_LARGE))
                continue
            if spec.field in values:
                coerced = combine(spec.aggregate, values[spec.field], coerced)
            values[spec.field] = coerced
        return Normalized(values, rejected, unknown)


# -- merge rules ------------------------------------------------------------------------


def combine(aggregate: str, old: Any, new: Any) -> Any:
    """Merge ``new`` into ``old`` by ``aggregate`` (``set`` replaces, like ``last``)."""
    if old is None:
        return new
    if new is None:
        return old
    if aggregate == "sum":
        return old + new
    if aggregate == "min":
        return new if new < old else old
    if aggregate == "max":
        return new if new > old else old
    return new
