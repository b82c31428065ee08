"""Appended text: a client row's ``Progress Log`` lines and its ``System Notes``.

Appended text travels as an ``append`` op (see ``deltas``) whose value is ``(limit, text)``,
through the buffer and the store's merge like any metric, so a re-delivered batch appends
nothing twice (the store's delivery tokens cover it). The merge puts lines in the order of
their leading timestamp (``YYYY-MM-DD HH:MM:SS.mmmZ``; lines without one keep their arrival
order), then bounds the field to ``limit`` characters with ``longtext.bound_text``: the
newest text stays and a mark says how much was cut. The Redis store's merge script
(``stores/_redis_lua.py``) implements the same rules, character for character.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from .longtext import LONG_TEXT_LIMIT, bound_text

__all__ = [
    "APPEND",
    "ERROR_DETAILS_CHARS",
    "MAX_LINE_CHARS",
    "PROGRESS_LOG_CHARS",
    "append_op",
    "append_text",
    "error_text",
    "log_line",
    "merge_lines",
    "stamp",
]

#: The aggregate of appended text.
APPEND = "append"
#: The default bound of a client row's ``Progress Log`` (``JOBMETRICS_PROGRESS_LOG_CHARS``).
PROGRESS_LOG_CHARS = 20_000
#: The bound of ``Error Details`` (one error, its newest text kept).
ERROR_DETAILS_CHARS = 10_000
#: The longest single line of a log; a longer message is cut at its end.
MAX_LINE_CHARS = 2_000

_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z ")
_STAMP_WIDTH = 24
_NEWLINES = re.compile(r"\r\n|\r|\n")


def stamp(when: datetime) -> str:
    """``when`` as a log line's timestamp: ``2026-12-01 19:45:03.123Z`` (UTC, fixed width)."""
    utc = when.astimezone(timezone.utc) if when.tzinfo is not None else when
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def one_line(message: str, limit: int = MAX_LINE_CHARS) -> str:
    """``message`` on one line (line breaks become `` | ``), cut to ``limit`` characters."""
    text = _NEWLINES.sub(" | ", message.strip())
    if len(text) > limit:
        cut = len(text) - limit + 40
        text = f"{text[: limit - 40]} [… {cut:,} characters cut]"
    return text


def log_line(when: datetime, message: str) -> str:
    """One timestamped line of a Progress Log."""
    return f"{stamp(when)} {one_line(message)}"


def error_text(error: BaseException | str) -> str:
    """An error as ``Error Details`` show it: ``"<ExceptionType>: <message>"`` or the string,
    bounded to ``ERROR_DETAILS_CHARS``."""
    if isinstance(error, BaseException):
        message = str(error)
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    elif isinstance(error, str):
        text = error.strip()
    else:
        raise TypeError(f"error must be an exception or a string, got {type(error).__name__} {error!r}")
    return bound_text(text, ERROR_DETAILS_CHARS)


def _key(line: str) -> str:
    return line[:_STAMP_WIDTH] if _STAMP.match(line) else ""


def merge_lines(old: str | None, new: str) -> str:
    """The lines of ``old`` and ``new`` (each already in order) in timestamp order; on equal
    timestamps ``old``'s lines come first."""
    if not old:
        return new
    if not new:
        return old
    last = old.rsplit("\n", 1)[-1]
    added = new.split("\n")
    if _key(added[0]) >= _key(last):  # the usual case: newer lines
        return f"{old}\n{new}"
    kept = old.split("\n")
    out: list[str] = []
    i = j = 0
    while i < len(kept) and j < len(added):
        if _key(added[j]) < _key(kept[i]):
            out.append(added[j])
            j += 1
        else:
            out.append(kept[i])
            i += 1
    out.extend(kept[i:])
    out.extend(added[j:])
    return "\n".join(out)


def append_op(text: str, limit: int = LONG_TEXT_LIMIT) -> tuple[str, tuple[int, str]]:
    """The op appending ``text`` (one or more lines) to a field bounded to ``limit`` characters."""
    return (APPEND, (limit, text))


def append_text(old: Any, value: Any) -> str:
    """A field's text after an append op's ``(limit, text)``: merged in order, then bounded."""
    limit, text = value
    return bound_text(merge_lines(old if isinstance(old, str) else None, text), int(limit))


def merge_appends(old: Any, new: Any) -> tuple[int, str]:
    """Two append ops' values of one buffered delta as one (not bounded: the row is)."""
    old_limit, old_text = old
    limit, text = new
    return (max(int(old_limit), int(limit)), merge_lines(old_text, text))
