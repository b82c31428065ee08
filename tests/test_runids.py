"""Run IDs: one strict value type (the old system's three helpers disagreed)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from flask_jobmetrics.exceptions import InvalidClientIdError, InvalidRunIdError
from flask_jobmetrics.runids import (
    RunId,
    base_run_id,
    client_id_of,
    client_run_id,
    generate_run_id,
    validate_client_id,
)

FROZEN = datetime(2023, 10, 5, 14, 25, 32, tzinfo=timezone.utc)


def test_generate_run_id_is_utc_yymmdd_hhmmss() -> None:
    """generate_run_id formats the given instant in UTC, whatever the offset given."""
    assert generate_run_id(FROZEN) == "231005-142532"
    assert (
        generate_run_id(datetime(2023, 10, 6, 0, 25, 32, tzinfo=timezone.utc).astimezone()) == "231006-002532"
    )


def test_generate_run_id_without_clock_matches_the_shape() -> None:
    """generate_run_id() with the real clock gives a parsable base ID."""
    assert RunId.parse(generate_run_id()).client is None


@pytest.mark.parametrize(
    ("client", "expected"),
    [("GuyWilson", "231005-142532-GuyWilson"), ("Guy-Wilson", "231005-142532-Guy-Wilson")],
)
def test_client_run_id_appends_the_client(client: str, expected: str) -> None:
    """client_run_id appends the client ID to a base run ID."""
    assert client_run_id("231005-142532", client) == expected


def test_client_run_id_is_idempotent_for_the_same_client() -> None:
    """A client-form run ID given with its own client comes back unchanged."""
    assert client_run_id("231005-142532-Guy-Wilson", "Guy-Wilson") == "231005-142532-Guy-Wilson"


def test_client_run_id_never_appends_a_second_suffix() -> None:
    """A client-form run ID given with another client is an error, not a double suffix."""
    with pytest.raises(InvalidRunIdError, match="Dean-Hobin"):
        client_run_id("231005-142532-Dean-Hobin", "Guy-Wilson")


def test_suffix_collision_is_an_error_not_a_match() -> None:
    """`Wilson` is not the client of `...-Guy-Wilson` (the old endsWith check said it was)."""
    with pytest.raises(InvalidRunIdError, match="Guy-Wilson"):
        client_run_id("231005-142532-Guy-Wilson", "Wilson")


@pytest.mark.parametrize("run_id", [None, "", 123, {"runId": "231005-142532"}, ["231005-142532"]])
def test_client_run_id_requires_a_run_id(run_id: object) -> None:
    """A missing or non-string run ID raises InvalidRunIdError naming the value."""
    with pytest.raises(InvalidRunIdError):
        client_run_id(run_id, "GuyWilson")


@pytest.mark.parametrize("client", [None, "", " ", "a b", "-lead", "x" * 101, 7, "Guy'Wilson"])
def test_client_run_id_requires_a_valid_client_id(client: object) -> None:
    """A missing or malformed client ID raises InvalidClientIdError."""
    with pytest.raises(InvalidClientIdError):
        client_run_id("231005-142532", client)


@pytest.mark.parametrize(
    ("text", "base", "client"),
    [
        ("231005-142532", "231005-142532", None),
        ("231005-142532-GuyWilson", "231005-142532", "GuyWilson"),
        ("231005-142532-Guy-Wilson", "231005-142532", "Guy-Wilson"),
        ("231005-142532.0", "231005-142532", None),
        ("231005-142532-a.b@c_d", "231005-142532", "a.b@c_d"),
    ],
)
def test_parse_accepts_the_three_forms(text: str, base: str, client: str | None) -> None:
    """Base, client and legacy `.0` forms parse into base and client parts."""
    parsed = RunId.parse(text)
    assert (parsed.base, parsed.client) == (base, client)
    assert base_run_id(text) == base
    assert client_id_of(text) == client


@pytest.mark.parametrize(
    "text",
    [
        "weird-format-id",
        "231005142532",
        "231305-142532",  # month 13
        "230230-142532",  # 30 February
        "231005-246000",  # hour 24
        "231005-142560",  # second 60
        "231005-142532-",
        "231005-142532.1",
        "231005-142532.0-Guy",
        " 231005-142532",
        "SR-250922-001-S2-CABC-POSTS",
        "231005-142532-Guy Wilson",
    ],
)
def test_parse_rejects_everything_else(text: str) -> None:
    """Malformed IDs and impossible dates raise InvalidRunIdError naming the input."""
    with pytest.raises(InvalidRunIdError) as info:
        RunId.parse(text)
    assert repr(text) in str(info.value)


def test_client_id_of_a_malformed_id_raises() -> None:
    """client_id_of('weird-format-id') raises (the old getClientId returned 'id')."""
    with pytest.raises(InvalidRunIdError):
        client_id_of("weird-format-id")


def test_run_id_value_type_round_trips() -> None:
    """str(RunId) gives back the canonical form; for_client and base_id move between forms."""
    run = RunId.parse("231005-142532")
    client = run.for_client("acme")
    assert str(client) == "231005-142532-acme"
    assert client.for_client("acme") is client
    assert client.base_id == run
    assert RunId.parse(client) is client
    assert run.timestamp == FROZEN
    assert str(run.next_second()) == "231005-142533"
    assert str(RunId.parse("231231-235959").next_second()) == "240101-000000"


def test_new_uses_the_given_clock() -> None:
    """RunId.new(now) takes the second of `now` in UTC."""
    assert str(RunId.new(FROZEN)) == "231005-142532"


def test_validate_client_id_returns_the_id() -> None:
    """A valid client ID comes back as given."""
    assert validate_client_id("Guy-Wilson") == "Guy-Wilson"
