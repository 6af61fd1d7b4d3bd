"""What the domain refuses, and why. Every refusal names the field or criterion at fault."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DomainError(Exception):
    """Base class of every refusal by the domain."""


@dataclass(frozen=True)
class Problem:
    """One reason a command is refused: the field at fault and what is wrong with it."""

    field: str
    message: str


class InvalidInput(DomainError):
    """The command's input is invalid; nothing was stored."""

    def __init__(
        self, field: str | None = None, message: str = "", *, problems: Sequence[Problem] = ()
    ) -> None:
        self.problems: list[Problem] = list(problems)
        if field is not None:
            self.problems.insert(0, Problem(field, message))
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


class EligibilityRefused(DomainError):
    """Screening found the subject ineligible; each failed criterion is named."""

    def __init__(self, failures: Sequence[tuple[str, str, str]]):
        # (criterion id, criterion text, reason)
        self.failures = list(failures)
        names = ", ".join(f"{cid} ({text}): {reason}" for cid, text, reason in self.failures)
        super().__init__(f"not eligible: {names}")


class NotFound(DomainError):
    """The study, subject or record does not exist."""


class AlreadyExists(DomainError):
    """The study or subject already exists."""


class Locked(DomainError):
    """The subject (or study) is locked; edits are refused until it is unlocked."""


class InvalidState(DomainError):
    """The command does not apply in the subject's current state."""


class Conflict(DomainError):
    """The write was based on a stale version of the subject (or raced another write)."""


class StaleVersion(Conflict):
    """The client wrote on a version it read earlier, and the subject has moved on since."""


class ConcurrentWrite(Conflict):
    """Another write committed first and the store refused this one, which stored nothing:
    sent again, it may well succeed (unlike a :class:`StaleVersion`). Its words are never
    the database's own (its constraint, the record's internal id and version)."""

    def __init__(self, message: str = "concurrent write, please re-read and retry") -> None:
        super().__init__(message)


class Unauthenticated(DomainError):
    """The caller is not who they say: no valid token, or a re-entered password is wrong."""


class Forbidden(DomainError):
    """The caller's roles do not allow the request."""


class Unverified(DomainError):
    """A stored record fails verification (an event's signature or its version chain): it
    is tampered with, and nothing it says is acted on."""
