"""FakeAirtable's filterByFormula: the parser, the evaluator, and pyairtable.formulas end to end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from pyairtable import Api, Table
from pyairtable.formulas import AND, EQ, GTE, LT, NE, NOT, OR, Field, match, quoted, to_formula_str

from flask_jobmetrics.testing import FakeAirtable
from flask_jobmetrics.testing._formula import (
    Binary,
    Call,
    FieldRef,
    FormulaSyntaxError,
    Literal,
    field_names,
    parse_formula,
)
from flask_jobmetrics.testing._formula_eval import EvalContext, evaluate, matches
from flask_jobmetrics.testing.pytest_plugin import API_KEY, BASE_ID

RUNS = "Client Run Results"
CREATED = datetime(2024, 1, 2, tzinfo=timezone.utc)
HOSTILE_IDS = [
    "x' OR 1=1 OR '",
    'a\\\' , "b"',
    "\\",
    "trailing\\",
    "'",
    '"',
    "\\'",
    "}{",
    "') OR TRUE() OR ('",
    "x\n'y",
]


def run(formula: str, **fields: Any) -> Any:
    """Evaluate ``formula`` against a record holding ``fields``."""
    ctx = EvalContext(lambda name: fields.get(name), "recA0000000000000", CREATED)
    return evaluate(parse_formula(formula), ctx)


def passes(formula: str, **fields: Any) -> bool:
    ctx = EvalContext(lambda name: fields.get(name), "recA0000000000000", CREATED)
    return matches(parse_formula(formula), ctx)


# -- parser -------------------------------------------------------------------------------


def test_parses_field_references_strings_and_numbers() -> None:
    """{Field} = 'text' parses into a comparison of a field and a literal."""
    assert parse_formula("{Client ID}='abc'") == Binary("=", FieldRef("Client ID"), Literal("abc"))
    assert parse_formula("{N} >= 2.5") == Binary(">=", FieldRef("N"), Literal(2.5))


def test_precedence_and_parentheses() -> None:
    """* binds tighter than +, + tighter than &, & tighter than comparisons."""
    assert run("1 + 2 * 3") == 7
    assert run("(1 + 2) * 3") == 9
    assert run("'a' & 1 + 1 = 'a2'") is True


def test_string_escapes_match_pyairtable_quoted() -> None:
    """Every string that pyairtable's quoted() writes parses back to the same string."""
    for text in HOSTILE_IDS:
        assert parse_formula(quoted(text)) == Literal(text)
    assert parse_formula('"say \\"hi\\""') == Literal('say "hi"')


def test_escaped_brace_in_field_name() -> None:
    """{A\\}B} is the field named A}B, as pyairtable's Field() writes it."""
    assert parse_formula(str(Field("A}B"))) == FieldRef("A}B")
    assert field_names(parse_formula("AND({a}, {b}=1, NOT({c}))")) == {"a", "b", "c"}


def test_function_names_are_case_insensitive() -> None:
    """and(...) is AND(...)."""
    assert parse_formula("and(1, 0)") == Call("AND", (Literal(1), Literal(0)))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{a} =",
        "'unterminated",
        "{unterminated",
        "EVAL('x')",
        "NOT(1, 2)",
        "1 2",
        "{a} == 1",
        "(1",
        "AND(1,)",
        "#",
    ],
)
def test_invalid_formulas_raise(text: str) -> None:
    """Malformed formulas, unknown functions and wrong arities raise FormulaSyntaxError."""
    with pytest.raises(FormulaSyntaxError):
        parse_formula(text)


# -- evaluator ----------------------------------------------------------------------------


def test_blank_semantics() -> None:
    """A blank field equals '', 0, FALSE() and BLANK(), and is falsy."""
    assert passes("{x} = ''")
    assert passes("{x} = 0")
    assert passes("{x} = BLANK()")
    assert passes("{x} = FALSE()")
    assert not passes("{x}")
    assert not passes("{x} = 'a'")
    assert passes("NOT({x})")


def test_comparisons_and_coercion() -> None:
    """Numbers compare numerically, text is case-sensitive, numeric text compares with numbers."""
    assert passes("{n} > 9", n=10)
    assert not passes("{n} < 9", n=10)
    assert passes("{n} = '10'", n=10)
    assert passes("{s} = 'Abc'", s="Abc")
    assert not passes("{s} = 'abc'", s="Abc")
    assert passes("{s} != 'x'", s="y")
    assert passes("{b} = TRUE()", b=True)
    assert passes("{b} = 1", b=True)


def test_logic_and_text_functions() -> None:
    """AND, OR, NOT, XOR, IF, FIND, SEARCH, LEN, LOWER, UPPER, TRIM, CONCATENATE, VALUE work."""
    assert run("AND(1, 'x', TRUE())") is True
    assert run("OR(0, '', FALSE())") is False
    assert run("XOR(1, 1, 1)") is True
    assert run("IF({n} > 1, 'big', 'small')", n=2) == "big"
    assert run("IF(0, 'a')") is None
    assert run("FIND('b', 'abcb')") == 2
    assert run("FIND('z', 'abc')") == 0
    assert run("FIND('b', 'abcb', 3)") == 4
    assert run("SEARCH('z', 'abc')") is None
    assert run("LEN({s})", s="héllo") == 5
    assert run("LOWER('AbC')") == "abc"
    assert run("UPPER('a')") == "A"
    assert run("TRIM('  a ')") == "a"
    assert run("CONCATENATE('a', 1, {x})") == "a1"
    assert run("VALUE('1,234')") == 1234


