"""KnownRows: the rows the update path last saw in the store, bounded."""

from __future__ import annotations

from flask_jobmetrics.known_rows import UNSEEN, KnownRows
from flask_jobmetrics.stores.base import ClientRow

RUN = "230615-120000"


def _row(client: str, leads: int = 1) -> ClientRow:
    return ClientRow(RUN, client, {"Leads Processed": leads})


def test_a_key_not_seen_reads_as_unseen_and_a_row_not_stored_as_none() -> None:
    """``get(key, UNSEEN)`` tells "never looked" from "looked: not in the store" (None)."""
    rows = KnownRows(10)
    assert rows.get((RUN, "acme"), UNSEEN) is UNSEEN
    rows.read((RUN, "acme"), None)
    assert rows.get((RUN, "acme"), UNSEEN) is None


def test_a_read_does_not_replace_a_row_a_merge_remembered_meanwhile() -> None:
    """A store read that raced a merge keeps the merge's newer row; a merge replaces a read."""
    rows = KnownRows(10)
    newer = _row("acme", 5)
    rows.remember([newer])
    rows.read((RUN, "acme"), _row("acme", 1))
    assert rows[(RUN, "acme")] is newer
    newest = _row("acme", 6)
    rows.remember([newest])
    assert rows[(RUN, "acme")] is newest


def test_the_oldest_rows_go_first_past_the_bound() -> None:
    """Past ``maxsize`` the rows remembered first are dropped, whatever way they came."""
    rows = KnownRows(3)
    rows.remember([_row("a"), _row("b")])
    rows.read((RUN, "c"), None)
    rows.remember([_row("d")])
    assert list(rows) == [(RUN, "b"), (RUN, "c"), (RUN, "d")]


def test_forget_drops_the_rows_of_a_runs_clients() -> None:
    """``forget`` drops the named clients of a run (the next update reads them again)."""
    rows = KnownRows(10)
    rows.remember([_row("a"), _row("b"), ClientRow("other-run", "a", {})])
    rows.forget(RUN, ["a", "b", "never-seen"])
    assert list(rows) == [("other-run", "a")]
