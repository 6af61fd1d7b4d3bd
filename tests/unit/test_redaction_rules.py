"""The domain's redaction rules: what a request covers, the reason it needs, the second
person who approves it, and what the approval makes of the values it covers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.envelope import Actor, Reason
from domain.errors import Forbidden, InvalidInput, InvalidState
from domain.redaction import marker
from domain.studies import nct04397107
from domain.study import StudyDefinition
from domain.subject import Subject
from tests.support import envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
NOW = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)
DM = Actor("u-dm", "Zhang Min", "data_manager", "*")
ADMIN = Actor("u-admin", "Chen Jie", "admin", "*")
WHY = Reason("entered_in_error", "a name in the term")
AE = {"term": "Rash, per mother Jane Roe", "category": "other", "grade": 1, "serious": False,
      "relationship": "unlikely", "action_taken": "none", "outcome": "recovering"}


def with_two_aes() -> Subject:
    subject = Subject.consent(STUDY, "001", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), NOW)
    subject.screen(STUDY.eligibility, nct04397107.ELIGIBLE_SCREENING_ANSWERS, envelope(), NOW)
    subject.enroll(STUDY, "IL2", date(2021, 1, 10), envelope(), NOW)
    for rid in ("AE1", "AE2"):
        subject.report_adverse_event(rid, NOW - timedelta(days=1), AE, envelope(), NOW)
    return subject


@pytest.mark.requirement("R6")
def test_the_study_declares_its_identifying_items() -> None:
    assert STUDY.identifying == {"adverse-events": ("term",)}
    with pytest.raises(InvalidInput, match="identifying_items"):
        StudyDefinition.from_dict({**nct04397107.definition(), "identifying_items": ["term"]})


@pytest.mark.requirement("R6")
def test_a_request_names_a_declared_field_and_a_reason() -> None:
    subject = with_two_aes()
    with pytest.raises(InvalidInput, match="not declared identifying"):
        subject.request_redaction("R1", "AE1", "grade", STUDY.identifying, envelope(DM, WHY),
                                  NOW)
    with pytest.raises(InvalidInput, match="together"):
        subject.request_redaction("R1", "AE1", None, STUDY.identifying, envelope(DM, WHY), NOW)
    with pytest.raises(InvalidInput, match="reason"):
        subject.request_redaction("R1", "AE1", "term", STUDY.identifying, envelope(DM), NOW)
    subject.request_redaction("R1", None, None, STUDY.identifying, envelope(DM, WHY), NOW)
    assert subject.redactions["R1"]["items"] == [{"record_id": "AE1", "field": "term"},
                                                 {"record_id": "AE2", "field": "term"}]


@pytest.mark.requirement("R6")
def test_the_requester_never_approves_and_an_approval_redacts_every_version() -> None:
    subject = with_two_aes()
    subject.request_redaction("R1", "AE1", "term", STUDY.identifying, envelope(DM, WHY), NOW)
    with pytest.raises(Forbidden, match="another person"):
        subject.approve_redaction("R1", envelope(Actor("u-dm", "Zhang Min", "admin", "*")), NOW)
    later = NOW + timedelta(days=3)
    subject.approve_redaction("R1", envelope(ADMIN), later)
    text = marker(later.date(), WHY.text)
    assert text == f"[redacted on {later.date().isoformat()}: a name in the term]"
    record = subject.records["AE1"]
    assert record.fields["term"] == text
    assert all(e["fields"].get("term") in (None, text) for e in record.timeline)
    assert subject.records["AE2"].fields["term"] == AE["term"]
    assert subject.redactions["R1"]["approved_by"] == "u-admin"
    with pytest.raises(InvalidState, match="already approved"):
        subject.approve_redaction("R1", envelope(ADMIN), later)
