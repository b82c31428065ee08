"""Alerts posted to a Slack-compatible webhook (``JOBMETRICS_ALERT_WEBHOOK_URL``).

A failed client run, a failed or stalled job and a dead-lettered Airtable row each add one
short line; the lines of a minute go out together as one ``{"text": ...}`` POST from a
background thread. A failed post (no answer, 429, 5xx) is retried with exponential backoff
and jitter (``Retry-After`` honoured); a post the receiver refuses for good (another 4xx) is
logged and dropped. Adding an alert never blocks, never raises and never touches the network
on the caller's thread. At most ``max_pending`` lines wait; beyond that the oldest give way
and the next post says how many were dropped (a batch being posted is out of the queue: lines
added meanwhile queue behind it, and a batch to retry goes back in front of them).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .forksafe import at_fork_reset
from .leased import LeasedLoop
from .log import StructuredLogger

if TYPE_CHECKING:  # imported when an alerter is made: requests takes a while to load
    import requests

__all__ = ["Alerter"]

#: Builds the dashboard link of a run (None: no link).
RunLink = Callable[[str], "str | None"]
_MAX_LINE = 500
#: A stalled job's alert names at most this many of its clients ("and N more").
_MAX_CLIENTS = 10


def _short(text: str, limit: int = _MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Alerter:
    """Batches alert lines per ``window`` seconds and posts them to ``url`` in the background."""

    def __init__(
        self,
        url: str,
        *,
        link: RunLink | None = None,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: tuple[float, float] = (5.0, 10.0),
        first_retry: float = 5.0,
        max_backoff: float = 600.0,
        max_pending: int = 1_000,
        logger: StructuredLogger | None = None,
        session: requests.Session | None = None,
        background: bool = True,
    ) -> None:
        self.url = url
        #: False: no thread; whoever owns the alerter calls ``run_once`` (tests, a scheduler).
        self.background = background
        self.link = link
        self.window = window
        self.clock = clock
        self.timeout = timeout
        self.first_retry = first_retry
        self.max_backoff = max_backoff
        self.log = logger or StructuredLogger("SYSTEM", process="alerts")
        import requests

        self._own_session = session is None
        self.session = session or requests.Session()
        self._max_pending = max_pending
        self._lines: deque[str] = deque(maxlen=max_pending)
        self._dropped = 0
        self._sending = 0  # lines of the post under way (out of ``_lines`` meanwhile)
        self._batch_started: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._lock = threading.Lock()  # the queue; never held during I/O
        self._send_lock = threading.Lock()  # one post at a time
        #: The thread posting the lines when they are due (every process posts its own).
        self._loop = LeasedLoop(
            self.run_once,
            name="jobmetrics-alerts",
            wait=self._next_look,
            logger=self.log,
            failed="posting alerts failed (retried)",
        )
        at_fork_reset(self)

    def _after_fork_in_child(self) -> None:
        # The parent's locks may be held here: start afresh (the queued lines stay the
        # parent's to post; the loop starts afresh by itself). Our session's pooled
        # connections are the parent's sockets: a new session (one handed in is its owner's
        # to renew).
        if self._own_session:
            import requests

            self.session = requests.Session()
        self._lock, self._send_lock = threading.Lock(), threading.Lock()
        self._lines.clear()
        self._dropped, self._batch_started, self._retry_at, self._failures = 0, None, 0.0, 0
        self._sending = 0

    # -- the events ---------------------------------------------------------------------

    def client_failed(self, run_id: str, client_id: str, error: str | None, *, stalled: bool = False) -> None:
        """A client run completed as ``Failed`` (one the watchdog closed is in its job's
        ``run_stalled`` line instead)."""
        if stalled:
            return
        self.add(f"Client run failed: {client_id} in run {run_id}" + (f": {error}" if error else ""), run_id)

    def job_failed(self, run_id: str, notes: str) -> None:
        """A job run completed as ``Failed``."""
        self.add(f"Job run failed: {run_id}" + (f": {notes}" if notes else ""), run_id)

    def run_stalled(self, run_id: str, client_ids: Sequence[str]) -> None:
        """The watchdog closed a job that stopped updating."""
        named = ", ".join(client_ids[:_MAX_CLIENTS])
        if len(client_ids) > _MAX_CLIENTS:
            named += f" and {len(client_ids) - _MAX_CLIENTS} more"
        clients = f"; still running, now Failed: {named}" if client_ids else ""
        self.add(f"Job run stalled and was closed: {run_id}{clients}", run_id)

    def row_dead(self, table: str, error: str, run_id: str | None, client_id: str | None) -> None:
        """Airtable refused a row for good (it is in the dead letters)."""
        row = " ".join(part for part in (run_id, client_id) if part) or "a row"
        self.add(f"Airtable refused {row} in {table} (dead-lettered): {error}", run_id)

    # -- queueing -----------------------------------------------------------------------

    def add(self, text: str, run_id: str | None = None) -> None:
        """Queue one alert line (with the run's dashboard link when there is one). Never raises."""
        try:
            line = _short(text)
            if run_id is not None and self.link is not None:
                url = self.link(run_id)
                if url:
                    line += f" <{url}|open run {run_id}>"
            with self._lock:
                if len(self._lines) == self._lines.maxlen:
                    self._dropped += 1
                self._lines.append(line)
                if self._batch_started is None:
                    self._batch_started = self.clock()
            self._start()
        except Exception as exc:  # an alert must never fail the update that raised it
            self.log.warning("could not queue an alert: %r", exc)

    def pending(self) -> int:
        """Alert lines waiting to be posted (those of a post under way included)."""
        with self._lock:
            return len(self._lines) + self._sending

    def due_in(self) -> float | None:
        """Seconds until the next post is due (0: now), None when nothing waits."""
        with self._lock:
            if self._batch_started is None:
                return None
            due = max(self._batch_started + self.window, self._retry_at)
        return max(0.0, due - self.clock())

    # -- sending ------------------------------------------------------------------------

    def run_once(self, *, force: bool = False) -> int:
        """Post the waiting lines if their minute is over (``force``: now, backoff aside).
        Returns how many lines the receiver accepted."""
        with self._send_lock:
            now = self.clock()
            with self._lock:
                if self._batch_started is None or now < self._retry_at:
                    return 0
                if not force and now < self._batch_started + self.window:
                    return 0
                # Take the batch out of the queue: lines added during the post queue afresh.
                lines, dropped, started = self._lines, self._dropped, self._batch_started
                self._lines, self._dropped, self._batch_started = deque(maxlen=self._max_pending), 0, None
                self._sending = len(lines)
            try:
                text = "\n".join(
                    ["flask_jobmetrics:", *lines] + ([f"({dropped} older alerts dropped)"] if dropped else [])
                )
                outcome = self._post(text)
            except BaseException:
                self._put_back(lines, dropped, started)
                raise
            if outcome == "retry":
                with self._lock:
                    self._failures += 1
                    delay = min(self.max_backoff, self.first_retry * 2 ** (self._failures - 1))
                    backoff = self.clock() + delay * random.uniform(0.8, 1.2)
                    self._retry_at = max(self._retry_at, backoff)  # a Retry-After may ask for longer
                self._put_back(lines, dropped, started)
                return 0
            with self._lock:  # sent, or refused for good (logged): the batch is done
                self._sending, self._failures, self._retry_at = 0, 0, 0.0
            return len(lines) if outcome == "sent" else 0

    def _put_back(self, lines: deque[str], dropped: int, started: float) -> None:
        """Queue an unsent batch again, in front of the lines added meanwhile; what no longer
        fits within ``max_pending`` gives way oldest first, and is counted."""
        with self._lock:
            self._sending = 0
            newer = self._lines
            overflow = max(0, len(lines) + len(newer) - self._max_pending)
            lines.extend(newer)  # a deque of max_pending: the oldest ``overflow`` give way
            self._lines = lines
            self._dropped += dropped + overflow
            self._batch_started = (
                started if self._batch_started is None else min(started, self._batch_started)
            )

    def _post(self, text: str) -> str:
        """``"sent"``, ``"retry"`` or ``"refused"``."""
        import requests

        try:
            response = self.session.post(self.url, json={"text": text}, timeout=self.timeout)
        except requests.RequestException as exc:
            self.log.warning("could not post alerts to the webhook (retried with backoff): %r", exc)
            return "retry"
        if response.status_code < 300:
            return "sent"
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                with self._lock:
                    self._retry_at = self.clock() + float(retry_after)
            self.log.warning("the alert webhook answered %s (retried with backoff)", response.status_code)
            return "retry"
        self.log.error(
            "the alert webhook refused the alerts (HTTP %s: %s); they are dropped",
            response.status_code,
            response.text[:200],
        )
        return "refused"

    # -- the thread ---------------------------------------------------------------------

    def _start(self) -> None:
        if not self.background:
            return
        if self._loop.running:
            self._loop.wake()
        else:
            self._loop.start()

    def wake(self) -> None:
        """Let the thread look now (e.g. after the clock moved)."""
        self._loop.wake()

    def _next_look(self) -> float:
        """How long the thread waits: until the next post is due (a window when none waits)."""
        wait = self.due_in()
        return self.window if wait is None else min(max(wait, 0.05), self.window)

    def close(self) -> None:
        """``stop`` (the service closes)."""
        self.stop()

    def stop(self) -> None:
        """Stop the thread, then try once to post what waits (a short exit drain)."""
        self._loop.stop()
        if self.pending():
            try:
                self.run_once(force=True)
            except Exception as exc:
                self.log.warning("could not post the last alerts: %r", exc)
