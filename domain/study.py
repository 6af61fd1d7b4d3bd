"""The study: its arms, diseases, sites, visit schedule, eligibility and signature meanings.

A study is data. NCT04397107 is one definition (``domain/studies/nct04397107.py``); a second
study is another definition run beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate

from domain import limits
from domain.blinding import Blinding
from domain.clock import require_aware
from domain.endpoints import Endpoint, parse_endpoints
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState, Problem
from domain.identifiers import study_id_problem
from domain.redaction import parse_identifying
from domain.review import ReviewFilter, ReviewRules
from domain.rules.eligibility import Criterion

# The key of the whole trail's sign-offs among those per review filter.
ALL_CHANGES = "all"

_NAMESPACE = uuid5(NAMESPACE_URL, "https://trialledger.invalid/")


@lru_cache(maxsize=1024)  # every command asks; a SHA-1 each time is not nothing
def study_uuid(study_id: str) -> UUID:
    """The aggregate id of a study: stable, derived from its registry id."""
    return uuid5(_NAMESPACE, f"study/{study_id}")


@dataclass(frozen=True)
class Visit:
    """A scheduled visit: target day after baseline and the window around it."""

    code: str
    name: str
    day: int
    window_days: int


@dataclass(frozen=True)
class StudyDefinition:
    """A study's protocol, as the data the domain checks commands against."""

    study_id: str
    title: str
    arms: dict[str, str]
    diseases: dict[str, dict[str, Any]]
    sites: dict[str, dict[str, Any]]
    visits: tuple[Visit, ...]
    eligibility: tuple[Criterion, ...]
    signature_meanings: dict[str, str]
    products: dict[str, dict[str, Any]]
    start_date: date
    end_date: date
    # A study loaded from SDTM: each domain's variables and types, and the study's own
    # vocabularies (test codes and units), which its imported records are checked against.
    sdtm: dict[str, Any] = field(default_factory=dict)
    # The range each vital sign or lab test is expected in ({"vitals"|"labs": {code: {"low",
    # "high", "unit"}}}): a value outside it is kept and queried (a soft check).
    ranges: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # The outcome measures it declares (domain.endpoints); None when its stored definition
    # predates them (see domain.studies.protocols.study_endpoints).
    endpoints: tuple[Endpoint, ...] | None = None
    # The items that may identify a person (kind -> fields: free text, initials...): stored
    # sealed, each under a key of its own that a redaction destroys (domain.redaction).
    identifying: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Its critical fields and the audit-review filters' thresholds (domain.review).
    review: ReviewRules = field(default_factory=ReviewRules)
    # What is blinded and to whom (domain.blinding); None: an open study.
    blinding: Blinding | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyDefinition:
        """Build (and validate) a definition from its JSON-native form."""
        problems: list[Problem] = []
        for key in ("study_id", "title", "arms", "sites", "visits", "eligibility"):
            if not data.get(key):
                problems.append(Problem(key, "is required"))
        if problems:
            raise InvalidInput(problems=problems)
        try:
            definition = cls(
                study_id=str(data["study_id"]),
                title=str(data["title"]),
                arms={a["code"]: a["name"] for a in data["arms"]},
                diseases={d["code"]: d for d in data.get("diseases", [])},
                sites={s["code"]: s for s in data["sites"]},
                visits=tuple(Visit(**v) for v in data["visits"]),
                eligibility=tuple(Criterion.from_dict(c) for c in data["eligibility"]),
                signature_meanings={
                    m["code"]: m["text"] for m in data.get("signature_meanings", [])
                },
                products={p["code"]: p for p in data.get("products", [])},
                start_date=date.fromisoformat(data["start_date"]),
                end_date=date.fromisoformat(data["end_date"]),
                sdtm=dict(data.get("sdtm") or {}),
                ranges=_ranges(data.get("ranges") or {}),
                endpoints=(parse_endpoints(data["endpoints"]) if "endpoints" in data
                           else None),
                identifying=parse_identifying(data.get("identifying_items")),
                review=ReviewRules.from_dict(data.get("audit_review")),
                blinding=Blinding.from_dict(data.get("blinding")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput("definition", f"malformed study definition: {e}") from e
        if definition.end_date < definition.start_date:
            raise InvalidInput("end_date", "is before start_date")
        for code, site in definition.sites.items():
            _check_zone(code, site.get("time_zone"))
        return definition


def _check_zone(site: str, zone: Any) -> None:
    """A site's optional time zone (where its local times are shown) is an IANA name."""
    if zone is None:
        return
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInput("sites.time_zone", f"site {site}: {zone!r} is not a known IANA "
                                              "time zone (such as Asia/Shanghai)") from None


def _ranges(ranges: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """A definition's soft ranges, checked: numbers with low <= high, per known kind."""
    if not isinstance(ranges, dict):
        raise InvalidInput("ranges", "must be an object of vitals|labs -> code -> range")
    clean: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, by_code in ranges.items():
        if kind not in ("vitals", "labs") or not isinstance(by_code, dict):
            raise InvalidInput(f"ranges.{kind}", "must be vitals or labs, each code -> range")
        clean[kind] = {}
        for code, bounds in by_code.items():
            low = bounds.get("low") if isinstance(bounds, dict) else None
            high = bounds.get("high") if isinstance(bounds, dict) else None
            if not (isinstance(low, int | float) and isinstance(high, int | float)
                    and not isinstance(low, bool) and not isinstance(high, bool)
                    and low <= high):
                raise InvalidInput(f"ranges.{kind}.{code}", "needs numbers low <= high")
            unit = bounds.get("unit")
            clean[kind][str(code)] = {"low": float(low), "high": float(high),
                                      "unit": None if unit is None else str(unit)}
    return clean


class Study(Aggregate):
    """A registered study."""
    TOPIC = "Study.v1"

    class Event(Aggregate.Event):
        """Base of study events: each carries the envelope."""

        envelope: Envelope

    class Created(Event, Aggregate.Created):
        """eventsourcing's generic creation event, never triggered (each creation names
        its own event); declared to give it a stored name, as eventsourcing requires of
        every event class of an aggregate with one."""
        TOPIC = "Study.Created.v1"

    class Registered(Event, Aggregate.Created):
        """The study was registered with its definition."""
        TOPIC = "Study.Registered.v1"

        definition: dict[str, Any]

    class StudyLocked(Event):
        """The whole study was locked (e.g. database lock): every casebook edit is refused."""
        TOPIC = "Study.StudyLocked.v1"

        def apply(self, study: Study) -> None:
            study.locked = True

    class StudyUnlocked(Event):
        """The study was unlocked (with a reason)."""
        TOPIC = "Study.StudyUnlocked.v1"

        def apply(self, study: Study) -> None:
            study.locked = False

    class AuditTrailReviewed(Event):
        """A reviewer signed off the audit trail through log position ``through_position``."""
        TOPIC = "Study.AuditTrailReviewed.v1"

        through_position: int
        comment: str

        def apply(self, study: Study) -> None:
            study.reviewed_through = max(study.reviewed_through, self.through_position)

    class FilteredAuditTrailReviewed(Event):
        """A reviewer signed off the audit trail through ``through_position`` as one review
        filter (domain.review) selects it, with the thresholds it was read with; filter
        ``None``: the whole trail."""
        TOPIC = "Study.AuditTrailReviewed.v2"

        through_position: int
        comment: str
        review_filter: str | None
        parameters: dict[str, Any]

        def apply(self, study: Study) -> None:
            key = self.review_filter or ALL_CHANGES
            study.reviews[key] = max(study.reviews.get(key, 0), self.through_position)
            if self.review_filter is None:
                study.reviewed_through = max(study.reviewed_through, self.through_position)

    class SubjectUnblinded(Event):
        """A subject's blinded items were disclosed to the person in the envelope, for the
        reason it carries (e.g. an emergency)."""
        TOPIC = "Study.SubjectUnblinded.v1"

        subject_code: str

        def apply(self, study: Study) -> None:
            study.unblinded.setdefault(self.subject_code, set()).add(
                self.envelope.actor.user_id)

    class ExportRecorded(Event):
        """Data left the system: what, as of when, and its SHA-256 when known."""
        TOPIC = "Study.ExportRecorded.v1"

        export_format: str
        as_of: datetime | None

        def apply(self, study: Study) -> None:
            study.exports += 1

    class ExportFailed(Event):
        """An export was begun and did not complete: nothing usable left the system."""
        TOPIC = "Study.ExportFailed.v1"

        export_format: str
        as_of: datetime | None
        failure: str

    def __init__(self, definition: dict[str, Any], envelope: Envelope) -> None:
        self.definition_data = definition
        self.definition = StudyDefinition.from_dict(definition)
        self.locked = False
        self.reviewed_through = 0
        # The last position signed off per review filter (ALL_CHANGES: the whole trail).
        self.reviews: dict[str, int] = {}
        # Subject code -> the user ids it was unblinded to.
        self.unblinded: dict[str, set[str]] = {}
        self.exports = 0

    @classmethod
    def register(cls, definition: dict[str, Any], envelope: Envelope, at: datetime) -> Study:
        """Register a study from its definition (validated first)."""
        problem = study_id_problem("study_id", definition.get("study_id"))
        if problem is not None:
            raise InvalidInput(problems=[problem])
        parsed = StudyDefinition.from_dict(definition)
        study: Study = cls._create(
            cls.Registered,
            id=study_uuid(parsed.study_id),
            timestamp=at,
            definition=definition,
            envelope=envelope,
        )
        return study

    def lock(self, envelope: Envelope, at: datetime) -> None:
        """Lock the study (reason required)."""
        envelope.require_reason()
        if self.locked:
            raise InvalidState("the study is already locked")
        self.trigger_event(self.StudyLocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)

    def unlock(self, envelope: Envelope, at: datetime) -> None:
        """Unlock the study (reason required)."""
        envelope.require_reason()
        if not self.locked:
            raise InvalidState("the study is not locked")
        self.trigger_event(self.StudyUnlocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)

    def review_audit_trail(self, through_position: int, comment: str, envelope: Envelope,
                           at: datetime, *, last_position: int,
                           review: ReviewFilter | None = None) -> None:
        """Sign off the audit trail (as ``review`` selects it; None: all of it) as reviewed
        through ``through_position``, which must be a position the log holds
        (``last_position``: its last)."""
        limits.check_text("comment", comment, limits.TEXT)
        if through_position < 1:
            raise InvalidInput("through_position", "must be a log position (1 or more)")
        if through_position > last_position:
            raise InvalidInput("through_position",
                               f"is beyond the log's last position ({last_position})")
        name = review.name if review is not None else None
        done = self.reviews.get(name or ALL_CHANGES, 0)
        if name is None:
            done = max(done, self.reviewed_through)
        if through_position <= done:
            raise InvalidInput("through_position", f"already reviewed through {done}"
                               + (f" for review={name}" if name else ""))
        self.trigger_event(self.FilteredAuditTrailReviewed,
                           timestamp=require_aware("recorded_at", at), envelope=envelope,
                           through_position=through_position, comment=comment,
                           review_filter=name,
                           parameters=review.parameters() if review is not None else {})

    def unblind_subject(self, subject_code: str, envelope: Envelope, at: datetime) -> None:
        """Disclose a subject's blinded items to the person in ``envelope`` (reason
        required); the study must be blinded."""
        envelope.require_reason()
        if self.definition.blinding is None:
            raise InvalidState(f"study {self.definition.study_id} is not blinded")
        if envelope.actor.user_id in self.unblinded.get(subject_code, set()):
            raise InvalidState(f"subject {subject_code} is already unblinded to you")
        self.trigger_event(self.SubjectUnblinded, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, subject_code=subject_code)

    def record_export(self, export_format: str, as_of: datetime | None, envelope: Envelope,
                      at: datetime) -> None:
        """Record that an export was made."""
        self.trigger_event(self.ExportRecorded, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, export_format=export_format, as_of=as_of)

    def record_export_failure(self, export_format: str, as_of: datetime | None, failure: str,
                              envelope: Envelope, at: datetime) -> None:
        """Record that an export was begun and failed, and why."""
        self.trigger_event(self.ExportFailed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, export_format=export_format, as_of=as_of,
                           failure=failure[:limits.TEXT])
