"""The domain holds every caller (HTTP, CLI, import) to the limits of ``domain.limits``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain import limits
from domain.envelope import Reason
from domain.errors import InvalidInput
from domain.studies import nct04397107
from domain.study import Study, StudyDefinition
from domain.subject import AE_FIELDS_NEEDING_REASON, Subject
from tests.support import correction, envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
NOW = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)
ONSET = NOW - timedelta(days=5)
AE = {"term": "Fever", "category": "fever", "grade": 1, "serious": False,
      "relationship": "possible", "action_taken": "none", "outcome": "recovering"}


def enrolled() -> Subject:
    subject = Subject.consent(STUDY, "001", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), NOW)
    subject.screen(STUDY.eligibility, nct04397107.ELIGIBLE_SCREENING_ANSWERS, envelope(), NOW)
    subject.enroll(STUDY, "IL2", date(2021, 1, 10), envelope(), NOW)
    subject.report_adverse_event("AE1", ONSET, AE, envelope(), NOW)
    return subject


def _refused(field: str, command: Any) -> None:
    with pytest.raises(InvalidInput) as refusal:
        command()
    assert field in [p.field for p in refusal.value.problems]


def test_a_correction_is_held_to_the_entry_limits_of_its_field() -> None:
    subject = enrolled()
    version = subject.version
    _refused("term", lambda: subject.correct("AE1", "term", "x" * 10_000, correction(), NOW))
    _refused("meddra_pt", lambda: subject.correct("AE1", "meddra_pt", 12, correction(), NOW))
    _refused("ended_at", lambda: subject.correct("AE1", "ended_at", "soon", correction(), NOW))
    _refused("reason.text", lambda: subject.correct(
        "AE1", "term", "Pyrexia", correction("r" * (limits.TEXT + 1)), NOW))
    assert subject.version == version
    subject.correct("AE1", "term", "x" * limits.TERM, correction(), NOW)
    assert subject.records["AE1"].fields["term"] == "x" * limits.TERM


def test_a_first_entry_is_held_to_the_same_limits() -> None:
    subject = enrolled()
    _refused("term", lambda: subject.report_adverse_event(
        "AE2", ONSET, {**AE, "term": "x" * (limits.TERM + 1)}, envelope(), NOW))
    _refused("record_id", lambda: subject.report_adverse_event(
        "A" * (limits.ID + 1), ONSET, AE, envelope(), NOW))


def test_screening_queries_and_withdrawal_are_held_to_their_limits() -> None:
    subject = Subject.consent(STUDY, "002", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), NOW)
    _refused("screening.note", lambda: subject.screen(
        STUDY.eligibility, {**nct04397107.ELIGIBLE_SCREENING_ANSWERS,
                            "note": "n" * (limits.SCREENING_TEXT + 1)}, envelope(), NOW))
    _refused("screening.note", lambda: subject.screen(
        STUDY.eligibility, {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, "note": {"a": 1}},
        envelope(), NOW))
    subject = enrolled()
    _refused("text", lambda: subject.open_query("Q1", "AE1", "term", "?" * (limits.TEXT + 1),
                                                envelope(), NOW))
    _refused("withdrawal_reason", lambda: subject.withdraw(
        NOW, "w" * (limits.WITHDRAWAL_REASON + 1), envelope(), NOW))
    _refused("meaning", lambda: subject.sign("S1", "m" * (limits.ID + 1),
                                             STUDY.signature_meanings, envelope().actor,
                                             envelope(), NOW))


def test_a_review_comment_is_held_to_its_limit() -> None:
    study = Study.register(nct04397107.definition(), envelope(), NOW)
    _refused("comment", lambda: study.review_audit_trail(1, "c" * (limits.TEXT + 1),
                                                         envelope(), NOW, last_position=1))


@pytest.mark.parametrize("field", sorted(AE_FIELDS_NEEDING_REASON))
def test_an_update_of_what_an_adverse_event_is_needs_a_reason(field: str) -> None:
    subject = enrolled()
    change = {"term": "Pyrexia", "category": "infection", "relationship": "probable",
              "serious": True, "seriousness_criteria": ["hospitalisation"],
              "outcome": "not_recovered", "meddra_pt": "Pyrexia", "meddra_llt": "Fever"}
    changes = {field: change[field]}
    if field in ("serious", "seriousness_criteria"):  # they change together
        changes = {"serious": True, "seriousness_criteria": ["hospitalisation"]}
    version = subject.version
    _refused("reason", lambda: subject.update_adverse_event("AE1", NOW, changes, envelope(),
                                                            NOW))
    assert subject.version == version
    with_reason = envelope(reason=Reason("new_information", "the site's review"))
    subject.update_adverse_event("AE1", NOW, changes, with_reason, NOW)
    assert subject.records["AE1"].fields[field] == changes.get(field, change[field])


def test_a_dated_clinical_evolution_needs_no_reason() -> None:
    subject = enrolled()
    subject.update_adverse_event("AE1", NOW, {"grade": 2, "action_taken": "dose_reduced"},
                                 envelope(), NOW)
    assert subject.records["AE1"].fields["grade"] == 2
