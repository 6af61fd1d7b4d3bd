"""Sign-in, people, roles and API clients."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import DIRECT, CurrentPrincipal, Forbidden, Principal, Unauthenticated, _bearer
from api.schemas import (
    PROBLEM_RESPONSES,
    ClientIn,
    ClientOut,
    GrantIn,
    IdentityIn,
    PasswordChangeIn,
    TokenOut,
    TokenRequest,
    UserIn,
    UserOut,
)
from api.writes import runtime_of
from domain.directory import SignInRefused
from domain.envelope import Actor, Envelope
from domain.errors import InvalidInput, NotFound
from domain.permissions import ROLE_ACTIONS, Action
from domain.user import Grant, User
from infra.passwords import (
    WeakPassword,
    check_password,
    hash_password,
    hash_secret,
    new_secret,
)

router = APIRouter(tags=["people"], responses=PROBLEM_RESPONSES)


def self_envelope(user: User, client: str, request_id: str) -> Envelope:
    """The envelope of what a person does to their own account (sign-in, password)."""
    grant = min(user.grants, key=lambda g: (g.role, g.study, g.site), default=None)
    actor = (Actor(user.user_id, user.full_name, grant.role, grant.site) if grant else
             Actor(user.user_id, user.full_name, "system", "*"))
    return Envelope(actor, client, "api", request_id)


def _admin_grant(principal: Principal, study: str | None, site: str | None = None) -> Grant:
    """The grant letting ``principal`` manage people at ``study``/``site`` (None: anywhere).

    Granting a role at every site (``*``) needs an admin of every site.
    """
    if study is not None:
        return principal.grant_for(Action.MANAGE_USERS, study, None if site == "*" else site)
    for grant in sorted(principal.user.grants, key=lambda g: (g.study, g.site)):
        if Action.MANAGE_USERS in ROLE_ACTIONS[grant.role]:
            return grant
    raise Forbidden(f"{principal.user.username} may not manage people")


def _hash(password: str, field: str) -> str:
    try:
        return hash_password(password)
    except WeakPassword as e:
        raise InvalidInput(field, str(e)) from e


def user_out(user: User) -> UserOut:
    """A person as the API shows them."""
    return UserOut(username=user.username, user_id=user.user_id, full_name=user.full_name,
                   active=user.active, locked_out=user.locked_out,
                   identity_verified=user.identity_verified,
                   roles=[GrantIn(role=g.role, study=g.study, site=g.site)
                          for g in sorted(user.grants, key=lambda g: (g.study, g.site, g.role))])


@router.post("/v1/auth/token", response_model=TokenOut,
             responses={401: {"description": "Wrong username or password, or account locked"}})
def issue_token(request: Request, body: TokenRequest) -> TokenOut:
    """Sign in with username and password (and, for an API client, its own credential)."""
    from api.auth import request_id

    runtime = runtime_of(request)
    directory = runtime.directory()
    client = DIRECT
    if body.client_id is not None or body.client_secret is not None:
        try:
            api_client = directory.client(body.client_id or "")
        except NotFound:
            raise Unauthenticated("unknown API client or wrong client secret") from None
        if not api_client.active or not check_password(api_client.secret_hash,
                                                       body.client_secret or ""):
            raise Unauthenticated("unknown API client or wrong client secret")
        client = api_client.client_id
    rid = request_id(request)
    try:
        user = directory.sign_in(body.username, body.password, client, "session", check_password,
                                 lambda u: self_envelope(u, client, rid))
    except SignInRefused:
        raise Unauthenticated("wrong username or password, or the account may not sign "
                              "in") from None
    with runtime.pool().connection() as conn:
        token, session = runtime.sessions().issue(conn, user.username, client)
    return TokenOut(access_token=token, expires_at=session.expires_at,
                    idle_timeout_seconds=int(runtime.sessions().idle_timeout.total_seconds()),
                    username=user.username, full_name=user.full_name, client=client)


@router.delete("/v1/auth/token", status_code=204, response_class=Response)
def sign_out(request: Request, principal: CurrentPrincipal,
             credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
             ) -> Response:
    """End this token's session."""
    runtime = runtime_of(request)
    assert credentials is not None  # the principal was resolved from it
    with runtime.pool().connection() as conn:
        runtime.sessions().end(conn, credentials.credentials)
    return Response(status_code=204)


@router.post("/v1/auth/password", response_model=UserOut)
def change_own_password(request: Request, principal: CurrentPrincipal,
                        body: PasswordChangeIn) -> UserOut:
    """Change your own password (the current one is checked; every session ends)."""
    runtime = runtime_of(request)
    directory = runtime.directory()
    user = principal.user
    envelope = self_envelope(user, principal.client, principal.request_id)
    try:
        directory.sign_in(user.username, body.current_password, principal.client,
                          "password change", check_password, lambda _: envelope)
    except SignInRefused:
        raise Unauthenticated("the current password is wrong") from None
    new_hash = _hash(body.new_password, "new_password")
    changed = directory.on_user(user.username, lambda u: u.change_password(
        new_hash, envelope, directory.clock.now()))
    with runtime.pool().connection() as conn:
        runtime.sessions().end_all(conn, user.username)
    return user_out(changed)


