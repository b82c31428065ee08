"""The demo's story, told through the app's own routes with Flask's test client.

Lead scoring (``POST /run-batch-score``, a background thread), post harvesting (signed
webhooks, one of them redelivered, one badly signed), post scoring (``POST
/run-post-scoring``) and the job's completion. Each step adds the lines to print.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_jobmetrics.state import get_state

from .background import background_work
from .ext import jobmetrics
from .harvest import harvest_delivery, sample_posts
from .posts import TOKENS_PER_POST, UNSCORABLE_EVERY
from .scoring import CLIENTS

__all__ = ["HARVESTS", "REDELIVERED", "WRONG_SIGNATURE", "DemoRun"]

#: Clients whose posts the harvesting service delivers, and how many posts each.
HARVESTS: dict[str, int] = {"Guy-Wilson": 14, "globex": 9, "umbrella": 21, "wayne": 30}
#: The client whose delivery the harvesting service sends twice.
REDELIVERED = "globex"
#: The client for which a delivery signed with the wrong secret arrives.
WRONG_SIGNATURE = "acme"
HARVESTED = "Total Posts Harvested"
INDENT = "   "


def _n(value: Any) -> str:
    return f"{int(value or 0):,}"


def _check(response: TestResponse, expected: int) -> Any:
    if response.status_code != expected:
        raise RuntimeError(
            f"{response.request.path} answered {response.status_code}: {response.get_data(True)}"
        )
    return response.get_json()


@dataclass
class DemoRun:
    """One run of the demo against ``app``: the run ID and the lines to print so far."""

    app: Flask
    secrets: dict[str, str]
    run_id: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def say(self, *lines: str) -> None:
        self.lines.extend(lines)

    def take_lines(self) -> str:
        """The lines added since the last call, joined."""
        text, self.lines = "\n".join(self.lines), []
        return text

    # -- 1 ----------------------------------------------------------------------------------

    def lead_scoring(self, clients: list[str]) -> None:
        """``POST /run-batch-score``; wait for its background thread."""
        body: dict[str, Any] = {"complete": False}
        if clients != list(CLIENTS):
            body["clients"] = clients
        answer = _check(self.client.post("/run-batch-score", json=body), 202)
        self.run_id = answer["run_id"]
        self.say(
            "1. Lead scoring: plain service calls, in a background thread",
            f"{INDENT}POST /run-batch-score {json.dumps(body)}",
            f"{INDENT}  -> 202 {json.dumps({'run_id': self.run_id})}: {len(clients)} clients to score",
        )
        background_work(self.app).join()
        with self.app.app_context():
            job = jobmetrics.get_job_run(self.run_id)
            assert job is not None
            runs = [jobmetrics.get_client_run(self.run_id, c) for c in sorted(job.client_ids)]
        failed = [r.client_id for r in runs if r is not None and r.status.value == "Failed"]
        m = job.metrics
        leads, scored = _n(m.get("Leads Processed")), _n(m.get("Profiles Successfully Scored"))
        self.say(
            f"{INDENT}thread done: {leads} leads examined, {scored} scored,"
            f" {_n(m.get('Profile Scoring Tokens'))} tokens; "
            + (f"Failed: {', '.join(failed)} (the scorer crashed: see the log)" if failed else "none Failed"),
            f"{INDENT}the other client runs stay Running: post harvesting and post scoring come next",
            "",
        )

    # -- 2 ----------------------------------------------------------------------------------

    def _harvested(self, client_id: str) -> int:
        with self.app.app_context():
            run = jobmetrics.get_client_run(self.run_id, client_id)
        return int(run.metrics.get(HARVESTED) or 0) if run else 0

    def _deliver(self, client_id: str, event_id: str, posts: list[dict[str, Any]], secret: str) -> str:
        """POST one signed delivery; the start of its line (status and the client's total)."""
        header = get_state(self.app).settings.run_id_header
        delivery = harvest_delivery(client_id, self.run_id, event_id, posts, secret, run_id_header=header)
        response = self.client.post(delivery.path, data=delivery.body, headers=delivery.headers)
        return (
            f"{INDENT}{client_id:<10}  {event_id:<14}  {len(posts):>2} posts  -> {response.status_code}"
            f"  harvested: {self._harvested(client_id):>2}"
        )

    def post_harvesting(self, clients: list[str]) -> None:
        """Signed webhooks for the harvest clients, one redelivered, one with a wrong signature."""
        self.say(
            "2. Post harvesting: signed webhooks (@tracked + @signed), each counted once by its event ID",
            f"{INDENT}POST /webhooks/harvest/<client>  X-Run-ID: {self.run_id}  X-Signature: sha256=...",
        )
        events: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        for client_id in [c for c in HARVESTS if c in clients]:
            event_id, posts = f"evt_{uuid.uuid4().hex[:10]}", sample_posts(client_id, HARVESTS[client_id])
            events[client_id] = (event_id, posts)
            self.say(self._deliver(client_id, event_id, posts, self.secrets[client_id]))
        if REDELIVERED in events:
            event_id, posts = events[REDELIVERED]
            before = self._harvested(REDELIVERED)
            line = self._deliver(REDELIVERED, event_id, posts, self.secrets[REDELIVERED])
            after = self._harvested(REDELIVERED)
            verdict = "ignored" if after == before else f"COUNTED AGAIN ({before} -> {after})"
            self.say(f"{line}  <- redelivered (same event ID): {verdict}")
        if WRONG_SIGNATURE in clients:
            before = self._harvested(WRONG_SIGNATURE)
            posts = sample_posts(WRONG_SIGNATURE, 5)
            line = self._deliver(WRONG_SIGNATURE, "evt_forged", posts, "not-the-secret")
            recorded = "nothing recorded" if self._harvested(WRONG_SIGNATURE) == before else "RECORDED"
            self.say(f"{line}  <- signed with the wrong secret: {recorded}")
        self.say("")

    # -- 3 ----------------------------------------------------------------------------------

    def post_scoring(self) -> None:
        """``POST /run-post-scoring`` for the run."""
        body = {"run_id": self.run_id}
        results = _check(self.client.post("/run-post-scoring", json=body), 200)["clients"]
        self.say(
            f"3. Post scoring: plain service calls; every {UNSCORABLE_EVERY}th post cannot be scored,"
            f" the others cost {TOKENS_PER_POST} tokens each",
            f"{INDENT}POST /run-post-scoring {json.dumps(body)}  -> 200",
        )
        for r in results:
            if r["posts_examined"]:
                self.say(
                    f"{INDENT}{r['client_id']:<10}  {r['posts_examined']:>2} examined  {r['posts_scored']:>2}"
                    f" scored  {r['post_tokens']:>5,} tokens  -> {r['status']}"
                )
        quiet = [r["client_id"] for r in results if not r["posts_examined"] and not r["skipped"]]
        if quiet:
            self.say(f"{INDENT}no posts, completed as lead scoring left them: {', '.join(quiet)}")
        for r in results:
            if r["skipped"]:
                self.say(f"{INDENT}skipped {r['client_id']}: {r['skipped']}")
        self.say("")

    # -- 4 ----------------------------------------------------------------------------------

    def complete_job(self) -> None:
        """``complete_job_metrics``: aggregate and set the job's final status."""
        with self.app.app_context():
            job = jobmetrics.complete_job_metrics(
                self.run_id, notes="Demo: lead scoring, post harvesting and post scoring done"
            )
        self.say(f"4. Job completed with complete_job_metrics(): {job.status.value}", "")
