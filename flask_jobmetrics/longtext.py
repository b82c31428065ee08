"""Long text kept within Airtable's cell limit: the newest text stays, a mark says what was cut.

Airtable refuses a text cell over 100,000 characters (422; counted in UTF-16 code units, as
``airtable_limits.text_length`` counts), so a field that grows by a
line per event (``System Notes``) would one day send its row to the dead letters.
``bound_text`` is the one place that bounds such a field: it keeps an optional head (a
header line), then a mark such as ``[… 1,234 earlier characters cut …]``, then the newest
text, starting at a line boundary where one is near. Bounding bounded text again adds the
counts, so the mark always says how much was cut in all.
"""

from __future__ import annotations

import re

from .airtable_limits import MAX_CELL_TEXT_LENGTH, text_length

__all__ = ["LONG_TEXT_LIMIT", "bound_text"]

#: Airtable's limit for a text cell, in UTF-16 code units (``text_length``).
LONG_TEXT_LIMIT = MAX_CELL_TEXT_LENGTH
#: How far into the kept text a line break is looked for, so the kept text starts with a line.
_LINE_SEARCH = 1_000
_MARK = "[… {:,} earlier characters cut …]\n"
_MARK_RE = re.compile(r"\[… ([\d,]+) earlier characters cut …\]\n")


def _mark(count: int) -> str:
    return _MARK.format(count)


def _last_units(text: str, units: int) -> str:
    """The end of ``text`` at most ``units`` UTF-16 code units long (never half a pair)."""
    if units <= 0:
        return ""
    encoded = text.encode("utf-16-le")
    tail = encoded[-2 * units :]
    if len(tail) >= 2 and 0xDC00 <= int.from_bytes(tail[:2], "little") <= 0xDFFF:
        tail = tail[2:]  # the second half of a surrogate pair: drop the whole character
    return tail.decode("utf-16-le")


def bound_text(text: str, limit: int = LONG_TEXT_LIMIT, *, head: int = 0) -> str:
    """``text`` if it is at most ``limit`` long (``text_length``: what Airtable counts); else
    its first ``head`` characters, a mark with the number of characters cut, and the newest
    text, ``limit`` at most in all."""
    if len(text) <= limit // 2 or text_length(text) <= limit:
        return text
    kept_head, rest = text[:head], text[head:]
    if head < 0 or text_length(kept_head) + len(_mark(len(text))) >= limit:
        raise ValueError(f"a limit of {limit} leaves no room after a head of {head} characters")
    already = 0
    if (found := _MARK_RE.match(rest)) is not None:  # bounded before: count that cut too
        already = int(found[1].replace(",", ""))
        rest = rest[found.end() :]
    room = limit - text_length(kept_head) - len(_mark(already + len(rest)))  # the longest mark
    tail = _last_units(rest, room)
    newline = tail.find("\n", 0, _LINE_SEARCH) if len(tail) < len(rest) else -1
    if newline != -1:
        tail = tail[newline + 1 :]
    return kept_head + _mark(already + len(rest) - len(tail)) + tail
