"""Sign in once with the dashboard token: a form that sets a Secure, HttpOnly, SameSite cookie.

The cookie is signed and timestamped with the token (``auth.new_session``), never the token;
it lasts ``JOBMETRICS_DASHBOARD_SESSION_MAX_AGE`` seconds, in the browser and on the server.
Changing ``JOBMETRICS_DASHBOARD_TOKEN`` signs every browser out. ``POST /logout`` deletes this
browser's cookie; nothing is kept on the server to revoke one cookie alone (a copy stays good
until it expires, or until the token changes).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Response, redirect, render_template, request, url_for

from ..formatting import span
from ..state import get_state
from .auth import COOKIE_NAME, is_loopback, new_session, token_matches
from .blueprint import bp

__all__: list[str] = []


def _cookie_path() -> str:
    return url_for(".index").rstrip("/") or "/"


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this dashboard only (no open redirect)."""
    fallback = url_for(".index")
    if not target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(_cookie_path()) or target.startswith("//"):
        return fallback
    return target


def _form(status: int = 200, error: str = "") -> Response:
    plain_http = not request.is_secure and not is_loopback(request.remote_addr)
    page = render_template(
        "jobmetrics/login.html",
        next_url=_safe_next(request.values.get("next")),
        error=error,
        plain_http=plain_http,
        session_for=span(get_state().settings.dashboard_session_max_age, units=2),
    )
    return Response(page, status=status)


def _same_origin() -> bool:
    """A form post from this site, or from a client that says nothing (curl). Browsers send
    ``Sec-Fetch-Site``; ``Origin`` is ``null`` under our ``Referrer-Policy: no-referrer``."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin in (None, "null") or origin.rstrip("/") == request.host_url.rstrip("/")


@bp.get("/login")
def login() -> Response:
    if not get_state().settings.dashboard_token:
        return redirect(url_for(".index"))  # type: ignore[return-value]
    return _form()


@bp.post("/login")
def login_post() -> Response:
    token = get_state().settings.dashboard_token
    if not token:
        return redirect(url_for(".index"))  # type: ignore[return-value]
    if not _same_origin():
        return _form(403, "This sign-in came from another site; open the form here and try again.")
    given = request.form.get("token", "").strip()
    if not given or not token_matches(given, token):
        return _form(401, "That is not the dashboard's token.")
    response: Response = redirect(_safe_next(request.form.get("next")), code=303)  # type: ignore[assignment]
    response.set_cookie(
        COOKIE_NAME,
        new_session(token),
        max_age=get_state().settings.dashboard_session_max_age,
        path=_cookie_path(),
        secure=True,
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> Response:
    response: Response = redirect(url_for(".login"), code=303)  # type: ignore[assignment]
    response.delete_cookie(COOKIE_NAME, path=_cookie_path(), secure=True, httponly=True, samesite="Strict")
    return response
