"""Re-authentication of an e-signature's signer (Part 11 11.200): the directory service
checks the password, and the second factor when the signer's is asked for, as a sign-in."""

from __future__ import annotations

from collections.abc import Callable

from application.people import People
from domain.envelope import Envelope


class PeopleReauthenticator:
    """The trial service's port to the directory service: every attempt is recorded and
    counts towards the account's lock-out and rate limits like any other sign-in."""

    def __init__(self, people: Callable[[], People]) -> None:
        # A callable: the directory is opened only when someone signs.
        self._people = people

    def reauthenticate(self, username: str, password: str, totp: str | None,
                       envelope: Envelope) -> None:
        """Return if the credentials are ``username``'s; else ``Unauthenticated``."""
        self._people().reauthenticate(username, password, totp, envelope.client,
                                      envelope.request_id)
