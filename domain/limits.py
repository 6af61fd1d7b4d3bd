"""How much a written value may hold: one declaration for every path that writes one.

Every command of the domain checks what it is given against these figures before anything
is stored, whoever calls it (HTTP, CLI, import), and the HTTP schema declares the same
figures (``maxLength``), so a client learns them from ``/openapi.json`` rather than from
refusals. The figures are generous for clinical data and small against the request-body
limit: no single value can make a write heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from domain.errors import InvalidInput, Problem

ID = 64
"""Identifiers and codes: subject, site, arm, disease, record, query, signature, field names,
vocabulary codes."""
NAME = 200
"""A name or a coded term (MedDRA preferred / lowest-level term, a person's printed name)."""
TERM = 500
"""An adverse event's verbatim term, a signature meaning's text."""
TEXT = 2000
"""Free text: a reason for a change, a query, its answer and closing remark, a review
comment."""
WITHDRAWAL_REASON = 1000
"""Why a subject withdrew."""
DRUG = 100
"""A drug's name."""
UNIT = 32
"""A unit, a route of administration, a lab test code."""
SCREENING_ANSWERS = 100
"""How many screening answers one enrolment may carry."""
SCREENING_TEXT = 200
"""A screening answer given as text."""
SERIOUSNESS_CRITERIA = 10
"""How many seriousness criteria an adverse event may list (there are six)."""

RECORD_TEXT: Mapping[str, Mapping[str, int]] = {
    "doses": {"drug": DRUG, "unit": UNIT, "route": UNIT, "frequency": UNIT},
    "therapies": {"drug": DRUG, "category": ID, "route": UNIT, "frequency": UNIT},
    "labs": {"code": UNIT, "unit": UNIT},
    "assessments": {"instrument": ID},
    "adverse-events": {"term": TERM, "category": ID, "relationship": ID,
                       "action_taken": ID, "outcome": ID, "meddra_pt": NAME,
                       "meddra_llt": NAME},
}
"""The text fields of each record kind and their longest value. A field not listed holds a
number, a flag, a list or a timestamp, which the kind's validator checks."""

OPTIONAL_TEXT = frozenset({"meddra_pt", "meddra_llt", "frequency"})
"""Text fields that may be absent (null)."""
TIMESTAMP_FIELDS = frozenset({"ended_at", "stopped_at"})
"""Fields holding a UTC-offset ISO 8601 timestamp (or null while the thing goes on)."""

# The longest text any record field holds: what a correction's value may be at most.
RECORD_VALUE = max(limit for fields in RECORD_TEXT.values() for limit in fields.values())


def too_long(field: str, value: str, limit: int) -> Problem | None:
    """The problem with ``value`` if it is longer than ``limit`` characters."""
    if len(value) > limit:
        return Problem(field, f"must be at most {limit} characters (got {len(value)})")
    return None


def check_text(field: str, value: str, limit: int) -> None:
    """Refuse ``value`` (naming ``field``) if it is longer than ``limit`` characters."""
    problem = too_long(field, value, limit)
    if problem is not None:
        raise InvalidInput(problems=[problem])


def check_texts(*checks: tuple[str, str | None, int]) -> None:
    """Refuse, naming every field at fault, if any (field, value, limit) is too long."""
    problems = [p for field, value, limit in checks if value is not None
                for p in [too_long(field, value, limit)] if p is not None]
    if problems:
        raise InvalidInput(problems=problems)


def check_record_values(kind: str, values: Mapping[str, Any]) -> None:
    """Refuse values of a ``kind`` record that are too long or of the wrong type for their
    field. ``values`` are a first entry's fields or the fields a change writes (a dotted
    name reaches into an assessment's items); what each kind means by its values is checked
    afterwards by :func:`domain.records.validate`, on the record as a whole."""
    limits = RECORD_TEXT.get(kind, {})
    problems: list[Problem] = []
    for name, value in values.items():
        if len(name) > ID:
            problems.append(Problem("field", f"a field name has at most {ID} characters"))
            continue
        head = name.partition(".")[0]
        if head in limits:
            if value is None and head in OPTIONAL_TEXT:
                continue
            if not isinstance(value, str):
                problems.append(Problem(name, "must be text"))
            elif (problem := too_long(name, value, limits[head])) is not None:
                problems.append(problem)
        elif head in TIMESTAMP_FIELDS and value is not None:
            problems.extend(_timestamp_problems(name, value))
        elif head == "seriousness_criteria" and isinstance(value, list | tuple):
            if len(value) > SERIOUSNESS_CRITERIA:
                problems.append(Problem(name, f"at most {SERIOUSNESS_CRITERIA} criteria"))
        elif isinstance(value, str) and len(value) > ID:
            # Any other text (an item code, a criterion) is a code of the kind's vocabulary.
            problems.append(Problem(name, f"must be at most {ID} characters"))
        elif (head == "items" and isinstance(value, Mapping)
              and any(len(str(k)) > ID for k in value)):
            problems.append(Problem("items", f"an item's name has at most {ID} characters"))
    if problems:
        raise InvalidInput(problems=problems)


def check_screening(answers: Mapping[str, Any]) -> None:
    """Refuse screening answers that are too many, too long, or not a number, flag or
    short text."""
    if len(answers) > SCREENING_ANSWERS:
        raise InvalidInput("screening", f"at most {SCREENING_ANSWERS} answers")
    problems: list[Problem] = []
    for name, value in answers.items():
        if not isinstance(name, str) or len(name) > ID:
            problems.append(Problem("screening", f"an answer's name has at most {ID} "
                                                 "characters"))
        elif isinstance(value, str):
            if (problem := too_long(f"screening.{name}", value, SCREENING_TEXT)) is not None:
                problems.append(problem)
        elif value is not None and not isinstance(value, bool | int | float):
            problems.append(Problem(f"screening.{name}", "must be a number, true/false, "
                                                         "text or null"))
    if problems:
        raise InvalidInput(problems=problems)


def _timestamp_problems(name: str, value: Any) -> list[Problem]:
    if isinstance(value, str) and len(value) <= ID:
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                parsed.astimezone(UTC)  # a time past the calendar's ends in UTC overflows
                return []
        except (ValueError, OverflowError):
            pass
    return [Problem(name, "must be an ISO 8601 timestamp with its UTC offset")]
