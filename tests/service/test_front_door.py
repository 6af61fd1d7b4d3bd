"""The trial service's rules, one test each, on eventsourcing's in-memory recorder: who may
do what where, medical coding, record kinds, the visit schedule, e-signature
re-authentication, locks, reasons and stale versions. Each runs the real service with a
real directory (Argon2 hashes) and no database; tests/integration/test_http_rules.py shows
the routes answer with the same refusals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest

from application.people import People
from application.reauthentication import PeopleReauthenticator
from application.trial_service import TrialService
from domain.caller import Caller
from domain.commands import (
    CorrectRecord,
    EnrolSubject,
    LockCasebook,
    LockStudy,
    RecordLabResult,
    RemoveRecord,
    ReportAdverseEvent,
    SignCasebook,
    UpdateAdverseEvent,
)
from domain.directory import DirectoryApplication
from domain.envelope import Reason
from domain.errors import Forbidden, InvalidInput, Locked, NotFound, StaleVersion, Unauthenticated
from domain.service import StudyApplication
from domain.studies import nct04397107
from domain.subject import Subject
from domain.user import Grant
from infra.passwords import hash_password
from tests.support import SITE, T0, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
DAY = timedelta(days=1)
REASON = Reason("transcription_error", "checked against source")
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)  # once: Argon2 is slow on purpose
AE = {"term": "Injection site erythema", "category": "injection_site_reaction", "grade": 1,
      "serious": False, "relationship": "probable", "action_taken": "none",
      "outcome": "recovering"}


@dataclass
class InMemoryStudies:
    """The service's port to the studies, holding in-memory applications."""

    apps: dict[str, StudyApplication] = field(default_factory=dict)

    def has_study(self, study_id: str) -> bool:
        return study_id in self.apps

    def study(self, study_id: str) -> StudyApplication:
        return self.apps[study_id]

    def opened_study(self, study_id: str) -> StudyApplication | None:
        return self.apps.get(study_id)


def caller(role: str, site: str = SITE, username: str = "someone") -> Caller:
    return Caller(f"u-{username}", username, username.title(), (Grant(role, STUDY, site),),
                  "test-client", "req-1")


COORDINATOR = caller("coordinator", username="coordinator")
ELSEWHERE = caller("coordinator", "JLU2", "elsewhere")
MONITOR = caller("monitor", "*", "monitor")
DATA_MANAGER = caller("data_manager", "*", "dm")
INVESTIGATOR = caller("investigator", username="inv")
OPERATOR = Caller("os:op", "op", "op", (Grant("system", "*", "*"),), "trialledger-cli",
                  "cli-1", "cli")


@dataclass
class Trial:
    app: StudyApplication
    service: TrialService
    directory: DirectoryApplication

    def lab(self, who: Caller = COORDINATOR, record_id: str = "LB1", **kw: Any) -> Subject:
        return self.service.handle(RecordLabResult(
            study=STUDY, subject="001", record_id=record_id, observed_at=T0 + DAY, code="C3",
            value=0.8, unit="g/L", **kw), who)

    def ae(self) -> Subject:
        return self.service.handle(ReportAdverseEvent(
            study=STUDY, subject="001", record_id="AE1", observed_at=T0 + DAY, details=AE),
            COORDINATOR)

    def stored(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)


@pytest.fixture
def trial() -> Trial:
    """NCT04397107 with child 001, and investigator ``inv`` in the directory."""
    clock = simulated_clock()
    app = StudyApplication(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + 30 * DAY)
    directory = DirectoryApplication()
    directory.register_user("inv", "Inv", PASSWORD_HASH, envelope(),
                            lambda u, t: u.grant("investigator", STUDY, SITE, envelope(), t))
    service = TrialService(InMemoryStudies({STUDY: app}),
                           PeopleReauthenticator(lambda: People(directory)))
    return Trial(app, service, directory)


