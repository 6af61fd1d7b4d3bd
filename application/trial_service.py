"""The trial service: the one front door of every write, whoever the caller.

HTTP routes, the CLI, the SDTM import and the demo simulation hand it a command
(:mod:`domain.commands`) and the :class:`~domain.caller.Caller`; it decides, once for all of
them: the caller's permission (role x study x site, a data manager's medical coding
included), the envelope (who, through what, edit point, reason), the record's kind, the
visit schedule, and re-authentication for e-signatures; then it runs the command through the
study's application, which refuses writes to a locked study or casebook, a stale
``expected_version``, and every change without its reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, overload

from domain.blinding import Mask
from domain.caller import Caller
from domain.commands import (
    ACTIONS,
    AdministerDose,
    AnswerQuery,
    ApproveRedaction,
    ChangeTherapy,
    CloseQuery,
    Complete,
    CorrectRecord,
    EnrolSubject,
    LockCasebook,
    LockStudy,
    OpenQuery,
    RecordAssessment,
    RecordDeviation,
    RecordLabResult,
    RecordVitalSigns,
    RegisterStudy,
    RemoveRecord,
    ReportAdverseEvent,
    RequestRedaction,
    ResolveAdverseEvent,
    SignCasebook,
    SignOffAuditReview,
    StartTherapy,
    StopTherapy,
    StudyCommand,
    SubjectCommand,
    UnblindSubject,
    UnlockCasebook,
    UnlockStudy,
    UpdateAdverseEvent,
    VerifySource,
    Withdraw,
)
from domain.envelope import Envelope, Reason
from domain.errors import Forbidden, InvalidInput, Locked, NotFound
from domain.permissions import CODING_FIELDS, Action
from domain.review import review_filter
from domain.service import StudyApplication
from domain.study import Study, StudyDefinition, study_uuid
from domain.subject import Subject
from domain.user import Grant


class ImportedCasebook(Protocol):
    """What the import's checks ask of a casebook: a stored subject, or one a worker
    process is about to build."""

    @property
    def subject_code(self) -> str: ...

    @property
    def site(self) -> str: ...

    @property
    def locked(self) -> bool: ...


class Studies(Protocol):
    """Where the service finds each study's application (the runtime)."""

    def has_study(self, study_id: str) -> bool:
        """True if the deployment holds ``study_id``."""

    def study(self, study_id: str) -> StudyApplication:
        """The study's application (opened, and its store created, on first use)."""

    def opened_study(self, study_id: str) -> StudyApplication | None:
        """The study's application if it is open already (no I/O), else None."""


class Reauthenticator(Protocol):
    """Checks a signer's username and password again, and records the attempt."""

    def reauthenticate(self, username: str, password: str, totp: str | None,
                       envelope: Envelope) -> None:
        """Return if the password (and the TOTP code, when the person's second factor is
        asked for) are the person's; else raise
        :class:`~domain.errors.Unauthenticated`. Either way the attempt is recorded under
        ``envelope``."""


class Shredder(Protocol):
    """Carries out an approved redaction outside the events (the runtime)."""

    def shred(self, study_id: str, subject: Subject, request_id: str) -> None:
        """Destroy the keys of the values redaction ``request_id`` of ``subject`` covers,
        and purge the read side of them."""


