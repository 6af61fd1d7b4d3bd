"""The console's sign-in session: a cookie holding a token of the API's session store, and
the CSRF token every form carries.

The token is the one ``POST /v1/auth/token`` would hand out (:mod:`infra.sessions`): the same
lifetime, idle time-out and sign-out apply; the cookie only carries it (HttpOnly, so no
script reads it; SameSite=Strict, so no other site's page sends it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from api.auth import Principal, principal_of_token
from domain.errors import Unauthenticated

COOKIE = "tl_session"
SIGN_IN_COOKIE = "tl_sign_in"  # the CSRF token of the sign-in form, before any session
PATH = "/ui"


class SignInNeeded(Exception):
    """No live session: the person is sent to the sign-in page, told why."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def csrf_of(token: str) -> str:
    """The CSRF token of a session: derived from its token, which no other site can read."""
    return hmac.new(token.encode(), b"trialledger console csrf", hashlib.sha256).hexdigest()


async def signed_in(request: Request) -> tuple[Principal, str]:
    """The person behind the session cookie and the session's CSRF token; raises
    :class:`SignInNeeded` when there is no live session (never had one, idle too long,
    expired, signed out elsewhere)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInNeeded("")
    try:
        return await principal_of_token(request, token), csrf_of(token)
    except Unauthenticated:
        raise SignInNeeded("ended") from None


def check_csrf(request: Request, expected: str, given: str | None) -> None:
    """Refuse a form post whose CSRF token is not the session's (403)."""
    if not given or not hmac.compare_digest(expected, given):
        raise CsrfRefused()


class CsrfRefused(Exception):
    """A form post without this session's CSRF token."""


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def keep_session(request: Request, response: Response, token: str) -> None:
    """Set the session cookie on ``response`` (a browser session cookie: gone when the
    browser closes; the server's lifetime and idle time-out apply anyway)."""
    response.set_cookie(COOKIE, token, path=PATH, httponly=True, samesite="strict",
                        secure=_secure(request))
    response.delete_cookie(SIGN_IN_COOKIE, path=PATH)


def drop_session(response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path=PATH)


def sign_in_csrf(request: Request) -> str:
    """The sign-in form's CSRF token (double submit: a cookie and the form's field): the
    browser's own, or a new one to set with :func:`keep_sign_in_csrf`."""
    return request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)


def keep_sign_in_csrf(request: Request, response: Response, token: str) -> None:
    """Set the sign-in form's CSRF cookie on ``response``."""
    response.set_cookie(SIGN_IN_COOKIE, token, path=PATH, httponly=True, samesite="strict",
                        secure=_secure(request))
