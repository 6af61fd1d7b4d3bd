"""The deployment's directory of people and API clients: one eventsourcing Application.

Users span studies (a monitor may hold roles at several), so they live beside the studies'
applications rather than inside one. Password checking is handed in (``PasswordCheck``): the
domain keeps hashes but does not hash.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import OriginatorIDError, OriginatorVersionError
from eventsourcing.persistence import (
    IntegrityError,
    Notification,
)
from eventsourcing.utils import EnvType

from domain.clock import Clock
from domain.envelope import Envelope
from domain.errors import AlreadyExists, ConcurrentWrite, Conflict, NotFound, Unverified
from domain.group_commit import RECEIPTS
from domain.sign_in_log import SignInLog, anonymous_envelope, sign_in_log_uuid
from domain.signed_application import MapperFactory, SignedApplication
from domain.topics import stored_names
from domain.user import ApiClient, User, client_uuid, user_uuid

# (stored hash, offered password) -> matches; a stored hash of None (no such person) must
# cost as much as a real check and answer False.
PasswordCheck = Callable[[str | None, str], bool]
_T = TypeVar("_T")
_A = TypeVar("_A", User, SignInLog)
_SAVE_ATTEMPTS = 20  # per record, against other processes writing the same account


class SignInRefused(Exception):
    """Wrong username or password, or an account that may not sign in (never says which to
    the person; ``locked_out`` tells the operators' counters that this attempt locked the
    account)."""

    def __init__(self, locked_out: bool = False) -> None:
        super().__init__()
        self.locked_out = locked_out


class DirectoryApplication(SignedApplication):
    """People and clients: registration, roles, passwords, sign-ins and lock-outs."""

    name = "Directory"

    def __init__(self, env: EnvType | None = None, clock: Clock | None = None,
                 mapper_factory: MapperFactory | None = None) -> None:
        # People as last read, with when (monotonic): see ``user(max_age=...)``.
        self._recent: dict[str, tuple[User, float]] = {}
        self._recent_lock = threading.Lock()
        # Sign-in records are written one at a time per account (and for the unknown-user
        # log) within this process: concurrent attempts would otherwise mostly collide.
        self._account_locks: dict[str, threading.Lock] = {}
        self._log_lock = threading.Lock()
        super().__init__(env, clock, mapper_factory)

    def register_user(self, username: str, full_name: str, password_hash: str,
                      envelope: Envelope,
                      then: Callable[[User, datetime], None] | None = None) -> User:
        """Register a person (and run ``then``: first roles...), all in one transaction.

        A username once used is refused forever.
        """
        if self._exists(user_uuid(username)):
            raise AlreadyExists(f"username {username!r} is taken (usernames are never reused)")
        now = self.clock.now()
        user = User.register(username, full_name, password_hash, envelope, now)
        if then is not None:
            then(user, now)
        self._save(user)
        return user

    def user(self, username: str, *, to_change: bool = False,
             max_age: float | None = None) -> User:
        """A person by username.

        Unless ``to_change``, the cached instance itself is returned (read it, never mutate
        it), and while another thread is bringing it up to date it is taken as it is rather
        than queued behind that thread: every request reads its person. With ``max_age``
        (seconds), the person as this process last read or wrote them is good enough if
        that was no longer ago; what this process changes applies at once.
        """
        if max_age is not None and not to_change:
            recent = self.recent_user(username, max_age)
            if recent is not None:
                return recent
        try:
            user: User = self.repository.get(user_uuid(username),
                                             deepcopy_from_cache=to_change,
                                             fastforward_skipping=not to_change)
        except AggregateNotFoundError:
            raise NotFound(f"no user {username!r}") from None
        except (Unverified, OriginatorVersionError, OriginatorIDError) as e:
            # A record altered in the database (a forged grant, an event removed): nothing
            # it says is believed, the person is refused as a whole.
            raise Unverified(f"the directory's record of {username!r} fails verification, "
                             f"so it is refused: {e}") from e
        if not to_change:
            with self._recent_lock:
                self._recent[username.casefold()] = (user, time.monotonic())
        return user

    def recent_user(self, username: str, max_age: float) -> User | None:
        """The person as this process read or wrote them at most ``max_age`` seconds ago
        (without asking the store), else None. Read it, never mutate it."""
        with self._recent_lock:
            recent = self._recent.get(username.casefold())
        if recent is not None and time.monotonic() - recent[1] < max_age:
            return recent[0]
        return None

    def users(self) -> list[User]:
        """Every registered person (active or not), by username."""
        ids = {UUID(str(n.originator_id)) for n in self._registrations(User.Registered)}
        return sorted((self.repository.get(i) for i in ids), key=lambda u: u.username)

    def sign_in(self, username: str, password: str, client: str, purpose: str,
                check: PasswordCheck, envelope_for: Callable[[User], Envelope], *,
                second_factor: Callable[[User], bool] | None = None,
                unknown_envelope: Envelope | None = None, address: str = "") -> User:
        """Check a password (and a second factor); record the success or the failure (and a
        lock-out) either way, whatever other attempts run at the same moment.

        The password is checked (the slow part) before the account's lock is taken, so
        attempts on one account run their hashes in parallel and their records in turn; the
        decision is made on the account as it stands when recording, so a locked or
        deactivated account refuses even the right password. An unknown username costs the
        same check (``check`` with None) and is recorded on the day's :class:`SignInLog`.
        Raises :class:`SignInRefused` without saying whether the name, the password, the
        second factor or the account's state was at fault.
        """
        try:
            seen: User | None = self.user(username)
        except NotFound:
            seen = None
        matches = check(seen.password_hash if seen is not None else None, password)
        if seen is None:
            self.record_unknown_user(username, client, purpose, address, unknown_envelope
                                     or anonymous_envelope(client, "sign-in"))
            raise SignInRefused()

        locked: list[bool] = []

        def attempt(user: User) -> bool:
            was_locked = user.locked_out
            ok = matches if user.password_hash == seen.password_hash else check(
                user.password_hash, password)  # changed meanwhile: check the new one
            ok = ok and user.can_sign_in() and (second_factor is None or second_factor(user))
            if ok:
                user.logged_in(client, purpose, envelope_for(user), self.clock.now())
            else:
                user.login_failed(client, purpose, envelope_for(user), self.clock.now())
            locked[:] = [user.locked_out and not was_locked]
            return ok

        user, signed_in = self.record(username, attempt)
        if not signed_in:
            raise SignInRefused(locked_out=locked[-1])
        return user

    def record(self, username: str, command: Callable[[User], _T]) -> tuple[User, _T]:
        """Load a person, run ``command`` on them and save, again on a fresh copy if another
        writer got there first (one at a time per account in this process, so only other
        processes can cause a retry). Returns the person saved and what ``command`` returned.
        """
        with self._account_lock(username):
            return self._retrying(lambda: self.user(username, to_change=True), command)

    def record_unknown_user(self, username: str, client: str, purpose: str, address: str,
                            envelope: Envelope) -> None:
        """Record a sign-in attempt for a username no one holds (never the password)."""
        now = self.clock.now()
        day = now.astimezone(UTC).date()

        def load() -> SignInLog:
            try:
                log: SignInLog = self.repository.get(sign_in_log_uuid(day))
            except AggregateNotFoundError:
                return SignInLog.open(day, envelope, now)
            return log

        with self._log_lock:
            self._retrying(load, lambda log: log.unknown_user(
                username, client, purpose, address, envelope, self.clock.now()))

    def _retrying(self, load: Callable[[], _A], command: Callable[[_A], _T]) -> tuple[_A, _T]:
        for attempt in range(_SAVE_ATTEMPTS):
            aggregate = load()
            result = command(aggregate)
            try:
                self._save(aggregate)
            except Conflict:
                if attempt == _SAVE_ATTEMPTS - 1:
                    raise
                # Another process wrote the same aggregate: back off a little, at random, so
                # two busy processes do not keep colliding.
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            return aggregate, result
        raise AssertionError("unreachable")

    def _account_lock(self, username: str) -> threading.Lock:
        with self._recent_lock:
            return self._account_locks.setdefault(username.casefold(), threading.Lock())

    def register_client(self, client_id: str, name: str, secret_hash: str,
                        envelope: Envelope) -> ApiClient:
        """Register an API client."""
        if self._exists(client_uuid(client_id)):
            raise AlreadyExists(f"client {client_id!r} exists")
        client = ApiClient.register(client_id, name, secret_hash, envelope, self.clock.now())
        self._save(client)
        return client

    def clients(self) -> list[ApiClient]:
        """Every registered API client (revoked or not), by id."""
        ids = {UUID(str(n.originator_id)) for n in self._registrations(ApiClient.Registered)}
        return sorted((self.repository.get(i) for i in ids), key=lambda c: c.client_id)

    def revoke_client(self, client_id: str, envelope: Envelope) -> ApiClient:
        """Revoke an API client's credential."""
        client = self.client(client_id)
        client.revoke(envelope, self.clock.now())
        self._save(client)
        return client

    def client(self, client_id: str) -> ApiClient:
        """An API client by id."""
        try:
            client: ApiClient = self.repository.get(client_uuid(client_id))
        except AggregateNotFoundError:
            raise NotFound(f"no client {client_id!r}") from None
        return client

    def _registrations(self, event_class: type) -> list[Notification]:
        return list(self.recorder.select_notifications(1, 1_000_000,
                                                       topics=stored_names(event_class)))

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, lte=1))

    def _save(self, *aggregates: User | ApiClient | SignInLog) -> None:
        try:
            # With the request's receipts (see domain.group_commit.RECEIPTS): a keyed
            # administration request is never run twice either.
            self.save(*aggregates, receipts=RECEIPTS.get())
        except IntegrityError as e:
            raise ConcurrentWrite("concurrent write, please retry") from e
        finally:
            with self._recent_lock:
                for aggregate in aggregates:
                    if isinstance(aggregate, User):
                        self._recent.pop(aggregate.username.casefold(), None)
