"""Post-harvesting webhooks: the payload, and how a sender builds a signed delivery.

The harvesting service POSTs ``{"event_id": ..., "run_id": ..., "posts": [...]}`` to
``/webhooks/harvest/<client_id>`` with the run ID in the ``X-Run-ID`` header (or a
``runId`` query parameter) and ``X-Signature: sha256=<HMAC-SHA256 of the body>`` made with
the client's secret. It may deliver the same event more than once; the event ID makes the
redelivery count once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask_jobmetrics.decorators import SIGNATURE_HEADER, sign_timestamped
from flask_jobmetrics.exceptions import InvalidRunIdError
from flask_jobmetrics.runids import RunId

__all__ = ["HarvestEvent", "SignedDelivery", "harvest_delivery", "parse_harvest_event", "sample_posts"]


@dataclass(frozen=True)
class HarvestEvent:
    """One webhook delivery: the sender's event ID and the posts it harvested."""

    event_id: str
    #: The base run ID the payload names, or None when it names none.
    run_id: str | None
    posts: list[Any]


def parse_harvest_event(data: Any, run_id: str) -> HarvestEvent:
    """Check the JSON payload of a delivery for run ``run_id``; ``ValueError`` says what is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError('the body must be a JSON object: {"event_id": ..., "run_id": ..., "posts": [...]}')
    event_id = data.get("event_id")
    if isinstance(event_id, int) and not isinstance(event_id, bool):
        event_id = str(event_id)
    if not isinstance(event_id, str) or not event_id.strip():
        raise ValueError("event_id must be a non-empty string: it is what makes a redelivery count once")
    posts = data.get("posts")
    if not isinstance(posts, list):
        raise ValueError("posts must be a list (an empty one when nothing was harvested)")
    named = data.get("run_id")
    payload_run: str | None = None
    if named is not None:
        try:
            payload_run = RunId.parse(str(named)).base
        except InvalidRunIdError as exc:
            raise ValueError(f"run_id in the body: {exc}") from None
        if payload_run != run_id:
            raise ValueError(f"run_id in the body ({payload_run}) is not the request's run ({run_id})")
    return HarvestEvent(event_id.strip(), payload_run, posts)


@dataclass(frozen=True)
class SignedDelivery:
    """What a sender POSTs: the path, the exact body bytes and the headers (signature included)."""

    path: str
    body: bytes
    headers: dict[str, str]


def harvest_delivery(
    client_id: str,
    run_id: str,
    event_id: str,
    posts: Sequence[Any],
    secret: str | bytes,
    *,
    run_id_header: str = "X-Run-ID",
) -> SignedDelivery:
    """A signed (timestamped) webhook delivery of ``posts`` for ``client_id`` in run ``run_id``."""
    body = json.dumps({"event_id": event_id, "run_id": run_id, "posts": list(posts)}).encode()
    headers = {
        "Content-Type": "application/json",
        run_id_header: run_id,
        SIGNATURE_HEADER: sign_timestamped(body, secret),  # t=<now>,v1=...: cannot be replayed later
    }
    return SignedDelivery(f"/webhooks/harvest/{client_id}", body, headers)


def sample_posts(client_id: str, count: int) -> list[dict[str, Any]]:
    """``count`` made-up LinkedIn-style posts of ``client_id``'s leads."""
    return [
        {
            "url": f"https://www.linkedin.com/feed/update/urn:li:activity:{client_id}-{n:04d}",
            "author": f"lead-{n}",
        }
        for n in range(1, count + 1)
    ]
