"""Who may see the dashboard: a bearer token (or the login cookie) when one is configured, else
loopback clients only; with ``JOBMETRICS_DASHBOARD_LOOPBACK`` direct loopback clients need no token.

The login cookie is signed and timestamped with the token (``itsdangerous``): the server refuses
it once it is older than ``JOBMETRICS_DASHBOARD_SESSION_MAX_AGE``, and a new token refuses every
cookie made with the old one. Nothing is stored on the server, so any worker process can check
any cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from enum import Enum

from flask import Request
from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

__all__ = [
    "COOKIE_NAME",
    "Decision",
    "check_access",
    "is_loopback",
    "new_session",
    "session_serializer",
    "token_matches",
]

#: Headers a reverse proxy adds; such a request is never treated as local.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: The cookie the login form sets: a value signed with the token, never the token itself.
COOKIE_NAME = "jobmetrics_session"
#: Names the signatures' purpose: nothing else signed with the token passes for a session.
_SESSION_SALT = "flask_jobmetrics dashboard session"
_SESSION_PAYLOAD = "dashboard"
#: Seconds a login cookie's stamp may be ahead of this host's clock (hosts' clocks differ a little).
_CLOCK_SKEW = 30


class Decision(Enum):
    """The outcome of ``check_access``."""

    ALLOW = "allow"
    #: A token is configured and the request has none (401).
    MISSING_TOKEN = "missing_token"
    #: A token is configured and the request's is wrong (401).
    INVALID_TOKEN = "invalid_token"
    #: A token is configured and the login cookie is authentic but past its max age (401).
    EXPIRED_SESSION = "expired_session"
    #: No token is configured and the client is not on loopback (403).
    NOT_LOOPBACK = "not_loopback"
    #: No token is configured and a proxy forwarded the request (403).
    FORWARDED = "forwarded"


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ``::1`` and IPv4-mapped loopback; False for anything unparsable."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def session_serializer(
    token: str, *, signer: type[TimestampSigner] = TimestampSigner
) -> URLSafeTimedSerializer:
    """Signs and checks login cookies with ``token`` (HMAC-SHA256); ``signer`` sets the clock
    (``TimestampSigner.get_timestamp``), the system's by default."""
    return URLSafeTimedSerializer(
        token, salt=_SESSION_SALT, signer=signer, signer_kwargs={"digest_method": hashlib.sha256}
    )


def new_session(token: str) -> str:
    """A login cookie's value for ``token``, stamped now."""
    return session_serializer(token).dumps(_SESSION_PAYLOAD)


def _check_session(cookie: str, token: str, max_age: int) -> Decision:
    """A cookie signed with ``token`` at most ``max_age`` seconds ago passes; an expired one
    is told apart (the sign-in page says so); a forged or foreign one is no cookie at all.

    A stamp up to ``_CLOCK_SKEW`` seconds in the future passes too: the next request after
    signing in may reach a host whose clock is a little behind the one that signed it."""
    try:
        session_serializer(token).loads(cookie, max_age=max_age)
    except SignatureExpired as exc:  # authentic, but too old or from the future
        ahead = exc.date_signed.timestamp() - time.time() if exc.date_signed else 0.0
        if ahead <= 0:
            return Decision.EXPIRED_SESSION
        return Decision.ALLOW if ahead <= _CLOCK_SKEW else Decision.MISSING_TOKEN
    except BadData:
        return Decision.MISSING_TOKEN
    return Decision.ALLOW


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _direct_loopback(request: Request) -> bool:
    return is_loopback(request.remote_addr) and not any(
        name in request.headers for name in _FORWARDING_HEADERS
    )


def check_access(
    request: Request, token: str | None, *, session_max_age: int, loopback: bool = False
) -> Decision:
    """Decide one request: the bearer token (compared in constant time) or a login cookie
    signed with it less than ``session_max_age`` seconds ago; direct loopback clients when no
    token is set, or when ``loopback`` lets them in anyway."""
    if token:
        if loopback and _direct_loopback(request):
            return Decision.ALLOW
        given = _bearer(request)
        if given is None:
            cookie = request.cookies.get(COOKIE_NAME)
            return _check_session(cookie, token, session_max_age) if cookie else Decision.MISSING_TOKEN
        if not token_matches(given, token):
            return Decision.INVALID_TOKEN
        return Decision.ALLOW
    if not is_loopback(request.remote_addr):
        return Decision.NOT_LOOPBACK
    if not _direct_loopback(request):
        return Decision.FORWARDED
    return Decision.ALLOW
