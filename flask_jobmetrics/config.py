"""Configuration: every ``JOBMETRICS_*`` key, its default, read once and validated.

``read_settings(app)`` sets each default with ``app.config.setdefault`` (mutable defaults
copied) and returns a frozen ``Settings``; a bad value raises
``ConfigurationError`` naming the key and the value. A ``JOBMETRICS_*`` key that is not one
of ours, and an Airtable API key without a base ID (or the reverse), are logged as warnings:
they are most often typos, and they would otherwise silently change nothing.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError, InvalidClientIdError
from .log import LOGGER_NAME
from .runids import validate_client_id
from .spelling import did_you_mean
from .stores import STORE_SCHEMES

__all__ = ["DEFAULTS", "Settings", "read_settings"]

PREFIX = "JOBMETRICS_"
#: What to say when an Airtable command or option is used without the two keys.
AIRTABLE_OFF = "Airtable publishing is off (set JOBMETRICS_AIRTABLE_API_KEY and JOBMETRICS_AIRTABLE_BASE_ID)"

#: Every key without its prefix, and its default (``None`` for the store URL means
#: ``sqlite:///<instance_path>/jobmetrics.sqlite3``).
DEFAULTS: dict[str, Any] = {
    "STORE_URL": None,
    "STORE_RETRY_INTERVAL": 5,
    "AIRTABLE_API_KEY": None,
    "AIRTABLE_BASE_ID": None,
    "AIRTABLE_ENDPOINT_URL": "https://api.airtable.com",
    "AIRTABLE_JOB_TABLE": "Job Tracking",
    "AIRTABLE_CLIENT_TABLE": "Client Run Results",
    "AIRTABLE_RATE_LIMIT": 5.0,
    "AIRTABLE_TIMEOUT": (5, 30),
    "AIRTABLE_RATE_LIMIT_PAUSE": 30,
    "AIRTABLE_FIELD_NAMES": {},
    "BUFFER_TTL": 30,
    "FLUSH_INTERVAL": 5,
    "BUFFER_MAXSIZE": 10_000,
    "PROGRESS_INTERVAL": 60,
    "OUTBOX": None,
    "UNKNOWN_METRICS": "warn",
    "STRICT": False,
    "RUN_ID_HEADER": "X-Run-ID",
    "CLIENT_ID_HEADER": "X-Client-ID",
    "WEBHOOK_SECRETS": {},
    "WEBHOOK_TOLERANCE": 300,
    "WEBHOOK_REQUIRE_TIMESTAMP": False,
    "DASHBOARD": False,
    "DASHBOARD_TOKEN": None,
    "DASHBOARD_LOOPBACK": False,
    "DASHBOARD_SESSION_MAX_AGE": 43_200,
    "LOG_FORMAT": "text",
    "PROGRESS_LOG_CHARS": 20_000,
    "STALE_AFTER": 21_600,
    "ALERT_WEBHOOK_URL": None,
}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one app."""

    store_url: str
    #: Seconds between tries to open a store that could not be reached at start-up.
    store_retry_interval: float
    airtable_api_key: str | None
    airtable_base_id: str | None
    airtable_endpoint_url: str
    airtable_job_table: str
    airtable_client_table: str
    airtable_rate_limit: float
    airtable_timeout: tuple[float, float]
    airtable_rate_limit_pause: float
    #: Our field name -> the base's (None: not published); a table name -> such a mapping.
    airtable_field_names: Mapping[str, Any]
    buffer_ttl: float
    flush_interval: float
    buffer_maxsize: int
    progress_interval: float
    #: Queue changed rows for Airtable: None means "when this app publishes".
    outbox: bool | None
    unknown_metrics: str
    strict: bool
    run_id_header: str
    client_id_header: str
    webhook_secrets: Mapping[str, bytes]
    webhook_tolerance: float
    webhook_require_timestamp: bool
    dashboard: bool
    dashboard_token: str | None
    dashboard_loopback: bool
    #: Seconds a dashboard login cookie is good for (the browser's and the server's limit).
    dashboard_session_max_age: int
    log_format: str
    #: The bound of a client row's Progress Log, in characters.
    progress_log_chars: int
    #: Seconds without an update after which the watchdog closes a running job (0: off).
    stale_after: float
    #: Where alerts are posted (Slack-compatible ``{"text": ...}``); None: no alerts.
    alert_webhook_url: str | None

    @property
    def airtable_enabled(self) -> bool:
        """Publishing is on when both the API key and the base ID are set."""
        return bool(self.airtable_api_key and self.airtable_base_id)

    @property
    def keeps_outbox(self) -> bool:
        """Whether the store queues changed rows: when this app publishes, or when told to
        (``JOBMETRICS_OUTBOX = True``: a dedicated sender in another process drains it)."""
        return self.airtable_enabled if self.outbox is None else self.outbox


