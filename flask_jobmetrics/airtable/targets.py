"""One Airtable table as the publisher writes it: a ``Target`` per table.

A target holds what the publisher knows of its table: the pyairtable client, the base's
names for our fields (``FieldNames``), the merge keys in those names, the fields the table
has (from the metadata API, when it answers) and those found missing since. It turns a
record in our names into what may be sent, and keeps every request body within
``MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyairtable import Table

from ..airtable_limits import MAX_REQUEST_BODY_BYTES
from ..longtext import bound_text
from .fields import CLIENT_KEY_FIELDS, JOB_KEY_FIELDS, RUN_ID
from .names import FieldNames, Kind

__all__ = ["MAX_REQUEST_BYTES", "Target", "request_bytes"]

#: The largest request body (JSON, as sent) the publisher sends (``airtable_limits``: 2 MiB;
#: Airtable answers 413 above its own, unpublished, limit): a batch is split to stay under it.
MAX_REQUEST_BYTES = MAX_REQUEST_BODY_BYTES
#: Room for the rest of a batch_upsert body (performUpsert, typecast, ...).
_ENVELOPE = 200


def request_bytes(records: Sequence[Mapping[str, Any]]) -> int:
    """The size of a ``batch_upsert`` body holding ``records`` (as requests encodes JSON)."""
    return len(json.dumps({"records": [{"fields": r} for r in records]})) + _ENVELOPE


def fit(record: dict[str, Any], budget: int = MAX_REQUEST_BYTES) -> dict[str, Any]:
    """``record`` with its longest texts cut (newest text kept) until one request holds it."""
    for _ in range(20):
        size = request_bytes([record])
        if size <= budget:
            break
        texts = [name for name, value in record.items() if isinstance(value, str) and name != RUN_ID]
        if not texts:
            break
        longest = max(texts, key=lambda name: len(record[name]))
        text = record[longest]
        record[longest] = bound_text(text, max(200, int(len(text) * budget / size * 0.9)))
    return record


@dataclass(eq=False)
class Target:
    """The publisher's view of one table."""

    kind: Kind
    name: str
    table: Table
    names: FieldNames = field(default_factory=FieldNames)
    #: The table's fields when the schema was read (None: unknown, learned from 422s).
    fields: set[str] | None = None
    #: Fields (the base's names) found missing: left out of every write.
    missing: set[str] = field(default_factory=set)

    @property
    def keys(self) -> list[str]:
        """The merge keys of ``batch_upsert``, in the base's names."""
        ours = JOB_KEY_FIELDS if self.kind == "job" else CLIENT_KEY_FIELDS
        return [name for key in ours if (name := self.names.base(key)) is not None]

    def writable(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The record as it may be sent (the base's names, fields the table has, texts
        bounded), and the fields newly found missing."""
        out: dict[str, Any] = {}
        newly: list[str] = []
        for name, value in self.names.to_base(record).items():
            if name in self.missing:
                continue
            if self.fields is not None and name not in self.fields:
                self.missing.add(name)
                newly.append(name)
                continue
            out[name] = bound_text(value) if isinstance(value, str) else value
        return fit(out), newly

    def remote(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record read from the table, in our names."""
        return self.names.from_base(record)
