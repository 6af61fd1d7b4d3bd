"""Redaction of identifying values entered by mistake: a data manager requests it (with a
reason), an admin who is not the requester approves it; both are events of the casebook."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from domain import limits
from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import Forbidden, InvalidInput, InvalidState, NotFound
from domain.redaction import covered_items
from domain.subject.events import RedactionApproved, RedactionRequested
from domain.subject.state import SubjectState


class Redactions(SubjectState):
    """The subject's two-person redaction commands."""

    def request_redaction(self, request_id: str, record_id: str | None, field: str | None,
                          identifying: Mapping[str, tuple[str, ...]], envelope: Envelope,
                          at: datetime) -> None:
        """Ask that the declared identifying ``field`` of ``record_id`` (neither: every
        identifying value of the subject) be redacted; the envelope carries the reason."""
        limits.check_texts(("request_id", request_id, limits.ID),
                           ("record_id", record_id, limits.ID), ("field", field, limits.ID))
        envelope.require_reason()
        if not request_id.strip():
            raise InvalidInput("request_id", "is required")
        if request_id in self.redactions:
            raise InvalidInput("request_id", f"redaction {request_id!r} already exists")
        items = covered_items(self.records, identifying, record_id, field)
        self.trigger_event(RedactionRequested, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, request_id=request_id, items=items)

    def approve_redaction(self, request_id: str, envelope: Envelope, at: datetime) -> None:
        """Approve a pending request: never by the person who made it."""
        request = self.redactions.get(request_id)
        if request is None:
            raise NotFound(f"no redaction request {request_id!r} for subject "
                           f"{self.subject_code}")
        if request["status"] != "requested":
            raise InvalidState(f"redaction {request_id} is already {request['status']}")
        if envelope.actor.user_id == request["requested_by"]:
            raise Forbidden("a redaction is approved by another person than its requester")
        self.trigger_event(RedactionApproved, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, request_id=request_id)
