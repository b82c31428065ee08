"""Evaluation of parsed formulas against one record.

Values are ``None`` (blank), ``str``, ``int``/``float``, ``bool``, aware ``datetime`` and
``list`` (multiple selects). An error inside the formula (``#ERROR!`` in Airtable) makes
the formula falsy, so the record is left out, as Airtable does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._fields import format_datetime, parse_datetime
from ._formula import Call, FieldRef, Literal, Negate, Node

__all__ = ["EvalContext", "FormulaRuntimeError", "evaluate", "matches", "truthy"]


class FormulaRuntimeError(ValueError):
    """``#ERROR!``: the formula failed for this record."""


@dataclass(frozen=True)
class EvalContext:
    """What a formula can see of one record."""

    field_value: Callable[[str], Any]
    record_id: str
    created_time: datetime


def truthy(value: Any) -> bool:
    """Airtable leaves a record out when the formula gives 0, false, "", NaN, [] or blank."""
    if value is None or value is False or value == "" or value == []:
        return False
    if isinstance(value, (int, float)):
        return value != 0 and not math.isnan(value)
    return True


def to_number(value: Any) -> float | int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip()) if value.strip() else 0
        except ValueError:
            raise FormulaRuntimeError(f"{value!r} is not a number") from None
    raise FormulaRuntimeError(f"{type(value).__name__} is not a number")


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, list):
        return ", ".join(to_text(item) for item in value)
    return str(value)


def to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None:
        raise FormulaRuntimeError(f"{value!r} is not a date")
    return parsed


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    """Bring both sides of a comparison to one type, as Airtable does."""
    if left is None and right is None:
        return "", ""
    if isinstance(left, datetime) or isinstance(right, datetime):
        if left is None or right is None:
            return to_text(left), to_text(right)
        return to_datetime(left), to_datetime(right)
    if _is_numeric(left) or _is_numeric(right):
        try:
            return to_number(left), to_number(right)
        except FormulaRuntimeError:
            return to_text(left), to_text(right)
    return to_text(left), to_text(right)


def _compare(op: str, left: Any, right: Any) -> bool:
    a, b = _comparable(left, right)
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == ">":
        return bool(a > b)
    if op == "<=":
        return bool(a <= b)
    return bool(a >= b)


def _arithmetic(op: str, left: Any, right: Any) -> float | int:
    a, b = to_number(left), to_number(right)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise FormulaRuntimeError("division by zero")
    return a / b


def _find(args: list[Any], missing: Any) -> Any:
    needle, haystack = to_text(args[0]), to_text(args[1])
    start = int(to_number(args[2])) - 1 if len(args) > 2 else 0
    index = haystack.find(needle, max(start, 0))
    return index + 1 if index >= 0 else missing


def _parse_date_arg(value: Any) -> datetime:
    text = to_text(value)
    parsed = parse_datetime(text)
    if parsed is None:
        raise FormulaRuntimeError(f"cannot parse date {text!r}")
    return parsed


_VALUE_FUNCTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "AND": lambda a: all(truthy(v) for v in a),
    "OR": lambda a: any(truthy(v) for v in a),
    "XOR": lambda a: sum(truthy(v) for v in a) % 2 == 1,
    "NOT": lambda a: not truthy(a[0]),
    "TRUE": lambda a: True,
    "FALSE": lambda a: False,
    "BLANK": lambda a: None,
    "FIND": lambda a: _find(a, 0),
    "SEARCH": lambda a: _find(a, None),
    "LEN": lambda a: len(to_text(a[0])),
    "LOWER": lambda a: to_text(a[0]).lower(),
    "UPPER": lambda a: to_text(a[0]).upper(),
    "TRIM": lambda a: to_text(a[0]).strip(),
    "CONCATENATE": lambda a: "".join(to_text(v) for v in a),
    "VALUE": lambda a: to_number(to_text(a[0]).replace(",", "")),
    "DATETIME_PARSE": lambda a: _parse_date_arg(a[0]),
    "IS_BEFORE": lambda a: to_datetime(a[0]) < to_datetime(a[1]),
    "IS_AFTER": lambda a: to_datetime(a[0]) > to_datetime(a[1]),
}


def _call(node: Call, ctx: EvalContext) -> Any:
    name = node.name
    if name == "IF":
        branch = 1 if truthy(evaluate(node.args[0], ctx)) else 2
        return evaluate(node.args[branch], ctx) if branch < len(node.args) else None
    if name == "ISERROR":
        try:
            evaluate(node.args[0], ctx)
        except FormulaRuntimeError:
            return True
        return False
    if name == "RECORD_ID":
        return ctx.record_id
    if name == "CREATED_TIME":
        return ctx.created_time
    return _VALUE_FUNCTIONS[name]([evaluate(arg, ctx) for arg in node.args])


def evaluate(node: Node, ctx: EvalContext) -> Any:
    """The value of ``node`` for the record in ``ctx``; raises ``FormulaRuntimeError``."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, FieldRef):
        return ctx.field_value(node.name)
    if isinstance(node, Negate):
        return -to_number(evaluate(node.operand, ctx))
    if isinstance(node, Call):
        return _call(node, ctx)
    left, right = evaluate(node.left, ctx), evaluate(node.right, ctx)
    if node.op == "&":
        return to_text(left) + to_text(right)
    if node.op in ("+", "-", "*", "/"):
        return _arithmetic(node.op, left, right)
    return _compare(node.op, left, right)


def matches(node: Node, ctx: EvalContext) -> bool:
    """True when the record passes the filter (a formula error leaves it out)."""
    try:
        return truthy(evaluate(node, ctx))
    except (FormulaRuntimeError, TypeError):
        return False
