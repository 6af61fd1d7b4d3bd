"""Who is enrolled where: subjects by arm and disease, read from the event log."""

from __future__ import annotations

from collections import Counter
from uuid import UUID

from domain.service import StudyApplication
from domain.subject import Subject
from domain.topics import stored_names


def enrollment_counts(app: StudyApplication) -> Counter[tuple[str, str]]:
    """Number of enrolled subjects per (arm, disease)."""
    disease: dict[UUID, str] = {}
    arm: dict[UUID, str] = {}
    topics = [*stored_names(Subject.Consented), *stored_names(Subject.Enrolled)]
    start = 1
    while batch := app.recorder.select_notifications(start, 1000, topics=topics):
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, Subject.Consented):
                disease[event.originator_id] = event.disease
            elif isinstance(event, Subject.Enrolled):
                arm[event.originator_id] = event.arm
        start = batch[-1].id + 1
    return Counter((arm[sid], disease[sid]) for sid in arm)
