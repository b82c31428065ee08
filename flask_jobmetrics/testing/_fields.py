"""Field definitions, their schema JSON, and cell-value validation per field type."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from ..airtable_limits import MAX_CELL_TEXT_LENGTH, text_length
from ._errors import AirtableError

__all__ = [
    "MERGEABLE_TYPES",
    "FieldDef",
    "check_create_options",
    "coerce_value",
    "format_datetime",
    "is_empty",
    "normalize_options",
    "parse_datetime",
]

TEXT_TYPES = frozenset({"singleLineText", "multilineText", "email", "url", "phoneNumber", "richText"})
NUMBER_TYPES = frozenset({"number", "currency", "percent", "rating", "duration"})
SELECT_TYPES = frozenset({"singleSelect", "multipleSelects"})
#: Text types whose cells hold at most ``MAX_CELL_TEXT_LENGTH`` characters.
LIMITED_TEXT_TYPES = frozenset({"singleLineText", "multilineText", "richText"})
#: Types a ``performUpsert.fieldsToMergeOn`` field may have (Airtable's "Update multiple
#: records": number, text, long text, single select, multiple select, date; never computed).
MERGEABLE_TYPES = frozenset(
    {
        "singleLineText",
        "multilineText",
        "email",
        "url",
        "phoneNumber",
        "number",
        "currency",
        "percent",
        "singleSelect",
        "multipleSelects",
        "date",
        "dateTime",
    }
)
#: Options the metadata API requires when it creates a field of the type.
_REQUIRED_CREATE_OPTIONS: dict[str, tuple[str, ...]] = {
    "number": ("precision",),
    "percent": ("precision",),
    "currency": ("precision", "symbol"),
    "rating": ("color", "icon", "max"),
    "duration": ("durationFormat",),
    "checkbox": ("color", "icon"),
    "date": ("dateFormat",),
    "dateTime": ("dateFormat", "timeFormat", "timeZone"),
    "singleSelect": ("choices",),
    "multipleSelects": ("choices",),
}
_TRUE_WORDS = frozenset({"true", "yes", "checked", "1", "on", "x"})
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")

_DATE_FORMAT = {"format": "l", "name": "local"}
_DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "number": {"precision": 0},
    "currency": {"precision": 2, "symbol": "$"},
    "percent": {"precision": 0},
    "rating": {"color": "yellowBright", "icon": "star", "max": 5},
    "duration": {"durationFormat": "h:mm"},
    "checkbox": {"color": "greenBright", "icon": "check"},
    "date": {"dateFormat": _DATE_FORMAT},
    "dateTime": {
        "timeZone": "utc",
        "dateFormat": _DATE_FORMAT,
        "timeFormat": {"format": "HH:mm", "name": "24hour"},
    },
    "singleSelect": {"choices": []},
    "multipleSelects": {"choices": []},
}


@dataclass
class FieldDef:
    """One field of a table."""

    id: str
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    def schema(self) -> dict[str, Any]:
        """The field as the metadata API returns it."""
        out: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.options:
            out["options"] = self.options
        return out

    def choice_names(self) -> list[str]:
        return [choice["name"] for choice in self.options.get("choices", [])]


def normalize_options(
    field_type: str, options: dict[str, Any] | None, new_id: Callable[[str], str]
) -> dict[str, Any]:
    """Fill the options Airtable always returns for ``field_type``; give choices ids."""
    merged = {**_DEFAULT_OPTIONS.get(field_type, {}), **(options or {})}
    if field_type in SELECT_TYPES:
        merged["choices"] = [
            {
                "id": choice.get("id") or new_id("sel"),
                "name": choice["name"],
                "color": choice.get("color", "blueLight2"),
            }
            for choice in merged.get("choices", [])
        ]
    return merged


def check_create_options(name: str, field_type: str, options: Any) -> None:
    """Refuse a field the metadata API would not create: 422 ``INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE``
    when a type that needs options (number's ``precision``, dateTime's formats and zone, ...)
    comes without them."""
    required = _REQUIRED_CREATE_OPTIONS.get(field_type, ())
    if not required:
        return
    if not isinstance(options, dict):
        missing = f"{name}.options"
    else:
        absent = [key for key in required if key not in options]
        if not absent:
            return
        missing = f"{name}.options.{absent[0]}"
    raise AirtableError.of(
        422, "INVALID_FIELD_TYPE_OPTIONS_FOR_CREATE", f"Failed schema validation: {missing} is missing"
    )


def is_empty(value: Any) -> bool:
    """Airtable omits these from responses: None, "", [], False."""
    return value is None or value is False or value == "" or value == []


def parse_datetime(text: str) -> datetime | None:
    """An ISO-8601 date or datetime string -> aware UTC datetime (naive = UTC); else None."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_datetime(value: datetime) -> str:
    """``2026-11-29T06:24:50.000Z``: what Airtable returns for a dateTime cell."""
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _cannot_accept(fdef: FieldDef) -> AirtableError:
    return AirtableError.of(
        422, "INVALID_VALUE_FOR_COLUMN", f'Field "{fdef.name}" cannot accept the provided value'
    )


