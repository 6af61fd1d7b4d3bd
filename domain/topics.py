"""Stored event names: what the log calls each aggregate and event class, now and before.

Every aggregate and event class declares ``TOPIC``, an explicit, versioned name
(``Subject.RecordCorrected.v1``) that eventsourcing stores and signs instead of the class's
module path, so moving or renaming Python code never changes the storage format. Logs written
before these names (up to commit 69e9d0d) hold module paths; :data:`LEGACY_TOPICS` maps each to
the name of the class it meant, so those logs keep decoding wherever the code moves.

Never edit a name once stored: an event whose shape changes gets a new class with a new name
(``….v2``), and the old class stays to decode the old events.
"""

from __future__ import annotations

from eventsourcing.utils import register_topic, resolve_topic

from domain.keyring import Keyring
from domain.sign_in_log import SignInLog
from domain.study import Study
from domain.subject import Subject
from domain.user import ApiClient, User

AGGREGATES = (Subject, Study, User, ApiClient, Keyring, SignInLog)

# Module-path topics as stored before the explicit names -> the explicit name of their class.
LEGACY_TOPICS: dict[str, str] = {
    "domain.subject:Subject": "Subject.v1",
    "domain.subject:Subject.Consented": "Subject.Consented.v1",
    "domain.subject:Subject.Imported": "Subject.Imported.v1",
    "domain.subject:Subject.Screened": "Subject.Screened.v1",
    "domain.subject:Subject.Enrolled": "Subject.Enrolled.v1",
    "domain.subject:Subject.RecordEntered": "Subject.RecordEntered.v1",
    "domain.subject:Subject.VitalSignsRecorded": "Subject.VitalSignsRecorded.v1",
    "domain.subject:Subject.DoseAdministered": "Subject.DoseAdministered.v1",
    "domain.subject:Subject.TherapyStarted": "Subject.TherapyStarted.v1",
    "domain.subject:Subject.LabResultRecorded": "Subject.LabResultRecorded.v1",
    "domain.subject:Subject.AssessmentRecorded": "Subject.AssessmentRecorded.v1",
    "domain.subject:Subject.AdverseEventReported": "Subject.AdverseEventReported.v1",
    "domain.subject:Subject.RowImported": "Subject.RowImported.v1",
    "domain.subject:Subject.RecordChanged": "Subject.RecordChanged.v1",
    "domain.subject:Subject.TherapyChanged": "Subject.TherapyChanged.v1",
    "domain.subject:Subject.TherapyStopped": "Subject.TherapyStopped.v1",
    "domain.subject:Subject.AdverseEventUpdated": "Subject.AdverseEventUpdated.v1",
    "domain.subject:Subject.AdverseEventResolved": "Subject.AdverseEventResolved.v1",
    "domain.subject:Subject.RecordCorrected": "Subject.RecordCorrected.v1",
    "domain.subject:Subject.RecordRemoved": "Subject.RecordRemoved.v1",
    "domain.subject:Subject.Withdrawn": "Subject.Withdrawn.v1",
    "domain.subject:Subject.Completed": "Subject.Completed.v1",
    "domain.subject:Subject.SubjectLocked": "Subject.SubjectLocked.v1",
    "domain.subject:Subject.SubjectUnlocked": "Subject.SubjectUnlocked.v1",
    "domain.subject:Subject.Signed": "Subject.Signed.v1",
    "domain.subject:Subject.QueryOpened": "Subject.QueryOpened.v1",
    "domain.subject:Subject.QueryAnswered": "Subject.QueryAnswered.v1",
    "domain.subject:Subject.QueryClosed": "Subject.QueryClosed.v1",
    "domain.subject:Subject.SourceVerified": "Subject.SourceVerified.v1",
    "domain.study:Study": "Study.v1",
    "domain.study:Study.Registered": "Study.Registered.v1",
    "domain.study:Study.StudyLocked": "Study.StudyLocked.v1",
    "domain.study:Study.StudyUnlocked": "Study.StudyUnlocked.v1",
    "domain.study:Study.AuditTrailReviewed": "Study.AuditTrailReviewed.v1",
    "domain.study:Study.ExportRecorded": "Study.ExportRecorded.v1",
    "domain.user:User": "User.v1",
    "domain.user:User.Registered": "User.Registered.v1",
    "domain.user:User.IdentityVerified": "User.IdentityVerified.v1",
    "domain.user:User.RoleGranted": "User.RoleGranted.v1",
    "domain.user:User.RoleRevoked": "User.RoleRevoked.v1",
    "domain.user:User.PasswordChanged": "User.PasswordChanged.v1",
    "domain.user:User.LoggedIn": "User.LoggedIn.v1",
    "domain.user:User.LoginFailed": "User.LoginFailed.v1",
    "domain.user:User.LockedOut": "User.LockedOut.v1",
    "domain.user:User.Unlocked": "User.Unlocked.v1",
    "domain.user:User.Deactivated": "User.Deactivated.v1",
    "domain.user:ApiClient": "ApiClient.v1",
    "domain.user:ApiClient.Registered": "ApiClient.Registered.v1",
    "domain.user:ApiClient.Revoked": "ApiClient.Revoked.v1",
    "domain.keyring:Keyring": "Keyring.v1",
    "domain.keyring:Keyring.Opened": "Keyring.Opened.v1",
    "domain.keyring:Keyring.KeyRegistered": "Keyring.KeyRegistered.v1",
    "domain.keyring:Keyring.KeyRetired": "Keyring.KeyRetired.v1",
    "domain.keyring:Keyring.KeyRevoked": "Keyring.KeyRevoked.v1",
}


def stored_names(cls: type) -> tuple[str, ...]:
    """Every name under which events of ``cls`` may be stored: its own, then legacy ones
    (for selecting a class's events from a log of any age)."""
    own = str(vars(cls)["TOPIC"])
    return (own, *(old for old, new in LEGACY_TOPICS.items() if new == own))


def _register_legacy_topics() -> None:
    # Explicit names are registered by eventsourcing when the classes are defined (imported
    # above); a legacy name then resolves to the same class without importing its old module.
    for old, new in LEGACY_TOPICS.items():
        register_topic(old, resolve_topic(new))


_register_legacy_topics()
