"""The client rows this process last saw in the store, for the update path.

An update needs the row as stored (is it new? completed? how far may its sums go?), and
reading the store on every update would cost a round trip each. ``KnownRows`` keeps the
last row seen per (run, client), or None for "not in the store", bounded: the oldest entry
is dropped first. The update path reads it without a lock (one dict read is atomic);
changes take one.
"""

from __future__ import annotations

from collections.abc import Iterable

from .forksafe import ForkSafeLock
from .stores.base import ClientRow

__all__ = ["UNSEEN", "KnownRows"]

Key = tuple[str, str]
#: What ``KnownRows.get(key, UNSEEN)`` returns for a key not seen yet (compared by identity).
UNSEEN = ClientRow("", "", {})


class KnownRows(dict[Key, ClientRow | None]):
    """(run, client) -> the row as last seen in the store (None: not there), bounded."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._lock = ForkSafeLock()  # a forked child never inherits it held

    def remember(self, rows: Iterable[ClientRow]) -> None:
        """Rows a merge returned: the newest state of each."""
        with self._lock:
            for row in rows:
                self[(row.run_id, row.client_id)] = row
            self._trim()

    def read(self, key: Key, row: ClientRow | None) -> None:
        """A row read from the store (None: not there), unless a merge remembered a newer one meanwhile."""
        with self._lock:
            self.setdefault(key, row)
            self._trim()

    def forget(self, run_id: str, client_ids: Iterable[str]) -> None:
        """Drop the rows of ``run_id``'s clients: the next update reads them again."""
        with self._lock:
            for client_id in client_ids:
                self.pop((run_id, client_id), None)

    def _trim(self) -> None:
        while len(self) > self.maxsize:
            del self[next(iter(self))]