class TrialService:
    """Runs every command of every study on behalf of its caller."""

    def __init__(self, studies: Studies, reauthenticator: Reauthenticator,
                 shredder: Shredder | None = None) -> None:
        self._studies = studies
        self._reauthenticator = reauthenticator
        self._shredder = shredder

    # --- the doors ---------------------------------------------------------------------

    @overload
    def handle(self, command: SubjectCommand | EnrolSubject, caller: Caller) -> Subject: ...

    @overload
    def handle(self, command: StudyCommand, caller: Caller) -> Study: ...

    def handle(self, command: SubjectCommand | EnrolSubject | StudyCommand,
               caller: Caller) -> Subject | Study:
        """Run ``command`` for ``caller``; return the casebook or study as it now stands.

        Raises the refusal: :class:`~domain.errors.Forbidden`, ``Unauthenticated``,
        ``NotFound``, ``InvalidInput`` (naming the field), ``Locked``, ``StaleVersion``...
        """
        if isinstance(command, SubjectCommand):
            app = self.study_app(command.study)
            if isinstance(command, SignCasebook):
                self._reauthenticate(app, command, caller)
            if isinstance(command, ApproveRedaction):
                return self._approve_redaction(app, command, caller)
            may_act, run = self._write(app, command, caller)
            return app.on_subject(command.subject, run,
                                  expected_version=command.expected_version, may_act=may_act)
        if isinstance(command, EnrolSubject):
            return self._enrol(command, caller)
        return self._on_study(command, caller)

    async def handle_async(self, command: SubjectCommand, caller: Caller) -> Subject:
        """:meth:`handle` for an event loop: when the study and subject are cached here, the
        checks and the command run on the loop, and the loop serves other requests while the
        commit is under way; what has to read the store runs in a worker thread."""
        if isinstance(command, SignCasebook | ApproveRedaction):
            # Re-authentication reads and writes the store; a redaction destroys keys and
            # rebuilds the read tables.
            return await asyncio.to_thread(self.handle, command, caller)
        app = self._studies.opened_study(command.study)
        if app is None or not app.is_cached(study_uuid(command.study)):
            app = await asyncio.to_thread(self._cached_study_app, command.study)
        may_act, run = self._write(app, command, caller)
        return await app.on_subject_async(command.subject, run,
                                          expected_version=command.expected_version,
                                          may_act=may_act)

    def import_subjects(self, app: StudyApplication, caller: Caller,
                        subjects: Sequence[Subject],
                        store: Callable[[Sequence[Subject]], None] | None = None) -> None:
        """Store the new events of many subjects a bulk load built (an SDTM import) in one
        batch, after the checks every other write gets: the caller's grant to enter data
        at each subject's site, and no lock on the study or on any of the casebooks.
        ``store`` (e.g. a bulk writer) stores the batch, else the application does."""
        self.check_import(app, caller, subjects)
        (store or app.save_imported)(subjects)

    def check_import(self, app: StudyApplication, caller: Caller,
                     subjects: Sequence[ImportedCasebook] = ()) -> None:
        """Refuse an import into ``app`` by ``caller`` of ``subjects`` (none: the import as
        a whole) as :meth:`import_subjects` would, storing nothing."""
        caller.grant_for(Action.IMPORT, app.study_id, None)
        if app.is_registered() and app.study().locked:
            raise Locked(f"study {app.study_id} is locked")
        for subject in subjects:
            caller.grant_for(Action.IMPORT, app.study_id, subject.site)
            if subject.locked:
                raise Locked(f"subject {subject.subject_code} is locked")

    def study_app(self, study_id: str) -> StudyApplication:
        """The application of a study the deployment holds, else :class:`NotFound`."""
        if not self._studies.has_study(study_id):
            raise NotFound(f"no study {study_id}")
        return self._studies.study(study_id)

    # --- the rules -----------------------------------------------------------------------

    def _cached_study_app(self, study_id: str) -> StudyApplication:
        app = self.study_app(study_id)
        app.definition()  # caches the study
        return app

    def _write(self, app: StudyApplication, command: SubjectCommand, caller: Caller
               ) -> tuple[Callable[[Subject], Grant], Callable[[Subject, datetime], None]]:
        """The permission check and the command of a casebook write by ``caller``."""
        study = app.study_id

        def may_act(subject: Subject) -> Grant:
            return caller.grant_for(_action(command, caller, study, subject.site), study,
                                    subject.site)

        def run(subject: Subject, at: datetime) -> None:
            grant = may_act(subject)
            envelope = caller.envelope(grant, _reason(command))
            _perform(command, subject, envelope, at, app.definition(), caller, grant)

        return may_act, run

    def _approve_redaction(self, app: StudyApplication, command: ApproveRedaction,
                           caller: Caller) -> Subject:
        """Record the approval, then carry it out: a key is never destroyed without its
        approval in the audit trail. Approving a request already approved carries it out
        again (the keys outlive a recorded approval if the process stopped between)."""
        if self._shredder is None:
            raise InvalidInput("request_id", "this deployment cannot destroy keys")
        subject = app.subject(command.subject)
        request = subject.redactions.get(command.request_id)
        if request is not None and request["status"] == "approved":
            caller.grant_for(Action.APPROVE_REDACTION, app.study_id, subject.site)
        else:
            may_act, run = self._write(app, command, caller)
            subject = app.on_subject(command.subject, run,
                                     expected_version=command.expected_version,
                                     may_act=may_act)
        self._shredder.shred(command.study, subject, command.request_id)
        return subject

    def _reauthenticate(self, app: StudyApplication, command: SignCasebook,
                        caller: Caller) -> None:
        """Part 11: a signature is its signer's own, and the password is entered again."""
        grant = caller.grant_for(Action.SIGN, app.study_id, app.subject(command.subject).site)
        if command.username.casefold() != caller.username.casefold():
            raise Forbidden("a signature is its signer's own: the username must be the "
                            "caller's")
        self._reauthenticator.reauthenticate(command.username, command.password, command.totp,
                                             caller.envelope(grant))

    def _enrol(self, command: EnrolSubject, caller: Caller) -> Subject:
        app = self.study_app(command.study)
        grant = caller.grant_for(Action.ENTER, command.study, command.site)
        app.enroll_subject(command.subject, command.site, command.date_of_birth, command.sex,
                           command.disease, command.consent_date, command.screening_answers,
                           command.arm, command.enrolled_on, caller.envelope(grant))
        return app.subject(command.subject)

    def mask_for(self, caller: Caller, study_id: str) -> Mask | None:
        """What ``caller`` must be shown masked at the study (None: nothing; an open study, or
        a person holding no blinded role there). The masking follows from two recorded
        facts, the study's blinding declaration and the person's grants (both in ledgers),
        so a masked read writes no event of its own."""
        study = self.study_app(study_id).study()
        blinding = study.definition.blinding
        roles = {g.role for g in caller.grants if g.study in ("*", study_id)}
        if blinding is None or not blinding.blinds(roles):
            return None
        return Mask(blinding.items, frozenset(
            code for code, users in study.unblinded.items() if caller.user_id in users))

    def _unblind(self, command: UnblindSubject, caller: Caller) -> Study:
        """Unblind one subject to the caller: a role the study declares may unblind, at the
        subject's site, with a reason."""
        app = self.study_app(command.study)
        site = app.subject(command.subject).site
        grant = caller.grant_for(Action.UNBLIND, command.study, site)
        blinding = app.study().definition.blinding
        if blinding is not None and grant.role not in blinding.unblinding_roles:
            raise Forbidden(f"study {command.study} lets only "
                            f"{', '.join(sorted(blinding.unblinding_roles)) or 'no role'} "
                            "unblind a subject")
        envelope = caller.envelope(grant, command.reason)
        app.on_study(lambda s, t: s.unblind_subject(command.subject, envelope, t))
        return app.study()

    def _on_study(self, command: StudyCommand, caller: Caller) -> Study:
        if isinstance(command, UnblindSubject):
            return self._unblind(command, caller)
        grant = caller.grant_for(ACTIONS[type(command)], command.study, None)
        if isinstance(command, RegisterStudy):
            app = self._studies.study(command.study)
            app.register_study(dict(command.definition), caller.envelope(grant))
            return app.study()
        app = self.study_app(command.study)
        envelope = caller.envelope(grant, _reason(command))
        if isinstance(command, LockStudy):
            app.on_study(lambda s, t: s.lock(envelope, t))
        elif isinstance(command, UnlockStudy):
            app.on_study(lambda s, t: s.unlock(envelope, t))
        elif isinstance(command, SignOffAuditReview):
            last = app.recorder.max_notification_id() or 0
            review = (None if command.review is None else review_filter(
                command.review, app.study().definition.review, command.late_days,
                command.min_changes))
            app.on_study(lambda s, t: s.review_audit_trail(
                command.through_position, command.comment, envelope, t, last_position=last,
                review=review))
        return app.study()


