"""Re-authentication of an e-signature's signer against the directory (Part 11 11.200)."""

from __future__ import annotations

from collections.abc import Callable

from domain.directory import DirectoryApplication, SignInRefused
from domain.envelope import Envelope
from domain.errors import Unauthenticated
from infra.passwords import check_password


class DirectoryReauthenticator:
    """Checks the signer's password as a sign-in does, recording the attempt (a failure
    counts towards the account's lock-out like any other)."""

    def __init__(self, directory: Callable[[], DirectoryApplication]) -> None:
        # A callable: the directory is opened only when someone signs.
        self._directory = directory

    def reauthenticate(self, username: str, password: str, envelope: Envelope) -> None:
        """Return if ``password`` is ``username``'s; else :class:`Unauthenticated`."""
        try:
            self._directory().sign_in(username, password, envelope.client, "e-signature",
                                      check_password, lambda _: envelope)
        except SignInRefused:
            raise Unauthenticated("the signature's username or password is wrong") from None
