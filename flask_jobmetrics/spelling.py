"""Suggestions for misspelt names: config keys, metric names, field names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def _fold(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name`` (case, spacing and underscores forgiven), or None."""
    by_folded = {_fold(k): k for k in known}
    folded = _fold(name)
    if folded in by_folded:
        return by_folded[folded]
    found = difflib.get_close_matches(folded, list(by_folded), n=1, cutoff=0.6)
    return by_folded[found[0]] if found else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``' (did you mean "X"?)'`` when a known name other than ``name`` is close to it, else ``""``."""
    match = closest(name, known)
    return f' (did you mean "{match}"?)' if match is not None and match != name else ""