def test_record_functions_and_dates() -> None:
    """RECORD_ID(), CREATED_TIME(), DATETIME_PARSE, IS_BEFORE/IS_AFTER and date comparisons."""
    assert run("RECORD_ID()") == "recA0000000000000"
    assert passes("IS_BEFORE(CREATED_TIME(), DATETIME_PARSE('2024-02-01'))")
    when = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    assert passes("{t} = DATETIME_PARSE('2024-03-01T12:00:00.000Z')", t=when)
    assert passes("{t} > '2024-03-01'", t=when)
    assert passes("IS_AFTER({t}, '2024-01-01')", t=when)


def test_runtime_errors_exclude_the_record() -> None:
    """Division by zero or text arithmetic is #ERROR!, which filters the record out."""
    assert not passes("1 / 0 = 1")
    assert not passes("'a' + 1")
    assert passes("ISERROR(1 / 0)")
    assert run("-{n} + 1", n=3) == -2


# -- through the server and pyairtable.formulas -------------------------------------------


@pytest.fixture
def runs(fake_airtable_factory: Callable[..., FakeAirtable]) -> Table:
    """Client Run Results holding one row per hostile client id, plus ordinary rows."""
    fake = fake_airtable_factory(rate_limit=None)
    rows: list[dict[str, Any]] = [
        {"Run ID": f"h{i}", "Client ID": value} for i, value in enumerate(HOSTILE_IDS)
    ]
    rows += [{"Run ID": f"n{i}", "Client ID": f"client-{i}", "Leads Processed": i} for i in range(5)]
    fake.add_records(BASE_ID, RUNS, rows)
    return Api(API_KEY, endpoint_url=fake.url, retry_strategy=None).table(BASE_ID, RUNS)


@pytest.mark.parametrize("client_id", HOSTILE_IDS)
def test_hostile_client_id_matches_exactly_one_row(runs: Table, client_id: str) -> None:
    """A client id with quotes and backslashes, passed through pyairtable.formulas, matches only its row."""
    for formula in (match({"Client ID": client_id}), EQ(Field("Client ID"), client_id)):
        rows = runs.all(formula=formula)
        assert [r["fields"]["Client ID"] for r in rows] == [client_id]


def test_injection_cannot_widen_a_match(runs: Table) -> None:
    """A value crafted to close the string and add OR 1=1 matches nothing when no row has it."""
    for value in ("nobody' OR 1=1 OR '", 'nobody" OR 1=1 OR "', "nobody\\' OR TRUE() OR \\'"):
        assert runs.all(formula=match({"Client ID": value})) == []


def test_pyairtable_comparisons_and_compounds(runs: Table) -> None:
    """GTE, LT, NE, AND, OR and NOT from pyairtable.formulas filter as Airtable would."""
    leads = Field("Leads Processed")
    assert len(runs.all(formula=AND(GTE(leads, 2), LT(leads, 4)))) == 2
    assert len(runs.all(formula=OR(EQ(leads, 1), EQ(leads, 4)))) == 2
    assert len(runs.all(formula=EQ(leads, 0))) == len(HOSTILE_IDS) + 1  # blank equals 0, as in Airtable
    assert len(runs.all(formula=NOT(EQ(Field("Client ID"), "client-1")))) == len(HOSTILE_IDS) + 4
    assert len(runs.all(formula=NE(Field("Client ID"), "'"))) == len(HOSTILE_IDS) + 4
    assert len(runs.all(formula=match({"Leads Processed": (">", 2)}))) == 2


def test_datetime_values_through_pyairtable(runs: Table) -> None:
    """A datetime passed to pyairtable.formulas compares with a dateTime field."""
    when = datetime(2024, 6, 1, 8, 30, tzinfo=timezone.utc)
    created = runs.create({"Run ID": "dt", "Start Time": when.isoformat()})
    assert to_formula_str(when).startswith("DATETIME_PARSE(")
    assert [r["id"] for r in runs.all(formula=match({"Start Time": when}))] == [created["id"]]


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("{Client ID} = ", "Invalid formula"),
        ("{Nope} = 1", "Unknown field names: Nope"),
        ("EVAL(1)", "Invalid formula"),
    ],
)
def test_bad_formula_gets_422(runs: Table, formula: str, message: str) -> None:
    """An unparseable formula or unknown field gets 422 INVALID_FILTER_BY_FORMULA."""
    with pytest.raises(requests.HTTPError) as exc:
        runs.all(formula=formula)
    assert exc.value.response is not None
    assert exc.value.response.status_code == 422
    error = exc.value.response.json()["error"]
    assert error["type"] == "INVALID_FILTER_BY_FORMULA"
    assert message in error["message"]
