"""People and API clients: who may act, in which role, at which study and site.

A user is never deleted and a username never reused: deactivation is an event, and the
aggregate's id is derived from the username, so registering the same name again is refused.
Password hashes arrive already hashed (Argon2id, by infra); the domain only keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.clock import require_aware
from domain.envelope import ROLES, Envelope
from domain.errors import InvalidInput, InvalidState, Problem

_NAMESPACE = uuid5(NAMESPACE_URL, "https://trialledger.invalid/directory/")

PERSON_ROLES = tuple(r for r in ROLES if r != "system")
ALL = "*"  # a grant's study or site that covers every study or site
MAX_FAILED_LOGINS = 5
PASSWORD_HISTORY = 5  # a new password may match none of this many latest ones (the current too)


def user_uuid(username: str) -> UUID:
    """The aggregate id of a user: derived from the username, so a name is never reused."""
    return uuid5(_NAMESPACE, f"user/{username.casefold()}")


def client_uuid(client_id: str) -> UUID:
    """The aggregate id of an API client."""
    return uuid5(_NAMESPACE, f"client/{client_id.casefold()}")


@dataclass(frozen=True)
class Grant:
    """A role held at one study (or ``*``: every study) and one site (or ``*``: every site)."""

    role: str
    study: str
    site: str

    def covers(self, study: str, site: str | None) -> bool:
        """True if the grant reaches ``study`` and ``site`` (None: a study-wide question)."""
        if self.study not in (ALL, study):
            return False
        return self.site == ALL if site is None else self.site in (ALL, site)


class User(Aggregate):
    """A person who may sign in, with the roles granted to them."""
    TOPIC = "User.v1"

    class Event(Aggregate.Event):
        """Base of user events: each carries the envelope of whoever caused it."""

        envelope: Envelope

    class Created(Event, Aggregate.Created):
        """eventsourcing's generic creation event, never triggered (each creation names
        its own event); declared to give it a stored name, as eventsourcing requires of
        every event class of an aggregate with one."""
        TOPIC = "User.Created.v1"

    class Registered(Event, Aggregate.Created):
        """The person was registered (an admin, or the bootstrap command, vouching for them)."""
        TOPIC = "User.Registered.v1"

        username: str
        full_name: str
        password_hash: str

    class IdentityVerified(Event):
        """The person's identity was verified (Part 11 11.100(b)) by the named method."""
        TOPIC = "User.IdentityVerified.v1"

        method: str

        def apply(self, user: User) -> None:
            user.identity_verified = True

    class RoleGranted(Event):
        """A role at a study and site was granted."""
        TOPIC = "User.RoleGranted.v1"

        role: str
        study: str
        site: str

        def apply(self, user: User) -> None:
            user.grants.add(Grant(self.role, self.study, self.site))

    class RoleRevoked(Event):
        """A role at a study and site was revoked."""
        TOPIC = "User.RoleRevoked.v1"

        role: str
        study: str
        site: str

        def apply(self, user: User) -> None:
            user.grants.discard(Grant(self.role, self.study, self.site))

    class PasswordChanged(Event):
        """The password was changed (the new hash replaces the old)."""
        TOPIC = "User.PasswordChanged.v1"

        password_hash: str

        def apply(self, user: User) -> None:
            user.password_hash = self.password_hash
            user.password_history = [*user.password_history, self.password_hash][
                -PASSWORD_HISTORY:]

    class LoggedIn(Event):
        """The person signed in (or re-authenticated to sign) through ``client``."""
        TOPIC = "User.LoggedIn.v1"

        client: str
        purpose: str

        def apply(self, user: User) -> None:
            user.failed_logins = 0

    class LoginFailed(Event):
        """A sign-in attempt with a wrong password."""
        TOPIC = "User.LoginFailed.v1"

        client: str
        purpose: str

        def apply(self, user: User) -> None:
            user.failed_logins += 1

    class LockedOut(Event):
        """Too many failed sign-ins in a row: no sign-in until an admin unlocks the account."""
        TOPIC = "User.LockedOut.v1"

        def apply(self, user: User) -> None:
            user.locked_out = True

    class Unlocked(Event):
        """An admin unlocked the account."""
        TOPIC = "User.Unlocked.v1"

        def apply(self, user: User) -> None:
            user.locked_out = False
            user.failed_logins = 0

    class Deactivated(Event):
        """The person may no longer sign in; their name stays taken and their history kept."""
        TOPIC = "User.Deactivated.v1"

        def apply(self, user: User) -> None:
            user.active = False

    class TotpSecretIssued(Event):
        """A TOTP secret (RFC 6238) was issued to the person, to confirm with a code from it;
        until then the second factor in force, if any, stays the one before."""
        TOPIC = "User.TotpSecretIssued.v1"

        secret: str

        def apply(self, user: User) -> None:
            user.totp_pending = self.secret

    class TotpEnabled(Event):
        """The person confirmed the issued TOTP secret with a code: it is now asked for."""
        TOPIC = "User.TotpEnabled.v1"

        def apply(self, user: User) -> None:
            user.totp_secret = user.totp_pending
            user.totp_pending = None

    class TotpRemoved(Event):
        """An admin removed the person's second factor (a lost device): they enrol again."""
        TOPIC = "User.TotpRemoved.v1"

        def apply(self, user: User) -> None:
            user.totp_secret = None
            user.totp_pending = None

    def __init__(self, username: str, full_name: str, password_hash: str,
                 envelope: Envelope) -> None:
        self.username = username
        self.full_name = full_name
        self.password_hash = password_hash
        self.password_history = [password_hash]  # the latest PASSWORD_HISTORY hashes
        self.totp_secret: str | None = None
        self.totp_pending: str | None = None
        self.identity_verified = False
        self.grants: set[Grant] = set()
        self.failed_logins = 0
        self.locked_out = False
        self.active = True

    @classmethod
    def register(cls, username: str, full_name: str, password_hash: str, envelope: Envelope,
                 at: datetime) -> User:
        """Register a person under a username never used before."""
        problems = []
        if not username.strip() or username != username.strip() or len(username) > 64:
            problems.append(Problem("username", "must be 1-64 characters without surrounding "
                                                "spaces"))
        if not full_name.strip():
            problems.append(Problem("full_name", "is required (it is the printed name on "
                                                 "signatures)"))
        if problems:
            raise InvalidInput(problems=problems)
        user: User = cls._create(cls.Registered, id=user_uuid(username),
                                 timestamp=require_aware("recorded_at", at), envelope=envelope,
                                 username=username, full_name=full_name.strip(),
                                 password_hash=password_hash)
        return user

    @property
    def user_id(self) -> str:
        """The stable id recorded on every event this person causes."""
        return str(self.id)

    def can_sign_in(self) -> bool:
        """True if the account is active and not locked out."""
        return self.active and not self.locked_out

    def verify_identity(self, method: str, envelope: Envelope, at: datetime) -> None:
        """Record that the person's identity was verified."""
        if not method.strip():
            raise InvalidInput("method", "how the identity was verified is required")
        self.trigger_event(self.IdentityVerified, timestamp=at, envelope=envelope,
                           method=method)

    def grant(self, role: str, study: str, site: str, envelope: Envelope, at: datetime) -> None:
        """Grant ``role`` at ``study`` and ``site``."""
        self._require_active()
        if role not in PERSON_ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(PERSON_ROLES)}")
        if not study.strip():
            raise InvalidInput("study", "is required")
        if not site.strip():
            raise InvalidInput("site", "is required")
        if Grant(role, study, site) in self.grants:
            raise InvalidState(f"{self.username} already holds {role} at {study}/{site}")
        self.trigger_event(self.RoleGranted, timestamp=at, envelope=envelope, role=role,
                           study=study, site=site)

    def revoke(self, role: str, study: str, site: str, envelope: Envelope, at: datetime) -> None:
        """Revoke ``role`` at ``study`` and ``site``."""
        if Grant(role, study, site) not in self.grants:
            raise InvalidState(f"{self.username} does not hold {role} at {study}/{site}")
        self.trigger_event(self.RoleRevoked, timestamp=at, envelope=envelope, role=role,
                           study=study, site=site)

    def change_password(self, password_hash: str, envelope: Envelope, at: datetime) -> None:
        """Replace the password hash."""
        self._require_active()
        self.trigger_event(self.PasswordChanged, timestamp=at, envelope=envelope,
                           password_hash=password_hash)

    def logged_in(self, client: str, purpose: str, envelope: Envelope, at: datetime) -> None:
        """Record a successful sign-in (``purpose``: a session, or an e-signature)."""
        if not self.can_sign_in():
            raise InvalidState(f"{self.username} may not sign in")
        self.trigger_event(self.LoggedIn, timestamp=at, envelope=envelope, client=client,
                           purpose=purpose)

    def login_failed(self, client: str, purpose: str, envelope: Envelope, at: datetime) -> None:
        """Record a failed sign-in; the fifth in a row locks the account out."""
        self.trigger_event(self.LoginFailed, timestamp=at, envelope=envelope, client=client,
                           purpose=purpose)
        if self.failed_logins >= MAX_FAILED_LOGINS and not self.locked_out:
            self.trigger_event(self.LockedOut, timestamp=at, envelope=envelope)

    def issue_totp_secret(self, secret: str, envelope: Envelope, at: datetime) -> None:
        """Record a new TOTP secret, awaiting confirmation by a code."""
        self._require_active()
        self.trigger_event(self.TotpSecretIssued, timestamp=at, envelope=envelope,
                           secret=secret)

    def enable_totp(self, envelope: Envelope, at: datetime) -> None:
        """Put the issued TOTP secret in force (the caller has checked a code from it)."""
        if self.totp_pending is None:
            raise InvalidState(f"{self.username} has no TOTP secret awaiting confirmation")
        self.trigger_event(self.TotpEnabled, timestamp=at, envelope=envelope)

    def remove_totp(self, envelope: Envelope, at: datetime) -> None:
        """Remove the second factor (and any secret awaiting confirmation)."""
        if self.totp_secret is None and self.totp_pending is None:
            raise InvalidState(f"{self.username} has no second factor")
        self.trigger_event(self.TotpRemoved, timestamp=at, envelope=envelope)

    def unlock(self, envelope: Envelope, at: datetime) -> None:
        """Lift a lock-out."""
        if not self.locked_out:
            raise InvalidState(f"{self.username} is not locked out")
        self.trigger_event(self.Unlocked, timestamp=at, envelope=envelope)

    def deactivate(self, envelope: Envelope, at: datetime) -> None:
        """Deactivate the account for good."""
        self._require_active()
        self.trigger_event(self.Deactivated, timestamp=at, envelope=envelope)

    def _require_active(self) -> None:
        if not self.active:
            raise InvalidState(f"{self.username} is deactivated")


