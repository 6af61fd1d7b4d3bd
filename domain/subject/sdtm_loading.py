"""A subject loaded from an SDTM data set: its DM row, then one record per row of its
other domains (the import goes through the application service; these are its rules)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Self

from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, Problem
from domain.identifiers import subject_code_problem
from domain.records import copy_json
from domain.sdtm import CheckedRow, check_row
from domain.study import StudyDefinition
from domain.subject.events import Imported, RowImported
from domain.subject.state import SEXES, SubjectState, subject_uuid

SCREEN_FAILURE_ARM = "Scrnfail"  # SDTM's ARMCD of a screened subject never randomised


class SdtmLoading(SubjectState):
    """The subject's commands of an SDTM load."""

    @classmethod
    def import_from_sdtm(
        cls,
        study: StudyDefinition,
        subject_code: str,
        site: str,
        sex: str,
        demographics: Mapping[str, Any],
        arm: str | None,
        actual_arm: str | None,
        enrolled_on: date | None,
        envelope: Envelope,
        at: datetime,
    ) -> Self:
        """Load a subject from its SDTM DM row. A screen failure (ARMCD ``Scrnfail``, or no
        reference start) is kept as a subject with status ``screen_failure``."""
        at = require_aware("recorded_at", at)
        problems = []
        if envelope.source != "import":
            problems.append(Problem("source", "an SDTM load is recorded with source 'import'"))
        if (code_problem := subject_code_problem("USUBJID", subject_code)) is not None:
            problems.append(code_problem)
        if site not in study.sites:
            problems.append(Problem("SITEID", f"unknown site {site!r}"))
        if sex not in SEXES:
            problems.append(Problem("SEX", f"must be one of {', '.join(SEXES)}"))
        for name, value in (("ARMCD", arm), ("ACTARMCD", actual_arm)):
            if value and value not in study.arms:
                problems.append(Problem(name, f"unknown arm {value!r}"))
        if problems:
            raise InvalidInput(problems=problems)
        screen_failure = arm == SCREEN_FAILURE_ARM or enrolled_on is None
        subject = cls._create(
            Imported,
            id=subject_uuid(study.study_id, subject_code),
            timestamp=at,
            envelope=envelope,
            study_id=study.study_id,
            subject_code=subject_code.strip(),
            site=site,
            sex=sex,
            demographics=copy_json(dict(demographics)),
            arm=arm or None,
            actual_arm=actual_arm or None,
            status="screen_failure" if screen_failure else "enrolled",
            enrolled_on=enrolled_on,
        )
        subject.protocol = study
        return subject

    def import_record(self, study: StudyDefinition, record_id: str, row: CheckedRow,
                      observed_at: datetime, visit: str | None, envelope: Envelope,
                      at: datetime) -> None:
        """Load one SDTM row as a record of its domain. The row was checked by
        :func:`domain.sdtm.check_row`; against another declaration than the study's own
        SDTM vocabulary, it is checked again. A screen failure's rows are loaded too."""
        if envelope.source != "import":
            raise InvalidInput("source", "an SDTM load is recorded with source 'import'")
        if row.declaration is not study.sdtm:
            row = check_row(row.kind, row.fields, study.sdtm)
        envelope = self._check_editable(envelope)
        if not record_id or not record_id.strip():
            raise InvalidInput("record_id", "is required")
        if record_id in self.records:
            raise InvalidInput("record_id", f"record {record_id!r} already exists")
        observed = self._valid_time(observed_at, at)
        self.trigger_event(RowImported, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, record_id=record_id, kind=row.kind,
                           observed_at=observed, visit=visit, fields=row.fields, derived={})
