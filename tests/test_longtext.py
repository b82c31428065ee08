"""``longtext``: long texts bounded to Airtable's cell limit, newest text kept, the cut marked."""

from __future__ import annotations

import re

import pytest

from flask_jobmetrics.airtable_limits import text_length
from flask_jobmetrics.longtext import LONG_TEXT_LIMIT, bound_text
from flask_jobmetrics.rules import add_note
from flask_jobmetrics.schema import SYSTEM_NOTES


def _cut(text: str) -> int:
    found = re.match(r"\[… ([\d,]+) earlier characters cut …\]\n", text)
    assert found is not None, text[:80]
    return int(found[1].replace(",", ""))


def test_a_text_within_the_limit_is_unchanged() -> None:
    """A text of exactly the limit comes back as it is."""
    text = "x" * LONG_TEXT_LIMIT
    assert bound_text(text) is text


def test_a_long_text_keeps_its_newest_lines_and_says_how_much_was_cut() -> None:
    """Over the limit: a mark with the exact count cut, then the newest text from a line start."""
    lines = [f"note {n:05d}" for n in range(20_000)]
    text = "\n".join(lines)
    bounded = bound_text(text)
    assert len(bounded) <= LONG_TEXT_LIMIT
    kept = bounded.split("\n", 1)[1]
    assert text.endswith(kept) and kept.startswith("note ")
    assert _cut(bounded) == len(text) - len(kept)


def test_bounding_again_adds_up_what_was_cut() -> None:
    """Appending to a bounded text and bounding again: the mark counts both cuts."""
    first = "a" * 150
    once = bound_text(first, 100)
    more = once + "\n" + "b" * 80
    twice = bound_text(more, 100)
    kept = twice.split("\n", 1)[1]
    assert len(twice) <= 100 and kept == "b" * len(kept)
    assert _cut(twice) == len(first) + 1 + 80 - len(kept)


def test_a_head_is_kept_before_the_mark() -> None:
    """With ``head`` the first characters (a header line) stay in front of the mark."""
    text = "=== RUN: 230615-120000 ===\n" + "".join(f"{n}\n" for n in range(1000))
    bounded = bound_text(text, 200, head=27)
    assert bounded.startswith("=== RUN: 230615-120000 ===\n[… ") and len(bounded) <= 200
    assert text.endswith(bounded.split("…]\n", 1)[1])


def test_a_limit_without_room_for_the_mark_is_an_error() -> None:
    """A limit too small for the mark is a ValueError, not a text over the limit."""
    with pytest.raises(ValueError, match="no room"):
        bound_text("x" * 50, 10)


def test_notes_appended_without_end_stay_within_the_cell_limit() -> None:
    """System Notes grown by 5,000 notes stays under 100,000 characters and ends with the newest."""
    fields: dict[str, object] = {}
    for n in range(5_000):
        add_note(fields, f"client {n:05d}: 40 leads scored, 3 posts harvested")
    notes = fields[SYSTEM_NOTES]
    assert isinstance(notes, str) and len(notes) <= LONG_TEXT_LIMIT
    assert notes.endswith("client 04999: 40 leads scored, 3 posts harvested")


def test_a_note_is_a_line_of_its_own() -> None:
    """The first note is System Notes alone; each next one follows on a new line."""
    fields: dict[str, object] = {}
    add_note(fields, "first")
    assert fields[SYSTEM_NOTES] == "first"
    add_note(fields, "second")
    assert fields[SYSTEM_NOTES] == "first\nsecond"


def test_length_is_counted_as_airtable_counts_it() -> None:
    """80,000 emoji (160,000 UTF-16 units) are cut to at most 100,000 units, never half an emoji."""
    bounded = bound_text("😀" * 80_000)
    assert text_length(bounded) <= LONG_TEXT_LIMIT
    kept = bounded.split("\n", 1)[1]
    assert kept == "😀" * len(kept)
    assert _cut(bounded) == 80_000 - len(kept)
