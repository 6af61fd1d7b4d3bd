"""The directory service: who may sign in, how, and who may manage whom.

Every rule about people and API clients lives here (or in the domain it calls), for every
caller alike: the HTTP routes and the CLI build a command, call, and map the errors. An
administration command names who runs it (:class:`Admin`); an admin acts only within the
studies and sites of their admin grants (:mod:`domain.admin_scope`), the operator at the
command line everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from application.password_rules import password_problem
from application.second_factor import new_totp_secret, provisioning_uri, totp_matches
from application.sign_in_limits import SignInLimiter, SignInLimits
from domain import admin_scope
from domain.directory import DirectoryApplication, SignInRefused
from domain.envelope import Actor, Envelope
from domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from domain.permissions import EDIT_POINTS
from domain.sign_in_log import anonymous_envelope
from domain.user import ApiClient, Grant, User
from infra.passwords import check_password, hash_password, hash_secret, new_secret


def self_envelope(user: User, client: str, request_id: str) -> Envelope:
    """The envelope of what a person does to their own account (sign-in, password)."""
    grant = min(user.grants, key=lambda g: (g.role, g.study, g.site), default=None)
    actor = (Actor(user.user_id, user.full_name, grant.role, grant.site) if grant else
             Actor(user.user_id, user.full_name, "system", "*"))
    return Envelope(actor, client, "api", request_id)


@dataclass(frozen=True)
class Admin:
    """Who runs an administration command: a signed-in person (within the scope of their
    admin grants) or the deployment's operator at the command line (everywhere)."""

    username: str
    grants: frozenset[Grant] | None  # None: the operator
    envelope_for: Callable[[Grant | None], Envelope] = field(compare=False)

    @classmethod
    def person(cls, user: User, client: str, request_id: str) -> Admin:
        """A signed-in person, acting through ``client``."""
        def envelope(grant: Grant | None) -> Envelope:
            assert grant is not None  # a person acts under one of their grants
            return Envelope(Actor(user.user_id, user.full_name, grant.role, grant.site),
                            client, "api", request_id, EDIT_POINTS.get(grant.role, "site"))
        return cls(user.username, frozenset(user.grants), envelope)

    @classmethod
    def operator(cls, envelope: Envelope) -> Admin:
        """The operator of the deployment (the CLI), recorded under ``envelope``."""
        return cls(envelope.actor.printed_name, None, lambda _: envelope)


@dataclass(frozen=True)
class RegisterUser:
    """Register a person with their first roles (and how their identity was verified)."""

    username: str
    full_name: str
    password: str
    roles: tuple[Grant, ...] = ()
    identity_verified_by: str | None = None


@dataclass(frozen=True)
class GrantRole:
    """Grant a person a role at a study and site."""

    username: str
    grant: Grant


@dataclass(frozen=True)
class RevokeRole:
    """Revoke a role held at a study and site."""

    username: str
    grant: Grant


@dataclass(frozen=True)
class VerifyIdentity:
    """Record how a person's identity was verified."""

    username: str
    method: str


@dataclass(frozen=True)
class UnlockUser:
    """Lift a lock-out after failed sign-ins."""

    username: str


@dataclass(frozen=True)
class DeactivateUser:
    """Deactivate a person for good."""

    username: str


@dataclass(frozen=True)
class RemoveTotp:
    """Remove a person's second factor (a lost device); they enrol again."""

    username: str


@dataclass(frozen=True)
class RegisterClient:
    """Register an API client (deployment-wide: only an admin of every study and site)."""

    client_id: str
    name: str = ""


@dataclass(frozen=True)
class RevokeClient:
    """Revoke an API client's credential (deployment-wide, as its registration)."""

    client_id: str


@dataclass(frozen=True)
class SignIn:
    """A person proving who they are: password, and a TOTP code when theirs is asked for.

    ``purpose``: a session, an e-signature, a password change...; ``address``: where the
    attempt came from (rate limits, the record of unknown usernames).
    """

    username: str
    password: str
    client: str
    request_id: str
    purpose: str = "session"
    totp: str | None = None
    address: str = "unknown"


