"""Run IDs: one value type, parsed once.

A run ID is ``YYMMDD-HHMMSS`` in UTC (the *base* form). A client's run inside a job is
``<base>-<client_id>`` (the *client* form). The legacy ``YYMMDD-HHMMSS.0`` is read as the
base. Everything else raises ``InvalidRunIdError``;
nothing is passed through unchanged.

This module has no Flask imports.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .exceptions import InvalidClientIdError, InvalidRunIdError

__all__ = [
    "CLIENT_ID_PATTERN",
    "RunId",
    "RunIdLike",
    "base_run_id",
    "client_id_of",
    "client_run_id",
    "generate_run_id",
    "validate_client_id",
]

#: What a client ID may look like (also the part after the base in the client form).
CLIENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}"

_CLIENT_RE = re.compile(CLIENT_ID_PATTERN)
_RUN_RE = re.compile(r"(?P<base>\d{6}-\d{6})(?:\.0|-(?P<client>.+))?")
_BASE_FORMAT = "%y%m%d-%H%M%S"


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def validate_client_id(client_id: Any) -> str:
    """Return ``client_id`` if it is a valid client ID, else raise ``InvalidClientIdError``."""
    if not isinstance(client_id, str):
        raise InvalidClientIdError(f"client ID must be a string, got {_describe(client_id)}")
    if not client_id:
        raise InvalidClientIdError("client ID is empty")
    if _CLIENT_RE.fullmatch(client_id) is None:
        raise InvalidClientIdError(f"client ID {client_id!r} is not of the form {CLIENT_ID_PATTERN}")
    return client_id


@dataclass(frozen=True, slots=True)
class RunId:
    """A parsed run ID: ``base`` (``YYMMDD-HHMMSS``) and an optional ``client``."""

    base: str
    client: str | None = None

    @classmethod
    def parse(cls, text: Any) -> RunId:
        """Parse a run ID in base, client or legacy ``.0`` form; raise on anything else."""
        if isinstance(text, RunId):
            return text
        if not isinstance(text, str):
            raise InvalidRunIdError(f"run ID must be a string, got {_describe(text)}")
        return _parse_text(text)

    @classmethod
    def _parse_text(cls, text: str) -> RunId:
        if not text:
            raise InvalidRunIdError("run ID is empty")
        match = _RUN_RE.fullmatch(text)
        if match is None:
            raise InvalidRunIdError(
                f"run ID {text!r} is not of the form YYMMDD-HHMMSS or YYMMDD-HHMMSS-<client_id>"
            )
        base = match["base"]
        try:
            datetime.strptime(base, _BASE_FORMAT)
        except ValueError:
            raise InvalidRunIdError(f"run ID {text!r} is not a real UTC date and time") from None
        client = match["client"]
        if client is not None:
            try:
                validate_client_id(client)
            except InvalidClientIdError as exc:
                raise InvalidRunIdError(f"run ID {text!r} has an invalid client part: {exc}") from None
        return cls(base, client)

    @classmethod
    def from_datetime(cls, when: datetime) -> RunId:
        """The base run ID of ``when`` (naive is taken as UTC), truncated to the second."""
        if when.tzinfo is not None:
            when = when.astimezone(timezone.utc)
        return cls(when.strftime(_BASE_FORMAT))

    @classmethod
    def new(cls, now: datetime | None = None) -> RunId:
        """A base run ID for the current UTC second (or ``now``)."""
        return cls.from_datetime(now if now is not None else datetime.now(timezone.utc))

    @property
    def timestamp(self) -> datetime:
        """The run's start second as an aware UTC datetime."""
        return datetime.strptime(self.base, _BASE_FORMAT).replace(tzinfo=timezone.utc)

    def next_second(self) -> RunId:
        """The base run ID one second later."""
        return RunId.from_datetime(self.timestamp + timedelta(seconds=1))

    @property
    def epoch(self) -> int:
        """The run's start second as seconds since the Unix epoch (what stores count in)."""
        return calendar.timegm(time.strptime(self.base, _BASE_FORMAT))

    @classmethod
    def from_epoch(cls, seconds: int) -> RunId:
        """The base run ID of the UTC second ``seconds`` after the Unix epoch."""
        return cls(time.strftime(_BASE_FORMAT, time.gmtime(seconds)))

    def for_client(self, client_id: Any) -> RunId:
        """This run in the client form for ``client_id``.

        Idempotent for the same client; raises for a different one: a second suffix is
        never appended and an existing one is never replaced.
        """
        client_id = validate_client_id(client_id)
        if self.client is None:
            return RunId(self.base, client_id)
        if self.client != client_id:
            raise InvalidRunIdError(
                f"run ID {str(self)!r} belongs to client {self.client!r}, not {client_id!r}"
            )
        return self

    @property
    def base_id(self) -> RunId:
        """This run ID without its client part."""
        return self if self.client is None else RunId(self.base)

    def __str__(self) -> str:
        return self.base if self.client is None else f"{self.base}-{self.client}"


#: A run ID as the operations take it: its text (base or client form) or a ``RunId``.
RunIdLike = str | RunId

# A job's run ID is parsed on every update: remember the last thousand (errors are not cached).
_parse_text = functools.lru_cache(maxsize=1024)(RunId._parse_text)


def generate_run_id(now: datetime | None = None) -> str:
    """A new base run ID for the current UTC second (not reserved: see ``start_job``)."""
    return str(RunId.new(now))


def client_run_id(run_id: Any, client_id: Any) -> str:
    """``<base>-<client_id>``; idempotent for the same client, an error for another."""
    return str(RunId.parse(run_id).for_client(client_id))


def base_run_id(run_id: Any) -> str:
    """The base ``YYMMDD-HHMMSS`` of any accepted run ID."""
    return RunId.parse(run_id).base


def client_id_of(run_id: Any) -> str | None:
    """The client part of a client-form run ID, ``None`` for a base one."""
    return RunId.parse(run_id).client
