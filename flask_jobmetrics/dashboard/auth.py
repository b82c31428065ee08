"""Who may see the dashboard: a bearer token (or the login cookie) when one is configured, else
loopback clients only; with ``JOBMETRICS_DASHBOARD_LOOPBACK`` direct loopback clients need no token."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from enum import Enum

from flask import Request

__all__ = ["COOKIE_NAME", "Decision", "check_access", "is_loopback", "session_value", "token_matches"]

#: Headers a reverse proxy adds; such a request is never treated as local.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: The cookie the login form sets: an HMAC of the token, never the token itself.
COOKIE_NAME = "jobmetrics_session"
_SESSION_CONTEXT = b"flask_jobmetrics dashboard session v1"


class Decision(Enum):
    """The outcome of ``check_access``."""

    ALLOW = "allow"
    #: A token is configured and the request has none (401).
    MISSING_TOKEN = "missing_token"
    #: A token is configured and the request's is wrong (401).
    INVALID_TOKEN = "invalid_token"
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


def session_value(token: str) -> str:
    """The login cookie's value for ``token``: changing the token signs every browser out."""
    return hmac.new(token.encode("utf-8"), _SESSION_CONTEXT, hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _direct_loopback(request: Request) -> bool:
    return is_loopback(request.remote_addr) and not any(
        name in request.headers for name in _FORWARDING_HEADERS
    )


def check_access(request: Request, token: str | None, *, loopback: bool = False) -> Decision:
    """Decide one request: the bearer token or the login cookie (compared in constant time);
    direct loopback clients when no token is set, or when ``loopback`` lets them in anyway."""
    if token:
        if loopback and _direct_loopback(request):
            return Decision.ALLOW
        given = _bearer(request)
        if given is None:
            cookie = request.cookies.get(COOKIE_NAME)
            if cookie and hmac.compare_digest(cookie.encode("utf-8"), session_value(token).encode("utf-8")):
                return Decision.ALLOW
            return Decision.MISSING_TOKEN
        if not token_matches(given, token):
            return Decision.INVALID_TOKEN
        return Decision.ALLOW
    if not is_loopback(request.remote_addr):
        return Decision.NOT_LOOPBACK
    if not _direct_loopback(request):
        return Decision.FORWARDED
    return Decision.ALLOW
