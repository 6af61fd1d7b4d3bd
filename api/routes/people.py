"""Sign-in, people, roles and API clients: parsed here, decided by the directory service
(:mod:`application.people`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import DIRECT, CurrentPrincipal, Principal, _bearer, request_id
from api.schemas import (
    PROBLEM_RESPONSES,
    TOO_MANY,
    ClientIn,
    ClientOut,
    GrantIn,
    IdentityIn,
    PasswordChangeIn,
    TokenOut,
    TokenRequest,
    TotpIn,
    TotpOut,
    UserIn,
    UserOut,
)
from api.writes import runtime_of
from application.people import (
    Admin,
    ChangeOwnPassword,
    ConfirmTotp,
    DeactivateUser,
    EnrolTotp,
    GrantRole,
    People,
    RegisterClient,
    RegisterUser,
    RemoveTotp,
    RevokeRole,
    SignIn,
    UnlockUser,
    VerifyIdentity,
)
from domain.user import Grant, User

router = APIRouter(tags=["people"], responses=PROBLEM_RESPONSES)



def user_out(user: User) -> UserOut:
    """A person as the API shows them."""
    return UserOut(username=user.username, user_id=user.user_id, full_name=user.full_name,
                   active=user.active, locked_out=user.locked_out,
                   identity_verified=user.identity_verified,
                   totp_enabled=user.totp_secret is not None,
                   roles=[GrantIn(role=g.role, study=g.study, site=g.site)
                          for g in sorted(user.grants, key=lambda g: (g.study, g.site, g.role))])


def address_of(request: Request) -> str:
    """The network address a request came from (rate limits, the sign-in record)."""
    return request.client.host if request.client is not None else "unknown"


def _people(request: Request) -> People:
    return runtime_of(request).people()


def _admin(principal: Principal) -> Admin:
    return Admin.person(principal.user, principal.client, principal.request_id)


def _proof(request: Request, client: str, username: str, password: str, totp: str | None,
           purpose: str) -> SignIn:
    return SignIn(username, password, client, request_id(request), purpose, totp,
                  address_of(request))


@router.post("/v1/auth/token", response_model=TokenOut,
             responses={401: {**PROBLEM_RESPONSES[401], "description": "Wrong username, "
                              "password or TOTP code, or account locked"}, **TOO_MANY})
def issue_token(request: Request, body: TokenRequest) -> TokenOut:
    """Sign in with username and password (a TOTP code too when yours is asked for; for an
    API client, its own credential)."""
    runtime = runtime_of(request)
    people = runtime.people()
    client = DIRECT
    if body.client_id is not None or body.client_secret is not None:
        client = people.authenticate_client(body.client_id or "", body.client_secret or "")
    user = people.sign_in(_proof(request, client, body.username, body.password, body.totp,
                                 "session"))
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


@router.post("/v1/auth/password", response_model=UserOut, responses=TOO_MANY)
def change_own_password(request: Request, principal: CurrentPrincipal,
                        body: PasswordChangeIn) -> UserOut:
    """Change your own password (the current one is checked, and your TOTP code when yours
    is asked for; the new one must meet the password rules and differ from your last 5;
    every session ends)."""
    proof = _proof(request, principal.client, principal.user.username,
                   body.current_password, body.totp, "password change")
    return user_out(_people(request).change_own_password(
        ChangeOwnPassword(proof, body.new_password)))


@router.post("/v1/auth/totp", response_model=TotpOut, status_code=201, responses=TOO_MANY)
def enrol_totp(request: Request, body: TotpIn) -> TotpOut:
    """Ask for a TOTP secret (RFC 6238), shown once: your password proves who you are (and,
    to replace a second factor in force, its code). Confirm it with a code from your
    authenticator app (POST /v1/auth/totp/confirm)."""
    enrolment = _people(request).enrol_totp(EnrolTotp(_proof(
        request, DIRECT, body.username, body.password, body.totp, "totp enrolment")))
    return TotpOut(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)


@router.post("/v1/auth/totp/confirm", response_model=UserOut, responses=TOO_MANY)
def confirm_totp(request: Request, body: TotpIn) -> UserOut:
    """Put the issued TOTP secret in force with a code from it (``totp``): from then on,
    sign-ins and e-signatures ask for a code."""
    return user_out(_people(request).confirm_totp(ConfirmTotp(_proof(
        request, DIRECT, body.username, body.password, body.totp, "totp confirmation"))))


@router.post("/v1/users", status_code=201, response_model=UserOut)
def register_user(request: Request, principal: CurrentPrincipal, body: UserIn) -> UserOut:
    """Register a person with their first roles (by an admin of each role's study and
    site; without roles, by an admin of every study and site)."""
    return user_out(_people(request).register_user(_admin(principal), RegisterUser(
        body.username, body.full_name, body.password,
        tuple(Grant(g.role, g.study, g.site) for g in body.roles),
        body.identity_verified_by)))


@router.get("/v1/users", response_model=list[UserOut])
def list_users(request: Request, principal: CurrentPrincipal) -> list[UserOut]:
    """The people you administer, active or not: everyone for an admin of every study and
    site, else those holding a role at your studies and sites (admins only)."""
    return [user_out(u) for u in _people(request).users(_admin(principal))]


@router.post("/v1/users/{username}/roles", response_model=UserOut)
def grant_role(request: Request, principal: CurrentPrincipal, username: str,
               body: GrantIn) -> UserOut:
    """Grant a role at a study and site you administer, to a person holding a role there
    (never to yourself)."""
    return user_out(_people(request).grant_role(_admin(principal), GrantRole(
        username, Grant(body.role, body.study, body.site))))


@router.delete("/v1/users/{username}/roles/{role}/{study}/{site}", response_model=UserOut)
def revoke_role(request: Request, principal: CurrentPrincipal, username: str, role: str,
                study: str, site: str) -> UserOut:
    """Revoke a role at a study and site you administer."""
    return user_out(_people(request).revoke_role(_admin(principal), RevokeRole(
        username, Grant(role, study, site))))


@router.post("/v1/users/{username}/identity", response_model=UserOut)
def verify_identity(request: Request, principal: CurrentPrincipal, username: str,
                    body: IdentityIn) -> UserOut:
    """Record how the person's identity was verified (every role of theirs must be at
    studies and sites you administer)."""
    return user_out(_people(request).verify_identity(_admin(principal), VerifyIdentity(
        username, body.method)))


@router.post("/v1/users/{username}/unlock", response_model=UserOut)
def unlock_user(request: Request, principal: CurrentPrincipal, username: str) -> UserOut:
    """Lift a lock-out after failed sign-ins (every role of theirs within your scope)."""
    return user_out(_people(request).unlock_user(_admin(principal), UnlockUser(username)))


@router.post("/v1/users/{username}/deactivate", response_model=UserOut)
def deactivate_user(request: Request, principal: CurrentPrincipal, username: str) -> UserOut:
    """Deactivate a person for good (their username is never reused; every role of theirs
    within your scope)."""
    return user_out(_people(request).deactivate_user(_admin(principal),
                                                     DeactivateUser(username)))


@router.delete("/v1/users/{username}/totp", response_model=UserOut)
def remove_totp(request: Request, principal: CurrentPrincipal, username: str) -> UserOut:
    """Remove a person's second factor (a lost device): they enrol again."""
    return user_out(_people(request).remove_totp(_admin(principal), RemoveTotp(username)))


@router.post("/v1/clients", status_code=201, response_model=ClientOut)
def register_client(request: Request, principal: CurrentPrincipal, body: ClientIn) -> ClientOut:
    """Register an API client (an admin of every study and site); its secret is in this
    answer and nowhere else."""
    client, secret = _people(request).register_client(
        _admin(principal), RegisterClient(body.client_id, body.name))
    return ClientOut(client_id=client.client_id, name=client.name, client_secret=secret)