@dataclass(frozen=True)
class ChangeOwnPassword:
    """A person replacing their own password (proved by the current one)."""

    proof: SignIn
    new_password: str


@dataclass(frozen=True)
class EnrolTotp:
    """Ask for a new TOTP secret (proved by the password, and by the current code if a
    second factor is already in force)."""

    proof: SignIn


@dataclass(frozen=True)
class ConfirmTotp:
    """Put the issued secret in force: the password, and a code from the new secret."""

    proof: SignIn


@dataclass(frozen=True)
class TotpEnrolment:
    """A secret issued to a person: shown once, to put in an authenticator app."""

    secret: str
    otpauth_uri: str


class People:
    """The directory service over the deployment's directory of people and clients."""

    def __init__(self, directory: DirectoryApplication, *,
                 limits: SignInLimits | None = None,
                 totp_roles: frozenset[str] = frozenset(),
                 end_sessions: Callable[[str], None] = lambda _: None,
                 on_refused: Callable[[bool], None] = lambda _: None) -> None:
        self.directory = directory
        self._on_refused = on_refused
        self.totp_roles = totp_roles
        self._limiter = SignInLimiter(limits or SignInLimits())
        self._end_sessions = end_sessions

    # Signing in and one's own account.

    def sign_in(self, command: SignIn) -> User:
        """The person, if the password (and TOTP code, when asked for) are right; every
        attempt is recorded. Raises :class:`Unauthenticated` (or ``TooManyAttempts``)."""
        return self._authenticate(command, lambda user: self._second_factor(user, command.totp))

    def reauthenticate(self, username: str, password: str, totp: str | None, client: str,
                       request_id: str, address: str = "unknown") -> User:
        """Prove again who signs (Part 11 e-signature): password, and TOTP when required."""
        return self.sign_in(SignIn(username, password, client, request_id, "e-signature",
                                   totp, address))

    def change_own_password(self, command: ChangeOwnPassword) -> User:
        """Replace one's own password; every session of the person ends."""
        user = self.sign_in(command.proof)
        self._acceptable_password("new_password", command.new_password, user.username,
                                  user.full_name)
        if any(check_password(h, command.new_password) for h in user.password_history):
            raise InvalidInput("new_password", f"must differ from your last "
                               f"{len(user.password_history)} passwords")
        new_hash = hash_password(command.new_password)
        envelope = self_envelope(user, command.proof.client, command.proof.request_id)
        changed, _ = self.directory.record(user.username, lambda u: u.change_password(
            new_hash, envelope, self.directory.clock.now()))
        self._end_sessions(changed.username)
        return changed

    def enrol_totp(self, command: EnrolTotp) -> TotpEnrolment:
        """Issue a new TOTP secret, to be confirmed with a code (:meth:`confirm_totp`)."""
        user = self._authenticate(command.proof, lambda u: u.totp_secret is None or
                                  totp_matches(u.totp_secret, command.proof.totp))
        secret = new_totp_secret()
        envelope = self_envelope(user, command.proof.client, command.proof.request_id)
        self.directory.record(user.username, lambda u: u.issue_totp_secret(
            secret, envelope, self.directory.clock.now()))
        return TotpEnrolment(secret, provisioning_uri(secret, user.username))

    def confirm_totp(self, command: ConfirmTotp) -> User:
        """Put the issued secret in force, given a code from it."""
        user = self._authenticate(command.proof, lambda u: u.totp_pending is not None and
                                  totp_matches(u.totp_pending, command.proof.totp))
        envelope = self_envelope(user, command.proof.client, command.proof.request_id)
        confirmed, _ = self.directory.record(user.username, lambda u: u.enable_totp(
            envelope, self.directory.clock.now()))
        return confirmed

    def totp_required(self, user: User) -> bool:
        """True if ``user`` must give a TOTP code: they enrolled one, or a role of theirs
        requires one in this deployment."""
        return user.totp_secret is not None or any(g.role in self.totp_roles
                                                    for g in user.grants)

    def authenticate_client(self, client_id: str, secret: str) -> str:
        """The id of the API client whose secret this is (an unknown id costs as long)."""
        try:
            client: ApiClient | None = self.directory.client(client_id)
        except NotFound:
            client = None
        matches = check_password(client.secret_hash if client else None, secret)
        if client is None or not client.active or not matches:
            raise Unauthenticated("unknown API client or wrong client secret")
        return client.client_id

    # Administration.

    def register_user(self, by: Admin, command: RegisterUser) -> User:
        """Register a person (their roles all within ``by``'s scope; none: deployment-wide
        admins only); the password must meet :mod:`application.password_rules`."""
        if by.grants is None:
            grant: Grant | None = None
        elif command.roles:
            # Every role must be within scope; the first one's admin grant signs for all.
            over = [admin_scope.grant_over_role(by.grants, by.username, g)
                    for g in command.roles]
            grant = over[0]
        else:
            grant = self._deployment_wide(by, "register a person without a role")
        self._acceptable_password("password", command.password, command.username,
                                  command.full_name)
        envelope = by.envelope_for(grant)

        def first_roles(user: User, now: datetime) -> None:
            if command.identity_verified_by:
                user.verify_identity(command.identity_verified_by, envelope, now)
            for role in command.roles:
                user.grant(role.role, role.study, role.site, envelope, now)

        return self.directory.register_user(command.username, command.full_name,
                                            hash_password(command.password), envelope,
                                            first_roles)

    def users(self, by: Admin) -> list[User]:
        """The people ``by`` manages: everyone for a deployment-wide admin, else those
        holding a role within ``by``'s studies and sites."""
        if by.grants is None:
            return self.directory.users()
        admin_scope.any_admin_grant(by.grants, by.username)
        grants = by.grants
        return [u for u in self.directory.users() if admin_scope.within_scope(grants, u.grants)]

    def grant_role(self, by: Admin, command: GrantRole) -> User:
        """Grant a role within ``by``'s scope, to a person already within it (never
        oneself)."""
        target = self._other_person(by, command.username)
        grant = None
        if by.grants is not None:
            grant = admin_scope.grant_over_role(by.grants, by.username, command.grant)
            admin_scope.grant_over_person(by.grants, by.username, target.grants,
                                          whole_account=False)
        g = command.grant
        return self._on(by, grant, command.username,
                        lambda u, e: u.grant(g.role, g.study, g.site, e, self._now()))

    def revoke_role(self, by: Admin, command: RevokeRole) -> User:
        """Revoke a role within ``by``'s scope (never one's own)."""
        self._other_person(by, command.username)
        grant = None if by.grants is None else admin_scope.grant_over_role(
            by.grants, by.username, command.grant)
        g = command.grant
        return self._on(by, grant, command.username,
                        lambda u, e: u.revoke(g.role, g.study, g.site, e, self._now()))

    def verify_identity(self, by: Admin, command: VerifyIdentity) -> User:
        """Record how the identity of a person wholly within ``by``'s scope was verified."""
        grant = self._over_whole_account(by, command.username)
        return self._on(by, grant, command.username,
                        lambda u, e: u.verify_identity(command.method, e, self._now()))

    def unlock_user(self, by: Admin, command: UnlockUser) -> User:
        """Lift the lock-out of a person wholly within ``by``'s scope."""
        grant = self._over_whole_account(by, command.username, yourself=True)
        return self._on(by, grant, command.username, lambda u, e: u.unlock(e, self._now()))

    def deactivate_user(self, by: Admin, command: DeactivateUser) -> User:
        """Deactivate a person wholly within ``by``'s scope; their sessions end."""
        grant = self._over_whole_account(by, command.username)
        user = self._on(by, grant, command.username,
                        lambda u, e: u.deactivate(e, self._now()))
        self._end_sessions(user.username)
        return user

    def remove_totp(self, by: Admin, command: RemoveTotp) -> User:
        """Remove the second factor of a person wholly within ``by``'s scope."""
        grant = self._over_whole_account(by, command.username)
        return self._on(by, grant, command.username,
                        lambda u, e: u.remove_totp(e, self._now()))

    def register_client(self, by: Admin, command: RegisterClient) -> tuple[ApiClient, str]:
        """Register an API client; returns it and its secret (shown once, kept as a hash)."""
        grant = None if by.grants is None else self._deployment_wide(
            by, "register an API client (it serves the whole deployment)")
        secret = new_secret()
        client = self.directory.register_client(command.client_id, command.name,
                                                hash_secret(secret), by.envelope_for(grant))
        return client, secret

    def clients(self, by: Admin) -> list[ApiClient]:
        """Every API client, revoked or not (for an admin of every study and site)."""
        if by.grants is not None:
            self._deployment_wide(by, "list the API clients")
        return self.directory.clients()

    def revoke_client(self, by: Admin, command: RevokeClient) -> ApiClient:
        """Revoke an API client: its credential signs in no more."""
        grant = None if by.grants is None else self._deployment_wide(
            by, "revoke an API client")
        return self.directory.revoke_client(command.client_id, by.envelope_for(grant))

    # The rules behind the commands.

    def _authenticate(self, command: SignIn, second_factor: Callable[[User], bool]) -> User:
        """Check and record one attempt (rate-limited per account and per address)."""
        self._limiter.attempt(command.username, command.address)
        asked: list[str] = []

        def second(user: User) -> bool:
            # Only reached once the password is right and the account may sign in.
            ok = second_factor(user)
            if not ok:
                asked.append("enrol" if self.totp_required(user) and user.totp_secret is None
                              and command.purpose == "session" else "code")
            return ok

        try:
            return self.directory.sign_in(
                command.username, command.password, command.client, command.purpose,
                check_password, lambda u: self_envelope(u, command.client, command.request_id),
                second_factor=second, address=command.address,
                unknown_envelope=anonymous_envelope(command.client, command.request_id))
        except SignInRefused as refused:
            self._on_refused(refused.locked_out)
            if asked == ["enrol"]:
                raise Unauthenticated("a second factor is required for your role: enrol one "
                                      "(POST /v1/auth/totp), then sign in with its code "
                                      "(totp)") from None
            if asked and not command.totp:
                raise Unauthenticated("a TOTP code is required (totp)") from None
            raise Unauthenticated("wrong username, password or TOTP code, or the account may "
                                  "not sign in") from None

    def _second_factor(self, user: User, code: str | None) -> bool:
        # The caller's code, when one is required; a required but missing enrolment fails.
        return not self.totp_required(user) or (
            user.totp_secret is not None and totp_matches(user.totp_secret, code))

    def _acceptable_password(self, field_name: str, password: str, username: str,
                             full_name: str) -> None:
        problem = password_problem(password, (username, full_name))
        if problem is not None:
            raise InvalidInput(field_name, problem)

    def _deployment_wide(self, by: Admin, what: str) -> Grant:
        assert by.grants is not None
        grant = admin_scope.deployment_wide(by.grants)
        if grant is None:
            raise Forbidden(f"only an admin of every study and site (*) may {what}")
        return grant

    def _other_person(self, by: Admin, username: str) -> User:
        if by.grants is not None and username.casefold() == by.username.casefold():
            raise Forbidden("an admin may not change their own roles or account this way")
        return self.directory.user(username)

    def _over_whole_account(self, by: Admin, username: str, *,
                            yourself: bool = False) -> Grant | None:
        target = self.directory.user(username) if yourself else self._other_person(
            by, username)
        if by.grants is None:
            return None
        return admin_scope.grant_over_person(by.grants, by.username, target.grants,
                                             whole_account=True)

    def _on(self, by: Admin, grant: Grant | None, username: str,
            command: Callable[[User, Envelope], None]) -> User:
        envelope = by.envelope_for(grant)
        user, _ = self.directory.record(username, lambda u: command(u, envelope))
        return user

    def _now(self) -> datetime:
        return self.directory.clock.now()
