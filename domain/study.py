"""The study: its arms, diseases, sites, visit schedule, eligibility and signature meanings.

A study is data. NCT04397107 is one definition (``domain/studies/nct04397107.py``); a second
study is another definition run beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.envelope import Envelope
from domain.errors import InvalidInput, Problem
from domain.rules.eligibility import Criterion

_NAMESPACE = uuid5(NAMESPACE_URL, "https://trialledger.invalid/")


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
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput("definition", f"malformed study definition: {e}") from e
        if definition.end_date < definition.start_date:
            raise InvalidInput("end_date", "is before start_date")
        return definition


class Study(Aggregate):
    """A registered study."""

    class Event(Aggregate.Event):
        """Base of study events: each carries the envelope."""

        envelope: Envelope

    class Registered(Event, Aggregate.Created):
        """The study was registered with its definition."""

        definition: dict[str, Any]

    def __init__(self, definition: dict[str, Any], envelope: Envelope) -> None:
        self.definition_data = definition
        self.definition = StudyDefinition.from_dict(definition)

    @classmethod
    def register(cls, definition: dict[str, Any], envelope: Envelope, at: datetime) -> Study:
        """Register a study from its definition (validated first)."""
        parsed = StudyDefinition.from_dict(definition)
        study: Study = cls._create(
            cls.Registered,
            id=study_uuid(parsed.study_id),
            timestamp=at,
            definition=definition,
            envelope=envelope,
        )
        return study
