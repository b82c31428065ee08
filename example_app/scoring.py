"""The tenants, their leads, and a deterministic stand-in for the LLM scorer.

The rules are simple enough to check the demo's numbers by hand: every lead is
examined; every 10th lead of a client (lead 10, 20, ...) cannot be scored and spends no
tokens; every other lead is scored and spends ``TOKENS_PER_LEAD`` tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["CHUNK_SIZE", "CLIENTS", "TOKENS_PER_LEAD", "LeadResult", "ScorerCrashed", "chunks", "score_lead"]

TOKENS_PER_LEAD = 250
CHUNK_SIZE = 40

#: client ID -> number of leads waiting to be scored. ``initech`` crashes at lead 50.
CLIENTS: dict[str, int] = {
    "acme": 120,
    "Guy-Wilson": 85,
    "Dean-Hobin": 0,
    "globex": 40,
    "umbrella": 63,
    "hooli": 0,
    "initech": 97,
    "stark": 12,
    "wayne": 150,
    "wonka": 33,
    "cyberdyne": 71,
    "tyrell": 55,
}
CRASHING_CLIENT = "initech"
CRASH_AT_LEAD = 50


class ScorerCrashed(RuntimeError):
    """The stand-in LLM failed for a client (to show a Failed client run)."""


@dataclass(frozen=True)
class LeadResult:
    lead_id: str
    scored: bool
    score: int
    tokens: int


def score_lead(client_id: str, number: int) -> LeadResult:
    """Score lead ``number`` (1-based) of ``client_id``."""
    if client_id == CRASHING_CLIENT and number == CRASH_AT_LEAD:
        raise ScorerCrashed(f"model timeout while scoring lead {number} of {client_id}")
    lead_id = f"{client_id}-lead-{number:04d}"
    if number % 10 == 0:
        return LeadResult(lead_id, scored=False, score=0, tokens=0)
    return LeadResult(lead_id, scored=True, score=(number * 37) % 100, tokens=TOKENS_PER_LEAD)


def chunks(total: int, size: int = CHUNK_SIZE) -> Iterator[range]:
    """Lead numbers 1..total in chunks of ``size``."""
    for start in range(1, total + 1, size):
        yield range(start, min(start + size, total + 1))