class ApiClient(Aggregate):
    """An application (e.g. the data-entry app) that transports requests for named people.

    Its credential identifies the transport, never a person: it cannot sign anything.
    """
    TOPIC = "ApiClient.v1"

    class Event(Aggregate.Event):
        """Base of client events."""

        envelope: Envelope

    class Created(Event, Aggregate.Created):
        """eventsourcing's generic creation event, never triggered (each creation names
        its own event); declared to give it a stored name, as eventsourcing requires of
        every event class of an aggregate with one."""
        TOPIC = "ApiClient.Created.v1"

    class Registered(Event, Aggregate.Created):
        """The client was registered with the hash of its secret."""
        TOPIC = "ApiClient.Registered.v1"

        client_id: str
        name: str
        secret_hash: str

    class Revoked(Event):
        """The client's credential no longer works."""
        TOPIC = "ApiClient.Revoked.v1"

        def apply(self, client: ApiClient) -> None:
            client.active = False

    def __init__(self, client_id: str, name: str, secret_hash: str, envelope: Envelope) -> None:
        self.client_id = client_id
        self.name = name
        self.secret_hash = secret_hash
        self.active = True

    @classmethod
    def register(cls, client_id: str, name: str, secret_hash: str, envelope: Envelope,
                 at: datetime) -> ApiClient:
        """Register an API client."""
        if not client_id.strip() or len(client_id) > 64:
            raise InvalidInput("client_id", "must be 1-64 characters")
        client: ApiClient = cls._create(cls.Registered, id=client_uuid(client_id),
                                        timestamp=require_aware("recorded_at", at),
                                        envelope=envelope, client_id=client_id,
                                        name=name or client_id, secret_hash=secret_hash)
        return client

    def revoke(self, envelope: Envelope, at: datetime) -> None:
        """Revoke the client's credential."""
        if not self.active:
            raise InvalidState(f"client {self.client_id} is already revoked")
        self.trigger_event(self.Revoked, timestamp=at, envelope=envelope)