@router.post("/v1/users", status_code=201, response_model=UserOut)
def register_user(request: Request, principal: CurrentPrincipal, body: UserIn) -> UserOut:
    """Register a person with their first roles (an admin of each role's study)."""
    grants = [_admin_grant(principal, g.study, g.site) for g in body.roles] or [
        _admin_grant(principal, None)]
    envelope = principal.envelope(grants[0])

    def first_roles(user: User, now: datetime) -> None:
        if body.identity_verified_by:
            user.verify_identity(body.identity_verified_by, envelope, now)
        for role in body.roles:
            user.grant(role.role, role.study, role.site, envelope, now)

    user = runtime_of(request).directory().register_user(
        body.username, body.full_name, _hash(body.password, "password"), envelope, first_roles)
    return user_out(user)


@router.get("/v1/users", response_model=list[UserOut])
def list_users(request: Request, principal: CurrentPrincipal) -> list[UserOut]:
    """Every person, active or not (admins only)."""
    _admin_grant(principal, None)
    return [user_out(u) for u in runtime_of(request).directory().users()]


@router.post("/v1/users/{username}/roles", response_model=UserOut)
def grant_role(request: Request, principal: CurrentPrincipal, username: str,
               body: GrantIn) -> UserOut:
    """Grant a role at a study and site (never to yourself)."""
    grant = _admin_grant(principal, body.study, body.site)
    _not_yourself(principal, username)
    directory = runtime_of(request).directory()
    envelope = principal.envelope(grant)
    return user_out(directory.on_user(username, lambda u: u.grant(
        body.role, body.study, body.site, envelope, directory.clock.now())))


@router.delete("/v1/users/{username}/roles/{role}/{study}/{site}", response_model=UserOut)
def revoke_role(request: Request, principal: CurrentPrincipal, username: str, role: str,
                study: str, site: str) -> UserOut:
    """Revoke a role at a study and site."""
    grant = _admin_grant(principal, study, site)
    _not_yourself(principal, username)
    directory = runtime_of(request).directory()
    envelope = principal.envelope(grant)
    return user_out(directory.on_user(username, lambda u: u.revoke(
        role, study, site, envelope, directory.clock.now())))


@router.post("/v1/users/{username}/identity", response_model=UserOut)
def verify_identity(request: Request, principal: CurrentPrincipal, username: str,
                    body: IdentityIn) -> UserOut:
    """Record how the person's identity was verified."""
    grant = _admin_grant(principal, None)
    _not_yourself(principal, username)
    directory = runtime_of(request).directory()
    envelope = principal.envelope(grant)
    return user_out(directory.on_user(username, lambda u: u.verify_identity(
        body.method, envelope, directory.clock.now())))


@router.post("/v1/users/{username}/unlock", response_model=UserOut)
def unlock_user(request: Request, principal: CurrentPrincipal, username: str) -> UserOut:
    """Lift a lock-out after failed sign-ins."""
    grant = _admin_grant(principal, None)
    directory = runtime_of(request).directory()
    envelope = principal.envelope(grant)
    return user_out(directory.on_user(username, lambda u: u.unlock(
        envelope, directory.clock.now())))


@router.post("/v1/users/{username}/deactivate", response_model=UserOut)
def deactivate_user(request: Request, principal: CurrentPrincipal, username: str) -> UserOut:
    """Deactivate a person for good (their username is never reused)."""
    grant = _admin_grant(principal, None)
    _not_yourself(principal, username)
    runtime = runtime_of(request)
    directory = runtime.directory()
    envelope = principal.envelope(grant)
    user = directory.on_user(username, lambda u: u.deactivate(envelope, directory.clock.now()))
    with runtime.pool().connection() as conn:
        runtime.sessions().end_all(conn, username)
    return user_out(user)


@router.post("/v1/clients", status_code=201, response_model=ClientOut)
def register_client(request: Request, principal: CurrentPrincipal, body: ClientIn) -> ClientOut:
    """Register an API client; its secret is in this answer and nowhere else."""
    grant = _admin_grant(principal, None)
    secret = new_secret()
    client = runtime_of(request).directory().register_client(
        body.client_id, body.name, hash_secret(secret), principal.envelope(grant))
    return ClientOut(client_id=client.client_id, name=client.name, client_secret=secret)


def _not_yourself(principal: Principal, username: str) -> None:
    if username.casefold() == principal.user.username.casefold():
        raise Forbidden("an admin may not change their own roles or account this way")
