"""Who may see the dashboard: a bearer token when one is configured, else loopback clients only."""

from __future__ import annotations

import hmac
import ipaddress
from enum import Enum

from flask import Request

__all__ = ["Decision", "check_access", "is_loopback"]

#: Headers a reverse proxy adds; without a token such a request is not treated as local.
_FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


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


def check_access(request: Request, token: str | None) -> Decision:
    """Decide one request: the bearer token (compared in constant time) or loopback."""
    if token:
        given = _bearer(request)
        if given is None:
            return Decision.MISSING_TOKEN
        if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            return Decision.INVALID_TOKEN
        return Decision.ALLOW
    if not is_loopback(request.remote_addr):
        return Decision.NOT_LOOPBACK
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        return Decision.FORWARDED
    return Decision.ALLOW
