"""Long text kept within Airtable's cell limit: the newest text stays, a mark says what was cut.

Airtable refuses a long-text cell over 100,000 characters (422), so a field that grows by a
line per event (``System Notes``) would one day send its row to the dead letters.
``bound_text`` is the one place that bounds such a field: it keeps an optional head (a
header line), then a mark such as ``[… 1,234 earlier characters cut …]``, then the newest
text, starting at a line boundary where one is near. Bounding bounded text again adds the
counts, so the mark always says how much was cut in all.
"""

from __future__ import annotations

import re

__all__ = ["LONG_TEXT_LIMIT", "append_line", "bound_text"]

#: Airtable's limit for a long-text cell, in characters.
LONG_TEXT_LIMIT = 100_000
#: How far into the kept text a line break is looked for, so the kept text starts with a line.
_LINE_SEARCH = 1_000
_MARK = "[… {:,} earlier characters cut …]\n"
_MARK_RE = re.compile(r"\[… ([\d,]+) earlier characters cut …\]\n")


def _mark(count: int) -> str:
    return _MARK.format(count)


def bound_text(text: str, limit: int = LONG_TEXT_LIMIT, *, head: int = 0) -> str:
    """``text`` if it has at most ``limit`` characters; else its first ``head`` characters,
    a mark with the number of characters cut, and the newest text, ``limit`` at most in all."""
    if len(text) <= limit:
        return text
    if head < 0 or head + len(_mark(len(text))) >= limit:
        raise ValueError(f"a limit of {limit} characters leaves no room after a head of {head}")
    kept_head, rest = text[:head], text[head:]
    already = 0
    if (found := _MARK_RE.match(rest)) is not None:  # bounded before: count that cut too
        already = int(found[1].replace(",", ""))
        rest = rest[found.end() :]
    room = limit - head - len(_mark(already + len(rest)))  # the longest mark this cut can need
    start = max(0, len(rest) - room)
    newline = rest.find("\n", start, start + _LINE_SEARCH) if start else -1
    if newline != -1:
        start = newline + 1
    return kept_head + _mark(already + start) + rest[start:]


def append_line(previous: str | None, line: str, limit: int = LONG_TEXT_LIMIT) -> str:
    """``previous`` with ``line`` appended as a new line, bounded to ``limit`` characters."""
    return bound_text(f"{previous}\n{line}" if previous else line, limit)