def _number(key: str, value: Any, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigurationError(key, value, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(key, value, "must be a finite number")
    if value < minimum or (exclusive and value == minimum):
        relation = "greater than" if exclusive else "at least"
        raise ConfigurationError(key, value, f"must be {relation} {minimum:g}")
    return float(value)


def _positive(key: str, value: Any) -> float:
    return _number(key, value, minimum=0, exclusive=True)


def _non_negative(key: str, value: Any) -> float:
    return _number(key, value, minimum=0)


def _int_at_least_one(key: str, value: Any) -> int:
    number = _number(key, value, minimum=1)
    if not number.is_integer():
        raise ConfigurationError(key, value, "must be a whole number")
    return int(number)


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigurationError(key, value, "must be true or false")


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(key, value, "must be a non-empty string")
    return value.strip()


#: An HTTP field name (RFC 9110 ``token``): what a run or client ID header may be called.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _header_name(key: str, value: Any) -> str:
    name = _text(key, value)
    if _HEADER_NAME.fullmatch(name) is None:
        raise ConfigurationError(
            key, value, "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
        )
    return name


def _optional_text(key: str, value: Any) -> str | None:
    return None if value is None or value == "" else _text(key, value)


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigurationError(key, value, f"must be one of {', '.join(repr(c) for c in choices)}")
        return str(value)

    return check


def _url(key: str, value: Any) -> str:
    text = _text(key, value)
    if not text.startswith(("http://", "https://")):
        raise ConfigurationError(key, value, "must be an http:// or https:// URL")
    return text.rstrip("/")


def _optional_url(key: str, value: Any) -> str | None:
    return None if value is None or value == "" else _url(key, value)


def _progress_log_chars(key: str, value: Any) -> int:
    chars = _int_at_least_one(key, value)
    if not 1_000 <= chars <= 100_000:
        raise ConfigurationError(key, value, "must be from 1000 to 100000 (Airtable's long-text cell limit)")
    return chars


def _stale_after(key: str, value: Any) -> float:
    seconds = _number(key, value, minimum=float("-inf"))
    if seconds < 0:
        raise ConfigurationError(key, value, "must be seconds greater than 0, or 0 to turn the watchdog off")
    return seconds


def _timeout(key: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (_positive(key, value[0]), _positive(key, value[1]))
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        seconds = _positive(key, value)
        return (seconds, seconds)
    raise ConfigurationError(key, value, "must be seconds or a (connect, read) pair of seconds")


def _secrets(key: str, value: Any) -> dict[str, bytes]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(key, value, "must be a mapping of client ID to secret")
    secrets: dict[str, bytes] = {}
    for client_id, secret in value.items():
        try:
            validate_client_id(client_id)
        except InvalidClientIdError as exc:
            raise ConfigurationError(key, client_id, str(exc)) from None
        if isinstance(secret, str):
            secret = secret.encode()
        if not isinstance(secret, bytes) or not secret:
            raise ConfigurationError(key, f"{client_id}=<secret>", "each secret must be a non-empty string")
        secrets[client_id] = secret
    return secrets


def _field_names(key: str, value: Any, *, table: bool = False) -> dict[str, Any]:
    """The shape only (one level of per-table mappings); ``airtable.names`` checks the names."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(key, value, "must be a mapping of our field name to the base's (or None)")
    out: dict[str, Any] = {}
    for name, target in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(key, name, "each key must be a field name (or a table name)")
        if isinstance(target, Mapping) and not table:
            out[name] = _field_names(key, target, table=True)
        elif target is None or (isinstance(target, str) and target.strip()):
            out[name] = target.strip() if isinstance(target, str) else None
        else:
            raise ConfigurationError(key, f"{name}={target!r}", "each value must be a field name or None")
    return out


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "STORE_RETRY_INTERVAL": _non_negative,
    "AIRTABLE_API_KEY": _optional_text,
    "AIRTABLE_BASE_ID": _optional_text,
    "AIRTABLE_ENDPOINT_URL": _url,
    "AIRTABLE_JOB_TABLE": _text,
    "AIRTABLE_CLIENT_TABLE": _text,
    "AIRTABLE_RATE_LIMIT": _positive,
    "AIRTABLE_TIMEOUT": _timeout,
    "AIRTABLE_RATE_LIMIT_PAUSE": _non_negative,
    "AIRTABLE_FIELD_NAMES": _field_names,
    "BUFFER_TTL": _positive,
    "FLUSH_INTERVAL": _non_negative,
    "BUFFER_MAXSIZE": _int_at_least_one,
    "PROGRESS_INTERVAL": _non_negative,
    "OUTBOX": lambda key, value: None if value is None or value == "" else _bool(key, value),
    "UNKNOWN_METRICS": _choice("warn", "error", "keep"),
    "STRICT": _bool,
    "RUN_ID_HEADER": _header_name,
    "CLIENT_ID_HEADER": _header_name,
    "WEBHOOK_SECRETS": _secrets,
    "WEBHOOK_TOLERANCE": _positive,
    "WEBHOOK_REQUIRE_TIMESTAMP": _bool,
    "DASHBOARD": _bool,
    "DASHBOARD_TOKEN": _optional_text,
    "DASHBOARD_LOOPBACK": _bool,
    "DASHBOARD_SESSION_MAX_AGE": _int_at_least_one,
    "LOG_FORMAT": _choice("text", "json"),
    "PROGRESS_LOG_CHARS": _progress_log_chars,
    "STALE_AFTER": _stale_after,
    "ALERT_WEBHOOK_URL": _optional_url,
}


def _store_url(key: str, value: Any, instance_path: str) -> str:
    if value is None:
        return "sqlite:///" + os.path.join(instance_path, "jobmetrics.sqlite3")
    text = _text(key, value)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in STORE_SCHEMES:
        raise ConfigurationError(key, value, "must be memory://, sqlite:///PATH or redis://HOST:PORT/DB")
    if scheme.lower() == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if not path or rest[:1] != "/":
            raise ConfigurationError(
                key, value, "must be sqlite:///relative/path or sqlite:////absolute/path"
            )
        if not os.path.isabs(path):  # relative paths live in the app's instance folder
            return "sqlite:///" + os.path.join(instance_path, path)
    return text


_log = logging.getLogger(LOGGER_NAME)


def _warn_about(config: Mapping[str, Any], settings: Settings) -> None:
    """One warning per unknown ``JOBMETRICS_*`` key, and for half of the Airtable settings."""
    known = [PREFIX + name for name in DEFAULTS]
    for key in sorted(k for k in config if isinstance(k, str) and k.startswith(PREFIX) and k not in known):
        _log.warning("unknown config key %s is ignored%s", key, did_you_mean(key, known))
    if bool(settings.airtable_api_key) != bool(settings.airtable_base_id):
        present, missing = ("API_KEY", "BASE_ID") if settings.airtable_api_key else ("BASE_ID", "API_KEY")
        _log.warning(
            "Airtable publishing is off: JOBMETRICS_AIRTABLE_%s is set but JOBMETRICS_AIRTABLE_%s is not",
            present,
            missing,
        )


def read_settings(config: dict[str, Any], instance_path: str) -> Settings:
    """Set every default in ``config`` and return the validated settings (warnings logged)."""
    for name, default in DEFAULTS.items():
        config.setdefault(PREFIX + name, copy.deepcopy(default))
    values: dict[str, Any] = {
        "store_url": _store_url(PREFIX + "STORE_URL", config[PREFIX + "STORE_URL"], instance_path)
    }
    for name, validate in _VALIDATORS.items():
        values[name.lower()] = validate(PREFIX + name, config[PREFIX + name])
    settings = Settings(**values)
    _warn_about(config, settings)
    return settings
