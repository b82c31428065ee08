"""Airtable's limits, in one place for the publisher and for ``FakeAirtable``.

Each constant names where its number comes from. The emulator enforces every one of them,
so a test against ``FakeAirtable`` fails where a real base would refuse.
"""

from __future__ import annotations

__all__ = [
    "MAX_CELL_TEXT_LENGTH",
    "MAX_MERGE_FIELDS",
    "MAX_PAGE_SIZE",
    "MAX_RECORDS_PER_REQUEST",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_URL_LENGTH",
    "REQUESTS_PER_SECOND",
    "text_length",
]

#: Records per create, update, upsert or delete request (Airtable's API reference:
#: "up to 10 records"; more gets 422 ``INVALID_RECORDS``).
MAX_RECORDS_PER_REQUEST = 10

#: Records per page of a list request (``pageSize`` at most 100).
MAX_PAGE_SIZE = 100

#: Fields in ``performUpsert.fieldsToMergeOn`` (Airtable: "at least one and at most three").
MAX_MERGE_FIELDS = 3

#: Characters in a single-line or long text cell (Airtable support, "Using rich text with
#: Airtable": "Single line text fields and long text fields are limited to 100,000
#: characters"). Counted as :func:`text_length` counts them.
MAX_CELL_TEXT_LENGTH = 100_000

#: Bytes of a request body. Airtable answers 413 ``REQUEST_TOO_LARGE`` above its limit (the
#: status and type its own client, airtable.js, maps) but does not publish the number; this
#: is the size every request must stay within to be safe, and what ``FakeAirtable`` enforces.
MAX_REQUEST_BODY_BYTES = 2 * 1024 * 1024

#: Characters of a request URL (Airtable support, "URL length limitations for web API
#: requests"); pyairtable switches a longer list request to ``POST .../listRecords``.
MAX_URL_LENGTH = 16_000

#: Requests per second per base, then 429 and a 30 s lock (Airtable's API reference, "Rate limits").
REQUESTS_PER_SECOND = 5


def text_length(text: str) -> int:
    """The length of ``text`` as Airtable counts it: UTF-16 code units, JavaScript's
    ``String.length`` (a character outside the BMP, such as most emoji, counts twice)."""
    return len(text.encode("utf-16-le")) // 2
