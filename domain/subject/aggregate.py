"""The ``Subject`` aggregate: a subject's casebook, one consistency boundary for its records,
status and lock.

Nothing is updated in place. A correction is an event naming the record, the field, the old
and new value, and the reason; a removal is an event too, and the removed value stays in history.

Where each rule lives (one module per concern, each a part of ``Subject``):

- :mod:`~domain.subject.events` what is stored, and how each event changes the subject;
- :mod:`~domain.subject.state` what a subject holds, its id, and the guards every command
  shares (status, lock and post-lock edit point, an existing record, a valid time);
- :mod:`~domain.subject.enrolment` consent, screening, enrolment;
- :mod:`~domain.subject.sdtm_loading` a subject and its rows loaded from SDTM;
- :mod:`~domain.subject.entries` first entries of records (vitals, doses, therapies, labs,
  assessments, adverse events);
- :mod:`~domain.subject.changes` changes to a record: therapy and adverse-event evolution,
  corrections, removals, the reasons they need;
- :mod:`~domain.subject.soft_checks` soft checks, their queries, protocol deviations;
- :mod:`~domain.subject.derivations` the BSA in force, values re-derived when it moves;
- :mod:`~domain.subject.monitoring` e-signatures, queries, source-data verification;
- :mod:`~domain.subject.participation` withdrawal, completion, locks;
- :mod:`~domain.subject.redaction` two-person redaction of identifying values.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate

from domain.subject import events
from domain.subject.changes import RecordChanges
from domain.subject.enrolment import Enrolment
from domain.subject.entries import RecordEntries
from domain.subject.monitoring import Monitoring
from domain.subject.participation import Participation
from domain.subject.redaction import Redactions
from domain.subject.sdtm_loading import SdtmLoading


# The command classes are plain classes, not aggregates: eventsourcing defines and registers
# nothing of theirs. Monitoring builds on RecordChanges (a query answered by a correction), so
# comes before it.
class Subject(Enrolment, SdtmLoading, RecordEntries, Monitoring, RecordChanges, Participation,
              Redactions, Aggregate):
    """One child in the study: consent, screening, enrollment, records, withdrawal, lock."""
    TOPIC = "Subject.v1"

    # The events (domain/subject/events.py), by concern. Named here, they are the aggregate's
    # own: eventsourcing registers their stored names (TOPIC) and finds the creation events.
    Event = events.Event
    Created = events.Created
    # consent, screening, enrolment; a subject loaded from SDTM
    Consented = events.Consented
    Imported = events.Imported
    Screened = events.Screened
    Enrolled = events.Enrolled
    # first entries of records
    RecordEntered = events.RecordEntered
    VitalSignsRecorded = events.VitalSignsRecorded
    DoseAdministered = events.DoseAdministered
    TherapyStarted = events.TherapyStarted
    LabResultRecorded = events.LabResultRecorded
    AssessmentRecorded = events.AssessmentRecorded
    AdverseEventReported = events.AdverseEventReported
    RowImported = events.RowImported
    # changes to recorded records
    RecordChanged = events.RecordChanged
    TherapyChanged = events.TherapyChanged
    TherapyStopped = events.TherapyStopped
    AdverseEventUpdated = events.AdverseEventUpdated
    AdverseEventResolved = events.AdverseEventResolved
    RecordCorrected = events.RecordCorrected
    RecordRemoved = events.RecordRemoved
    # derived values following their inputs; soft checks and protocol deviations
    DerivedValueRecomputed = events.DerivedValueRecomputed
    RecordChecked = events.RecordChecked
    DeviationRecorded = events.DeviationRecorded
    # end of participation, locks
    Withdrawn = events.Withdrawn
    Completed = events.Completed
    SubjectLocked = events.SubjectLocked
    SubjectUnlocked = events.SubjectUnlocked
    # signatures, queries, source-data verification
    Signed = events.Signed
    QueryOpened = events.QueryOpened
    QueryAnswered = events.QueryAnswered
    QueryClosed = events.QueryClosed
    SourceVerified = events.SourceVerified
    # redaction of identifying values entered by mistake
    RedactionRequested = events.RedactionRequested
    RedactionApproved = events.RedactionApproved
