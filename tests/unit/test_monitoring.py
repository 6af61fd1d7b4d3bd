"""Signatures, queries and source-data verification on a subject, and people in the directory."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.envelope import Actor
from domain.errors import InvalidInput, InvalidState, Locked
from domain.studies import nct04397107
from domain.study import StudyDefinition
from domain.subject import Subject
from domain.user import MAX_FAILED_LOGINS, Grant, User
from tests.support import correction, envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
NOW = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
PI = Actor("u-pi", "Dr Wang Fang", "investigator", "JLU1")


def with_a_lab() -> Subject:
    subject = Subject.consent(STUDY, "001", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), NOW)
    subject.screen(STUDY.eligibility, nct04397107.ELIGIBLE_SCREENING_ANSWERS, envelope(), NOW)
    subject.enroll(STUDY, "IL2", date(2021, 1, 10), envelope(), NOW)
    subject.record_lab_result("LB1", NOW - DAY, "C3", 0.8, "g/L", envelope(), NOW)
    return subject


@pytest.mark.requirement("R9", "R10")
def test_a_signature_binds_the_content_and_a_later_change_invalidates_it() -> None:
    subject = with_a_lab()
    digest = subject.content_digest()
    subject.sign("S1", "approval", STUDY.signature_meanings, PI, envelope(PI), NOW)
    signature = subject.signatures["S1"]
    assert signature["status"] == "valid"
    assert signature["content_sha256"] == digest
    assert signature["printed_name"] == "Dr Wang Fang"
    assert signature["meaning_text"] == STUDY.signature_meanings["approval"]
    assert signature["signed_version"] == subject.version - 1

    subject.correct("LB1", "value", 0.6, correction(), NOW + DAY)
    assert subject.content_digest() != digest
    assert signature["status"] == "invalidated"
    assert signature["invalidated_by_version"] == subject.version
    # Replaying the events gives the same signature history.
    replayed = None
    for event in subject.collect_events():
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Subject)
    assert replayed.signatures == subject.signatures


def test_a_signature_needs_a_meaning_of_the_study() -> None:
    subject = with_a_lab()
    with pytest.raises(InvalidInput) as refused:
        subject.sign("S1", "liking", STUDY.signature_meanings, PI, envelope(PI), NOW)
    assert refused.value.problems[0].field == "meaning"


@pytest.mark.requirement("R12")
def test_a_correction_in_answer_is_linked_to_its_query() -> None:
    subject = with_a_lab()
    subject.open_query("Q1", "LB1", "value", "C3 of 0.8 does not match the source", envelope(),
                       NOW)
    with pytest.raises(InvalidInput):
        subject.open_query("Q2", "LB1", "colour", "?", envelope(), NOW)
    subject.correct_in_answer("Q1", "LB1", "value", 0.6, correction("source says 0.6"), NOW)
    query = subject.queries["Q1"]
    assert query["status"] == "answered"
    correction_version = query["answers"][0]["correction_version"]
    assert correction_version == subject.version - 1
    assert subject.records["LB1"].fields["value"] == 0.6
    subject.close_query("Q1", "resolved", envelope(), NOW)
    with pytest.raises(InvalidState):
        subject.answer_query("Q1", "late", envelope(), NOW)


def test_source_verification_is_per_record_revision() -> None:
    subject = with_a_lab()
    subject.verify_source("LB1", envelope(), NOW)
    with pytest.raises(InvalidState):
        subject.verify_source("LB1", envelope(), NOW)
    subject.correct("LB1", "value", 0.6, correction(), NOW)
    assert subject.sdv["LB1"]["revision"] != subject.records["LB1"].revisions
    subject.verify_source("LB1", envelope(), NOW)
    assert subject.sdv["LB1"]["revision"] == subject.records["LB1"].revisions


def test_queries_are_refused_on_a_locked_casebook() -> None:
    subject = with_a_lab()
    subject.lock(correction("database lock"), NOW)
    with pytest.raises(Locked):
        subject.open_query("Q1", "LB1", "value", "why?", envelope(), NOW)


def test_five_failed_sign_ins_lock_the_account_out() -> None:
    user = User.register("lwei", "Li Wei", "hash", envelope(), NOW)
    user.grant("coordinator", "NCT04397107", "JLU1", envelope(), NOW)
    for _ in range(MAX_FAILED_LOGINS - 1):
        user.login_failed("app", "session", envelope(), NOW)
    assert user.can_sign_in()
    user.login_failed("app", "session", envelope(), NOW)
    assert not user.can_sign_in()
    with pytest.raises(InvalidState):
        user.logged_in("app", "session", envelope(), NOW)
    user.unlock(envelope(), NOW)
    user.logged_in("app", "session", envelope(), NOW)
    assert user.failed_logins == 0


@pytest.mark.parametrize(
    ("grant", "study", "site", "covers"),
    [
        (Grant("monitor", "S", "A"), "S", "A", True),
        (Grant("monitor", "S", "A"), "S", "B", False),
        (Grant("monitor", "S", "A"), "S", None, False),  # a study-wide question
        (Grant("monitor", "S", "*"), "S", None, True),
        (Grant("monitor", "S", "*"), "T", "A", False),
        (Grant("admin", "*", "*"), "T", "A", True),
    ],
)
def test_grants_reach_their_study_and_site(grant: Grant, study: str, site: str | None,
                                           covers: bool) -> None:
    assert grant.covers(study, site) is covers


def test_usernames_and_roles_are_checked() -> None:
    with pytest.raises(InvalidInput):
        User.register(" spaced ", "X", "hash", envelope(), NOW)
    user = User.register("x", "X", "hash", envelope(), NOW)
    with pytest.raises(InvalidInput):
        user.grant("superuser", "S", "*", envelope(), NOW)
    user.deactivate(envelope(), NOW)
    assert not user.can_sign_in()


def test_a_copied_subject_shares_nothing_mutable_with_the_original() -> None:
    import copy

    subject = with_a_lab()
    subject.sign("S1", "approval", STUDY.signature_meanings, PI, envelope(PI), NOW)
    subject.open_query("Q1", "LB1", "value", "why?", envelope(), NOW)
    subject.verify_source("LB1", envelope(), NOW)
    before = copy.deepcopy(vars(subject), memo={id(subject): subject})
    clone = copy.deepcopy(subject)
    clone.correct("LB1", "value", 0.6, correction(), NOW + DAY)
    clone.answer_query("Q1", "fixed", envelope(), NOW + DAY)
    clone.verify_source("LB1", envelope(), NOW + DAY)
    clone.screening_facts["age_years"] = 99
    # Every attribute that holds something mutable is checked: a new one must be copied too.
    assert vars(subject).keys() == before.keys()
    for name, value in vars(subject).items():
        assert value == before[name], name
    assert clone.records["LB1"].fields["value"] == 0.6
    assert subject.signatures["S1"]["status"] == "valid"
