"""Structured logging with run and client context, on the standard ``logging`` module.

Text lines look like ``[CLIENT:acme] [RUN:230615-120000] [lead_scoring] message``; with
``JOBMETRICS_LOG_FORMAT = "json"`` each line is one JSON object with ``scope``,
``client_id``, ``run_id``, ``process``, ``level``, ``message`` and ``time``. Records go to
the logger named ``flask_jobmetrics``; the context is also attached to each record as
``record.jobmetrics`` for handlers that want it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = [
    "LOGGER_NAME",
    "OUTAGE_REPORT_INTERVAL",
    "OutageLog",
    "Scope",
    "StructuredLogger",
    "set_default_format",
]

LOGGER_NAME = "flask_jobmetrics"
Scope = Literal["SYSTEM", "CLIENT", "PROCESS"]
LogFormat = Literal["text", "json"]
_SCOPES = ("SYSTEM", "CLIENT", "PROCESS")
_base_logger = logging.getLogger(LOGGER_NAME)
_default_format: LogFormat = "text"


def set_default_format(fmt: LogFormat) -> None:
    """The format of loggers created without ``fmt`` outside an app context (default text)."""
    global _default_format
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    _default_format = fmt


def _current_format() -> LogFormat:
    try:
        from flask import current_app, has_app_context

        if has_app_context():
            state = current_app.extensions.get("jobmetrics")
            if state is not None:
                fmt: LogFormat = state.settings.log_format
                return fmt
    except ImportError:  # pragma: no cover - flask is a dependency
        pass
    return _default_format


class StructuredLogger:
    """A logger bound to a scope, and optionally a client, a process and a run."""

    __slots__ = ("client_id", "fmt", "process", "run_id", "scope")

    def __init__(
        self,
        scope: str = "SYSTEM",
        client_id: str | None = None,
        process: str | None = None,
        *,
        run_id: str | None = None,
        fmt: LogFormat | None = None,
    ) -> None:
        scope = scope.upper() if isinstance(scope, str) else scope
        if scope not in _SCOPES:
            raise ValueError(f"scope must be one of {', '.join(_SCOPES)}, got {scope!r}")
        for name, value in (("client_id", client_id), ("process", process), ("run_id", run_id)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")
        self.scope: str = scope
        self.client_id = client_id
        self.process = process
        self.run_id = run_id
        self.fmt = fmt

    @classmethod
    def of_run(
        cls, scope: str, client_id: str | None, process: str | None, run_id: str | None
    ) -> StructuredLogger:
        """A logger of values already checked (a run context's): no validation, no format."""
        logger = object.__new__(cls)
        logger.scope, logger.client_id, logger.process, logger.run_id, logger.fmt = (
            scope,
            client_id,
            process,
            run_id,
            None,
        )
        return logger

    def bind(self, **context: str | None) -> StructuredLogger:
        """A copy with ``client_id``, ``process``, ``run_id`` or ``scope`` replaced."""
        values: dict[str, Any] = {
            "scope": self.scope,
            "client_id": self.client_id,
            "process": self.process,
            "run_id": self.run_id,
            "fmt": self.fmt,
        }
        unknown = set(context) - set(values)
        if unknown:
            raise TypeError(f"unknown logger context: {', '.join(sorted(unknown))}")
        values.update(context)
        return StructuredLogger(**values)

    def prefix(self) -> str:
        parts = [f"[{self.scope}:{self.client_id}]" if self.client_id else f"[{self.scope}]"]
        if self.run_id:
            parts.append(f"[RUN:{self.run_id}]")
        if self.process:
            parts.append(f"[{self.process}]")
        return " ".join(parts)

    def _render(self, level: int, message: str) -> str:
        if (self.fmt or _current_format()) == "json":
            return json.dumps(
                {
                    "time": datetime.now(timezone.utc)
                    .isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
                    "level": logging.getLevelName(level).lower(),
                    "scope": self.scope,
                    "client_id": self.client_id,
                    "run_id": self.run_id,
                    "process": self.process,
                    "message": message,
                },
                default=str,
            )
        return f"{self.prefix()} {message}"

    def log(self, level: int, message: str, *args: Any, exc_info: Any = None) -> None:
        if not _base_logger.isEnabledFor(level):
            return
        text = message % args if args else str(message)
        context = {
            "scope": self.scope,
            "client_id": self.client_id,
            "run_id": self.run_id,
            "process": self.process,
        }
        _base_logger.log(
            level,
            "%s",
            self._render(level, text),
            exc_info=exc_info,
            extra={"jobmetrics": context},
            stacklevel=3,
        )

    def debug(self, message: str, *args: Any) -> None:
        self.log(logging.DEBUG, message, *args)

    def info(self, message: str, *args: Any) -> None:
        self.log(logging.INFO, message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self.log(logging.WARNING, message, *args)

    warn = warning

    def error(self, message: str, *args: Any) -> None:
        self.log(logging.ERROR, message, *args)

    def exception(self, message: str, *args: Any) -> None:
        self.log(logging.ERROR, message, *args, exc_info=True)

    def __repr__(self) -> str:
        return f"StructuredLogger({self.prefix()})"


#: Seconds between the lines that say a store outage goes on.
OUTAGE_REPORT_INTERVAL = 60.0


class OutageLog:
    """The log of an outage of the store, a few lines however often calls fail.

    The first failure is logged as it is (``failed(message, *args)``); while failures go
    on, at most one line every ``interval`` seconds says for how long, how many calls
    failed since the last line, what ``held()`` says is kept (the buffered entries; left
    out without ``held``), and the last error; ``recovered()`` logs one line when a call
    works again. Thread-safe; ``recovered()`` costs one attribute read when there is no
    outage.
    """

    def __init__(
        self,
        logger: StructuredLogger,
        held: Callable[[], int] | None = None,
        *,
        interval: float = OUTAGE_REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._held, self.interval, self._clock = logger, held, interval, clock
        self._lock = threading.Lock()
        self._since: float | None = None  # when the outage began; None: no outage
        self._failed = 0  # calls failed since it began
        self._unreported = 0  # calls failed since the last line
        self._next = 0.0  # when the next line may be logged

    @property
    def down(self) -> bool:
        """Whether the last call logged here failed."""
        return self._since is not None

    def failed(self, message: str, *args: Any) -> None:
        """A store call failed; ``message % args`` (the error included) says which and why."""
        now = self._clock()
        with self._lock:
            self._failed += 1
            first = self._since is None
            if first:
                self._since, self._unreported = now, 0
            elif now < self._next:
                self._unreported += 1
                return
            count, self._unreported = self._unreported + 1, 0
            self._next = now + self.interval
            since = self._since if self._since is not None else now
        if first:
            self._logger.warning(
                message + " (while the store stays unavailable, one line every %.0f s)", *args, self.interval
            )
            return
        kept = () if self._held is None else (self._held(),)
        self._logger.warning(
            "the store is still unavailable after %.0f s: %d more calls failed since the last line;"
            + (" %d buffered entries kept;" if kept else "")
            + " last: "
            + message,
            now - since,
            count,
            *kept,
            *args,
        )

    def recovered(self) -> None:
        """A store call worked: one line if an outage was logged."""
        if self._since is None:
            return
        now = self._clock()
        with self._lock:
            if self._since is None:
                return
            since, failed = self._since, self._failed
            self._since, self._failed, self._unreported = None, 0, 0
        self._logger.warning(
            "the store is available again after %.0f s (%d calls failed)"
            + ("; the buffered entries go out" if self._held is not None else ""),
            now - since,
            failed,
        )