def _as_text(fdef: FieldDef, value: Any, typecast: bool) -> str:
    if isinstance(value, str):
        return value
    if typecast and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _cannot_accept(fdef)


def _as_number(fdef: FieldDef, value: Any, typecast: bool) -> int | float:
    number: float
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif typecast and isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            raise _cannot_accept(fdef) from None
    else:
        raise _cannot_accept(fdef)
    if not math.isfinite(number):
        raise _cannot_accept(fdef)
    precision = fdef.options.get("precision")
    if isinstance(precision, int):
        number = round(number, precision)
    return int(number) if number.is_integer() else number


def _as_checkbox(fdef: FieldDef, value: Any, typecast: bool) -> bool:
    if isinstance(value, bool):
        return value
    if typecast and isinstance(value, (str, int, float)):
        return str(value).strip().lower() in _TRUE_WORDS
    raise _cannot_accept(fdef)


def _as_date(fdef: FieldDef, value: Any) -> str:
    if not isinstance(value, str):
        raise _cannot_accept(fdef)
    parsed = parse_datetime(value)
    if parsed is None:
        raise AirtableError.of(
            422, "INVALID_VALUE_FOR_COLUMN", f'Cannot parse date value "{value}" for field {fdef.name}'
        )
    if fdef.type == "date":
        return value.strip()[:10] if _DATE_ONLY.match(value.strip()) else parsed.date().isoformat()
    return format_datetime(parsed)


def _as_choice(fdef: FieldDef, value: Any, typecast: bool, new_id: Callable[[str], str]) -> str:
    name = _as_text(fdef, value, typecast)
    if name in fdef.choice_names():
        return name
    if not typecast:
        raise AirtableError.of(
            422,
            "INVALID_MULTIPLE_CHOICE_OPTIONS",
            f'Insufficient permissions to create new select option ""{name}""',
        )
    fdef.options.setdefault("choices", []).append({"id": new_id("sel"), "name": name, "color": "blueLight2"})
    return name


def coerce_value(fdef: FieldDef, value: Any, typecast: bool, new_id: Callable[[str], str]) -> Any:
    """Validate ``value`` for ``fdef``; return what is stored (None clears the cell).

    With ``typecast`` strings become numbers and unknown select options are created (the
    option is added to ``fdef`` right away: callers roll back on a failed request).
    """
    if value is None or value == "" or value == []:
        return None
    kind = fdef.type
    if kind in TEXT_TYPES:
        text = _as_text(fdef, value, typecast)
        if kind in LIMITED_TEXT_TYPES and text_length(text) > MAX_CELL_TEXT_LENGTH:
            raise _cannot_accept(fdef)
        return text
    if kind in NUMBER_TYPES:
        return _as_number(fdef, value, typecast)
    if kind == "checkbox":
        return _as_checkbox(fdef, value, typecast) or None
    if kind in ("date", "dateTime"):
        if isinstance(value, (date, datetime)):
            value = value.isoformat()
        return _as_date(fdef, value)
    if kind == "singleSelect":
        return _as_choice(fdef, value, typecast, new_id)
    if kind == "multipleSelects":
        items = value.split(",") if typecast and isinstance(value, str) else value
        if not isinstance(items, list):
            raise _cannot_accept(fdef)
        return [
            _as_choice(fdef, item.strip() if typecast and isinstance(item, str) else item, typecast, new_id)
            for item in items
        ]
    return value
