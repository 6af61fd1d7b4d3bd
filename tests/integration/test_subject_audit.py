"""The audit trail names every change to a subject's own data (status, arm, lock), not only
the first: the header before an event is taken before the event is folded into it."""

from __future__ import annotations

import psycopg
import pytest

from application.runtime import Runtime
from domain.envelope import Reason
from domain.studies import nct04397107
from infra.postgres import schema_for_study
from projections.queries import AuditQuery, audit_page
from tests.support import DATA_MANAGER, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID


@pytest.mark.requirement("R4", "R11")
def test_screening_enrollment_and_lock_are_in_the_audit_trail(runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001", arm="STD")
    lock = envelope(DATA_MANAGER, Reason("database_lock", "interim lock"))
    app.on_subject("001", lambda s, t: s.lock(lock, t))
    app.close()
    runtime.project(STUDY)
    with psycopg.connect(runtime.url) as conn:
        entries = audit_page(conn, schema_for_study(STUDY),
                             AuditQuery({"subject_code": "001"}), limit=1000)["entries"]
    changes = {(e["event_type"], e["field"]): (e["old_value"], e["new_value"]) for e in entries}
    assert changes[("Screened", "status")] == ("consented", "screened")
    assert changes[("Enrolled", "status")] == ("screened", "enrolled")
    assert changes[("Enrolled", "arm")] == (None, "STD")
    assert changes[("SubjectLocked", "locked")] == (False, True)
