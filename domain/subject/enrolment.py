"""Consent, screening and enrolment: how a child enters the study."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Self

from domain import limits
from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import EligibilityRefused, InvalidInput, InvalidState, Problem
from domain.identifiers import subject_code_problem
from domain.rules.derivation import RuleError
from domain.rules.eligibility import Criterion, derive_screening_facts, evaluate_eligibility
from domain.study import StudyDefinition
from domain.subject.events import Consented, Enrolled, Screened
from domain.subject.state import SEXES, SubjectState, subject_uuid


class Enrolment(SubjectState):
    """The subject's commands from informed consent to enrolment into an arm."""

    @classmethod
    def consent(
        cls,
        study: StudyDefinition,
        subject_code: str,
        site: str,
        date_of_birth: date,
        sex: str,
        disease: str,
        consent_date: date,
        envelope: Envelope,
        at: datetime,
    ) -> Self:
        """Record informed consent: the subject's casebook starts here."""
        at = require_aware("recorded_at", at)
        limits.check_texts(("site", site, limits.ID), ("disease", disease, limits.ID))
        problems = []
        if (code_problem := subject_code_problem("subject_code", subject_code)) is not None:
            problems.append((code_problem.field, code_problem.message))
        if site not in study.sites:
            problems.append(("site", f"unknown site {site!r}"))
        if sex not in SEXES:
            problems.append(("sex", f"must be one of {', '.join(SEXES)}"))
        if study.diseases and disease not in study.diseases:
            problems.append(("disease", f"must be one of {', '.join(study.diseases)}"))
        if date_of_birth > at.date():
            problems.append(("date_of_birth", "is in the future"))
        if consent_date > at.date():
            problems.append(("consent_date", "is in the future"))
        if consent_date < date_of_birth:
            problems.append(("consent_date", "is before the date of birth"))
        if problems:
            raise InvalidInput(problems=[Problem(f, m) for f, m in problems])
        subject = cls._create(
            Consented,
            id=subject_uuid(study.study_id, subject_code),
            timestamp=at,
            envelope=envelope,
            study_id=study.study_id,
            subject_code=subject_code.strip(),
            site=site,
            date_of_birth=date_of_birth,
            sex=sex,
            disease=disease,
            consent_date=consent_date,
        )
        subject.protocol = study
        return subject

    def screen(
        self,
        criteria: tuple[Criterion, ...],
        answers: Mapping[str, Any],
        envelope: Envelope,
        at: datetime,
    ) -> None:
        """Evaluate every criterion; refuse (naming each failed one) unless all are met."""
        self._require_status("consented")
        limits.check_screening(answers)
        born, consented = self._consent_dates()
        try:
            facts = derive_screening_facts(born, consented, answers)
        except RuleError as e:
            raise InvalidInput(e.field, e.message) from e
        failures = evaluate_eligibility(criteria, facts)
        if failures:
            raise EligibilityRefused(
                [(f.criterion.id, f.criterion.text, f.reason) for f in failures]
            )
        self.trigger_event(
            Screened,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            facts=facts,
            criteria=[{"id": c.id, "kind": c.kind, "met": True} for c in criteria],
        )

    def enroll(
        self, study: StudyDefinition, arm: str, enrolled_on: date, envelope: Envelope,
        at: datetime,
    ) -> None:
        """Enroll the screened subject into an arm."""
        self._require_status("screened")
        at = require_aware("recorded_at", at)
        limits.check_text("arm", arm, limits.ID)
        if arm not in study.arms:
            raise InvalidInput("arm", f"must be one of {', '.join(study.arms)}")
        if enrolled_on < self._consent_dates()[1]:
            raise InvalidInput("enrolled_on", "is before consent")
        if enrolled_on > at.date():
            raise InvalidInput("enrolled_on", "is in the future")
        self.trigger_event(
            Enrolled, timestamp=at, envelope=envelope, arm=arm, enrolled_on=enrolled_on
        )

    def _consent_dates(self) -> tuple[date, date]:
        """Date of birth and consent date, which a consented subject has (an imported one
        may not, and is never screened or enrolled by command)."""
        if self.date_of_birth is None or self.consent_date is None:
            raise InvalidState(f"subject {self.subject_code} has no consent on record")
        return self.date_of_birth, self.consent_date