def fields(refused: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [p.field for p in refused.value.problems]


@pytest.mark.requirement("R19")
def test_a_write_needs_a_role_that_enters_data_at_the_subjects_site(trial: Trial) -> None:
    before = trial.stored()
    for who in (ELSEWHERE, MONITOR):
        with pytest.raises(Forbidden):
            trial.lab(who)
    assert trial.stored() == before
    assert trial.lab(COORDINATOR).records["LB1"].fields["value"] == 0.8


def test_enrolment_needs_a_grant_at_the_site_enrolled_at(trial: Trial) -> None:
    enrol = EnrolSubject(study=STUDY, subject="002", site=SITE, date_of_birth=date(2010, 5, 1),
                         sex="F", disease="SLE", consent_date=date(2021, 1, 10),
                         screening_answers=nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm="IL2",
                         enrolled_on=date(2021, 1, 10))
    with pytest.raises(Forbidden):
        trial.service.handle(enrol, ELSEWHERE)
    assert trial.service.handle(enrol, COORDINATOR).subject_code == "002"


def test_a_data_manager_may_correct_the_medical_coding_and_nothing_else(trial: Trial) -> None:
    trial.ae()
    coding = CorrectRecord(study=STUDY, subject="001", kind="adverse-events", record_id="AE1",
                           field="meddra_pt", value="10015150", reason=REASON)
    assert trial.service.handle(coding, DATA_MANAGER).records["AE1"].fields[
        "meddra_pt"] == "10015150"
    with pytest.raises(Forbidden):
        trial.service.handle(CorrectRecord(
            study=STUDY, subject="001", kind="adverse-events", record_id="AE1", field="term",
            value="Rash", reason=REASON), DATA_MANAGER)


def test_a_correction_names_the_records_kind(trial: Trial) -> None:
    trial.ae()
    for command in (
            CorrectRecord(study=STUDY, subject="001", kind="labs", record_id="AE1",
                          field="grade", value=2, reason=REASON),
            RemoveRecord(study=STUDY, subject="001", kind="labs", record_id="AE1",
                         reason=REASON)):
        with pytest.raises(NotFound):
            trial.service.handle(command, COORDINATOR)


def test_a_visit_must_be_one_of_the_schedule(trial: Trial) -> None:
    with pytest.raises(InvalidInput) as refused:
        trial.lab(visit="M2")
    assert fields(refused) == ["visit"]
    assert trial.lab(visit="M1").records["LB1"].visit == "M1"


def sign(password: str = PASSWORD, username: str = "inv") -> SignCasebook:
    return SignCasebook(study=STUDY, subject="001", signature_id="SIG1",
                        meaning="responsibility", username=username, password=password)


@pytest.mark.requirement("R9", "R8")
def test_a_signature_needs_the_signers_password_again(trial: Trial) -> None:
    before = trial.stored()
    with pytest.raises(Unauthenticated):
        trial.service.handle(sign("wrong"), INVESTIGATOR)
    assert trial.stored() == before
    assert trial.directory.user("inv").failed_logins == 1  # the attempt is recorded
    signed = trial.service.handle(sign(), INVESTIGATOR)
    assert signed.signatures["SIG1"]["user_id"] == "u-inv"


@pytest.mark.requirement("R9", "R24")
def test_a_signature_is_its_signers_own(trial: Trial) -> None:
    other = caller("investigator", username="other")
    with pytest.raises(Forbidden):
        trial.service.handle(sign(), other)  # inv's password, given by someone else
    with pytest.raises(Forbidden):
        trial.service.handle(sign(), COORDINATOR)  # a coordinator may not sign


def test_a_locked_study_refuses_enrolment_and_writes_with_locked(trial: Trial) -> None:
    trial.service.handle(LockStudy(study=STUDY, reason=REASON), DATA_MANAGER)
    with pytest.raises(Locked):
        trial.lab()
    with pytest.raises(Locked):
        asyncio.run(trial.service.handle_async(RecordLabResult(
            study=STUDY, subject="001", record_id="LB2", observed_at=T0 + DAY, code="C3",
            value=0.8, unit="g/L"), COORDINATOR))
    with pytest.raises(Locked):
        trial.service.handle(EnrolSubject(
            study=STUDY, subject="002", site=SITE, date_of_birth=date(2010, 5, 1), sex="F",
            disease="SLE", consent_date=date(2021, 1, 10),
            screening_answers=nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm="IL2",
            enrolled_on=date(2021, 1, 10)), COORDINATOR)


def test_a_locked_casebook_refuses_writes_with_locked(trial: Trial) -> None:
    trial.service.handle(LockCasebook(study=STUDY, subject="001", reason=REASON), DATA_MANAGER)
    with pytest.raises(Locked):
        trial.lab()


@pytest.mark.parametrize("command", [
    CorrectRecord(study=STUDY, subject="001", kind="adverse-events", record_id="AE1",
                  field="grade", value=2, reason=None),
    RemoveRecord(study=STUDY, subject="001", kind="adverse-events", record_id="AE1",
                 reason=None),
    UpdateAdverseEvent(study=STUDY, subject="001", record_id="AE1", observed_at=T0 + 2 * DAY,
                       changes={"relationship": "not_related"}),
])
@pytest.mark.requirement("R3")
def test_a_change_of_what_was_recorded_needs_a_reason(trial: Trial, command: Any) -> None:
    trial.ae()
    with pytest.raises(InvalidInput) as refused:
        trial.service.handle(command, COORDINATOR)
    assert fields(refused) == ["reason"]


def test_a_write_on_a_stale_version_is_refused(trial: Trial) -> None:
    read = trial.app.subject("001").version
    trial.lab(expected_version=read)
    with pytest.raises(StaleVersion):
        trial.lab(record_id="LB2", expected_version=read)


@pytest.mark.requirement("R2")
def test_the_envelope_is_the_callers_in_the_role_granted(trial: Trial) -> None:
    trial.lab()
    *_, entered = trial.app.events.get(trial.app.subject("001").id)
    recorded = entered.envelope  # type: ignore[attr-defined]
    assert (recorded.actor.user_id, recorded.actor.role, recorded.source, recorded.edit_point,
            recorded.request_id) == ("u-coordinator", "coordinator", "api", "site", "req-1")


def test_an_import_needs_the_import_grant_and_an_unlocked_study(trial: Trial) -> None:
    subject = trial.app.subject("001", to_change=True)
    with pytest.raises(Forbidden):
        trial.service.import_subjects(trial.app, COORDINATOR, [subject])
    trial.service.handle(LockStudy(study=STUDY, reason=REASON), DATA_MANAGER)
    with pytest.raises(Locked):
        trial.service.import_subjects(trial.app, OPERATOR, [subject])
