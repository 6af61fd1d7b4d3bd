"""Who is asking: bearer tokens, the person behind them, and what their grants allow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from domain.envelope import Actor, Envelope, Reason
from domain.errors import NotFound
from domain.permissions import EDIT_POINTS, Action, permitting_grant
from domain.user import Grant, User

DIRECT = "direct"  # the client of a person calling the API without an API client credential


class Unauthenticated(Exception):
    """No valid bearer token (answered 401)."""


class Forbidden(Exception):
    """The person's roles do not allow the request (answered 403)."""


@dataclass(frozen=True)
class Principal:
    """The signed-in person, the client transporting the request, and the request's id."""

    user: User
    client: str
    request_id: str

    def grant_for(self, action: Action, study: str, site: str | None) -> Grant:
        """The grant allowing ``action`` at ``study``/``site`` (None: study-wide), or 403."""
        grant = permitting_grant(self.user.grants, action, study, site)
        if grant is None:
            where = f"{study}/{site}" if site is not None else f"{study} (every site)"
            raise Forbidden(f"{self.user.username} may not {action.value} at {where}")
        return grant

    def grant_for_any_site(self, action: Action, study: str) -> Grant:
        """A grant allowing ``action`` at ``study`` at one site at least, or 403."""
        for grant in sorted(self.user.grants, key=lambda g: (g.role, g.study, g.site)):
            if grant.study in ("*", study) and permitting_grant(
                    [grant], action, study, grant.site if grant.site != "*" else None):
                return grant
        raise Forbidden(f"{self.user.username} may not {action.value} at {study}")

    def actor(self, grant: Grant) -> Actor:
        """The person as recorded on events, in the role ``grant`` gives them."""
        return Actor(self.user.user_id, self.user.full_name, grant.role, grant.site)

    def envelope(self, grant: Grant, reason: Reason | None = None,
                 edit_point: str | None = None) -> Envelope:
        """The envelope of an event caused by this request."""
        return Envelope(self.actor(grant), self.client, "api", self.request_id,
                        edit_point or EDIT_POINTS.get(grant.role, "site"), reason)


_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/auth/token")


def request_id(request: Request) -> str:
    """The request's id (the client's X-Request-ID, else one made here)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = str(uuid.uuid4())
    return str(rid)


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The person behind the request's bearer token (401 without a live one)."""
    from api.runtime import Runtime

    runtime: Runtime = request.app.state.runtime
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required (POST /v1/auth/token)")
    with runtime.pool().connection() as conn:
        session = runtime.sessions().resolve(conn, credentials.credentials)
    if session is None:
        raise Unauthenticated("the token is unknown, expired, idle too long or signed out")
    try:
        user = runtime.directory().user(session.username)
    except NotFound:
        raise Unauthenticated("the token's user no longer exists") from None
    if not user.can_sign_in():
        raise Unauthenticated(f"{user.username} may not sign in")
    request.state.person = user.username
    request.state.client = session.client
    return Principal(user, session.client, request_id(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