def _action(command: SubjectCommand, caller: Caller, study: str, site: str) -> Action:
    """What ``command`` asks to do: a correction of an adverse event's medical coding by
    someone who may not enter data at the site is coding (a data manager's)."""
    if (isinstance(command, CorrectRecord) and command.kind == "adverse-events"
            and command.field in CODING_FIELDS and not caller.holds(Action.ENTER, study, site)):
        return Action.CODE
    return ACTIONS[type(command)]


def _reason(command: SubjectCommand | StudyCommand) -> Reason | None:
    reason = getattr(command, "reason", None)
    return reason if isinstance(reason, Reason) else None


def _in_schedule(definition: StudyDefinition, visit: str | None) -> None:
    """A visit named on a record is one of the study's schedule."""
    if visit is None:
        return
    visits = [v.code for v in definition.visits]
    if visit not in visits:
        raise InvalidInput("visit", f"must be one of {', '.join(visits)}")


def _of_kind(subject: Subject, kind: str, record_id: str) -> None:
    """The record a correction or removal names is of the kind its route names."""
    record = subject.records.get(record_id)
    if record is None or record.kind != kind:
        raise NotFound(f"no {kind} record {record_id!r} for subject {subject.subject_code}")


def _perform(command: SubjectCommand, s: Subject, env: Envelope, at: datetime,
             definition: StudyDefinition, caller: Caller, grant: Grant) -> None:
    """Run ``command`` on the casebook ``s`` under ``env`` at recorded time ``at``."""
    match command:
        case RecordVitalSigns():
            _in_schedule(definition, command.visit)
            s.record_vital_signs(command.record_id, command.observed_at, command.measurements,
                                 env, at, command.visit)
        case AdministerDose():
            _in_schedule(definition, command.visit)
            s.administer_dose(command.record_id, command.observed_at, command.drug,
                              command.dose, command.unit, command.route, env, at, command.visit,
                              frequency=command.frequency)
        case StartTherapy():
            s.start_therapy(command.record_id, command.observed_at, command.drug,
                            command.category, command.dose_mg_per_day, command.route, env, at,
                            dose_mg=command.dose_mg, frequency=command.frequency)
        case RecordLabResult():
            _in_schedule(definition, command.visit)
            s.record_lab_result(command.record_id, command.observed_at, command.code,
                                command.value, command.unit, env, at, command.reference_low,
                                command.reference_high, command.visit)
        case RecordAssessment():
            _in_schedule(definition, command.visit)
            if command.instrument == "SLEDAI":
                s.record_sledai(command.record_id, command.observed_at,
                                {k: bool(v) for k, v in command.items.items()}, env, at,
                                command.visit)
            else:
                s.record_essdai(command.record_id, command.observed_at,
                                {k: int(v) for k, v in command.items.items()}, env, at,
                                command.visit)
        case ReportAdverseEvent():
            s.report_adverse_event(command.record_id, command.observed_at,
                                   dict(command.details), env, at)
        case ChangeTherapy():
            s.change_therapy(command.record_id, command.observed_at, command.dose_mg_per_day,
                             env, at, dose_mg=command.dose_mg)
        case StopTherapy():
            s.stop_therapy(command.record_id, command.observed_at, env, at)
        case UpdateAdverseEvent():
            s.update_adverse_event(command.record_id, command.observed_at,
                                   dict(command.changes), env, at)
        case ResolveAdverseEvent():
            s.resolve_adverse_event(command.record_id, command.observed_at, command.outcome,
                                    env, at)
        case CorrectRecord():
            _of_kind(s, command.kind, command.record_id)
            if command.query_id is not None:
                s.correct_in_answer(command.query_id, command.record_id, command.field,
                                    command.value, env, at)
            else:
                s.correct(command.record_id, command.field, command.value, env, at)
        case RemoveRecord():
            _of_kind(s, command.kind, command.record_id)
            s.remove(command.record_id, env, at)
        case Withdraw():
            s.withdraw(command.observed_at, command.withdrawal_reason, env, at)
        case Complete():
            s.complete(command.observed_at, env, at)
        case SignCasebook():
            s.sign(command.signature_id, command.meaning, definition.signature_meanings,
                   caller.actor(grant), env, at)
        case OpenQuery():
            s.open_query(command.query_id, command.record_id, command.field, command.text,
                         env, at)
        case AnswerQuery():
            s.answer_query(command.query_id, command.text, env, at)
        case CloseQuery():
            s.close_query(command.query_id, command.text, env, at)
        case VerifySource():
            s.verify_source(command.record_id, env, at)
        case RecordDeviation():
            s.record_deviation(command.deviation_id, command.category, command.description,
                               command.occurred_on, command.severity, env, at,
                               command.record_id)
        case LockCasebook():
            s.lock(env, at)
        case UnlockCasebook():
            s.unlock(env, at)
        case RequestRedaction():
            s.request_redaction(command.request_id, command.record_id, command.field,
                                definition.identifying, env, at)
        case ApproveRedaction():
            s.approve_redaction(command.request_id, env, at)
        case _:
            raise TypeError(f"no handler for {type(command).__name__}")
