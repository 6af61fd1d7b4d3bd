"""Who is asking: bearer tokens, the person behind them, and what their grants allow."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.in_flight import InFlight
from domain.caller import Caller
from domain.envelope import Actor, Envelope, Reason
from domain.errors import Forbidden as Forbidden
from domain.errors import NotFound
from domain.errors import Unauthenticated as Unauthenticated
from domain.permissions import Action, permitting_grant
from domain.user import Grant, User
from infra.sessions import Session

if TYPE_CHECKING:
    from application.runtime import Runtime

# The sessions and persons being read again, by runtime and token.
_SIGNING_IN: InFlight[tuple[Session, User]] = InFlight()
DIRECT = "direct"  # the client of a person calling the API without an API client credential


@dataclass(frozen=True)
class Principal:
    """The signed-in person, the client transporting the request, and the request's id."""

    user: User
    client: str
    request_id: str

    @cached_property
    def caller(self) -> Caller:
        """The person as the trial service knows a caller."""
        return Caller.of(self.user, self.client, self.request_id, "api")

    def grant_for(self, action: Action, study: str, site: str | None) -> Grant:
        """The grant allowing ``action`` at ``study``/``site`` (None: study-wide), or 403."""
        return self.caller.grant_for(action, study, site)

    def grant_for_any_site(self, action: Action, study: str) -> Grant:
        """A grant allowing ``action`` at ``study`` at one site at least, or 403."""
        for grant in sorted(self.user.grants, key=lambda g: (g.role, g.study, g.site)):
            if grant.study in ("*", study) and permitting_grant(
                    [grant], action, study, grant.site if grant.site != "*" else None):
                return grant
        raise Forbidden(f"{self.user.username} may not {action.value} at {study}")

    def actor(self, grant: Grant) -> Actor:
        """The person as recorded on events, in the role ``grant`` gives them."""
        return self.caller.actor(grant)

    def envelope(self, grant: Grant, reason: Reason | None = None) -> Envelope:
        """The envelope of an event caused by this request."""
        return self.caller.envelope(grant, reason)


_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/auth/token")


def request_id(request: Request) -> str:
    """The request's id (the client's X-Request-ID, else one made here)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = str(uuid.uuid4())
    return str(rid)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The person behind the request's bearer token (401 without a live one).

    A token and person this process checked within the sessions' ``touch_every`` are taken
    as they are, on the event loop; otherwise both are read again, in a worker thread.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required (POST /v1/auth/token)")
    return await principal_of_token(request, credentials.credentials)


async def principal_of_token(request: Request, token: str) -> Principal:
    """The person behind a session token however it came (a bearer header, the console's
    cookie); 401 without a live session."""
    runtime: Runtime = request.app.state.runtime
    signed_in = _recently_signed_in(runtime, token)
    if signed_in is None:
        # One thread hop and round trip for all the requests bearing the token just now.
        signed_in = await _SIGNING_IN.run((id(runtime), token),
                                          lambda: run_in_threadpool(_signed_in, runtime, token))
    session, user = signed_in
    if not user.can_sign_in():
        raise Unauthenticated(f"{user.username} may not sign in")
    request.state.person = user.username
    request.state.client = session.client
    return Principal(user, session.client, request_id(request))


def _recently_signed_in(runtime: Runtime, token: str) -> tuple[Session, User] | None:
    """The session of ``token`` and its person as this process checked them within the
    sessions' ``touch_every``, else None."""
    sessions = runtime.sessions()
    session = sessions.cached(token)
    if session is None:
        return None
    user = runtime.directory().recent_user(session.username,
                                           sessions.touch_every.total_seconds())
    return None if user is None else (session, user)


def _signed_in(runtime: Runtime, token: str) -> tuple[Session, User]:
    """The live session of ``token`` and its person, read from the database."""
    sessions = runtime.sessions()
    with runtime.pool().connection() as conn:
        session = sessions.resolve(conn, token)
    if session is None:
        raise Unauthenticated("the token is unknown, expired, idle too long or signed out")
    try:
        # Read again as often as the session is: a change made by another process (a role
        # revoked, an account locked) applies within the same bound as a sign-out there.
        user = runtime.directory().user(session.username,
                                        max_age=sessions.touch_every.total_seconds())
    except NotFound:
        raise Unauthenticated("the token's user no longer exists") from None
    return session, user


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
