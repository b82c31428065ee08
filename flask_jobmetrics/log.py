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
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = ["LOGGER_NAME", "Scope", "StructuredLogger", "set_default_format"]

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
