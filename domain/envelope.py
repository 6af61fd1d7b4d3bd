"""The envelope every event carries: who acted, through which client, from where, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain import limits
from domain.errors import InvalidInput, Problem

ROLES = ("investigator", "coordinator", "monitor", "data_manager", "regulator", "admin", "system")
SOURCES = ("api", "import", "system")
EDIT_POINTS = ("site", "monitoring", "data_management", "post_lock")
REASON_CODES = (
    "transcription_error",
    "data_entry_error",
    "source_document_updated",
    "query_response",
    "new_information",
    "duplicate_entry",
    "entered_in_error",
    "protocol_deviation",
    "database_lock",
    "other",
)


@dataclass(frozen=True)
class Actor:
    """The person on whose behalf a change is made."""

    user_id: str
    printed_name: str
    role: str
    site: str


@dataclass(frozen=True)
class Reason:
    """Why a change was made: a coded reason plus free text."""

    code: str
    text: str

    def __post_init__(self) -> None:
        problems = []
        if self.code not in REASON_CODES:
            problems.append(Problem("reason.code", f"must be one of {', '.join(REASON_CODES)}"))
        if not self.text or not self.text.strip():
            problems.append(Problem("reason.text", "a reason for the change is required"))
        if problems:
            raise InvalidInput(problems=problems)


@dataclass(frozen=True)
class Envelope:
    """Who, through what, from where and why — attached to every event.

    ``recorded_at`` is not here: it is the event's timestamp, set by the application
    service's clock, never by the client.
    """

    actor: Actor
    client: str
    source: str
    request_id: str
    edit_point: str = "site"
    reason: Reason | None = None
    # Where imported data came from (file, row, the row's values as given); None otherwise,
    # and then absent from the stored form, so events written before it existed are unchanged.
    provenance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.actor.role not in ROLES:
            problems.append(Problem("actor.role", f"must be one of {', '.join(ROLES)}"))
        for name in ("user_id", "printed_name", "site"):
            if not getattr(self.actor, name).strip():
                problems.append(Problem(f"actor.{name}", "is required"))
        if self.source not in SOURCES:
            problems.append(Problem("source", f"must be one of {', '.join(SOURCES)}"))
        if self.edit_point not in EDIT_POINTS:
            problems.append(Problem("edit_point", f"must be one of {', '.join(EDIT_POINTS)}"))
        if not self.client.strip():
            problems.append(Problem("client", "the transporting client is required"))
        if not self.request_id.strip():
            problems.append(Problem("request_id", "is required"))
        if problems:
            raise InvalidInput(problems=problems)

    def with_provenance(self, provenance: dict[str, Any] | None) -> Envelope:
        """This envelope with ``provenance`` instead of its own: an import gives each row's
        events their own, and the rest was checked when this envelope was made."""
        envelope = object.__new__(type(self))
        # As the dataclass's own __init__ sets a frozen instance's fields.
        envelope.__dict__.update(self.__dict__, provenance=provenance)
        return envelope

    def require_reason(self) -> Reason:
        """The reason, which every change or removal after first entry must carry."""
        if self.reason is None:
            raise InvalidInput("reason", "a change or removal after first entry needs a reason")
        # Checked here, when a command uses the reason, not when a stored event is read back.
        limits.check_text("reason.text", self.reason.text, limits.TEXT)
        return self.reason

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form (how the envelope is stored inside events)."""
        return {
            "actor": {
                "user_id": self.actor.user_id,
                "printed_name": self.actor.printed_name,
                "role": self.actor.role,
                "site": self.actor.site,
            },
            "client": self.client,
            "source": self.source,
            "request_id": self.request_id,
            "edit_point": self.edit_point,
            "reason": None
            if self.reason is None
            else {"code": self.reason.code, "text": self.reason.text},
            **({} if self.provenance is None else {"provenance": self.provenance}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        """Inverse of :meth:`to_dict`."""
        reason = data.get("reason")
        return cls(
            actor=Actor(**data["actor"]),
            client=data["client"],
            source=data["source"],
            request_id=data["request_id"],
            edit_point=data["edit_point"],
            reason=None if reason is None else Reason(**reason),
            provenance=data.get("provenance"),
        )
