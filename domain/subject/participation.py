"""End of participation and locks: withdrawal, completion, locking and unlocking the
casebook."""

from __future__ import annotations

from datetime import datetime

from domain import limits
from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState
from domain.subject.events import Completed, SubjectLocked, SubjectUnlocked, Withdrawn
from domain.subject.state import SubjectState


class Participation(SubjectState):
    """The subject's commands ending its participation and locking its casebook."""

    def withdraw(self, observed_at: datetime, reason: str, envelope: Envelope,
                 at: datetime) -> None:
        """The subject withdrew (or was withdrawn) at ``observed_at``."""
        envelope = self._check_editable(envelope)
        self._require_status("enrolled")
        if not reason.strip():
            raise InvalidInput("withdrawal_reason", "is required")
        limits.check_text("withdrawal_reason", reason, limits.WITHDRAWAL_REASON)
        observed = self._valid_time(observed_at, at)
        self.trigger_event(Withdrawn, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, observed_at=observed, withdrawal_reason=reason)

    def complete(self, observed_at: datetime, envelope: Envelope, at: datetime) -> None:
        """The subject completed the study at ``observed_at``."""
        envelope = self._check_editable(envelope)
        self._require_status("enrolled")
        observed = self._valid_time(observed_at, at)
        self.trigger_event(Completed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, observed_at=observed)

    def lock(self, envelope: Envelope, at: datetime) -> None:
        """Lock the casebook (reason required)."""
        envelope.require_reason()
        if self.locked:
            raise InvalidState("subject is already locked")
        self.trigger_event(SubjectLocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)

    def unlock(self, envelope: Envelope, at: datetime) -> None:
        """Unlock the casebook (reason required)."""
        envelope.require_reason()
        if not self.locked:
            raise InvalidState("subject is not locked")
        self.trigger_event(SubjectUnlocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)
