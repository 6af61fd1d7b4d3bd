"""The dashboard's figures, counted by the database from the subject headers
(projections/dashboard.py)."""

from __future__ import annotations

from datetime import timedelta

from application.runtime import Runtime
from domain.envelope import Actor
from domain.studies import nct04397107
from infra.postgres import connect, schema_for_study
from projections.dashboard import overview
from tests.support import T0, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
MONITOR = Actor("u-mon", "Ana Ruiz", "monitor", "JLU1")


def test_open_queries_are_all_counted_and_the_oldest_listed(runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    enroll(app, "002", arm="STD")
    for code in ("001", "002"):
        app.on_subject(code, lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
    # Raised in this order: 002's Q2, then 001's Q1 and Q3 (Q3 closed again).
    for day, code, query in ((1, "002", "Q2"), (2, "001", "Q1"), (3, "001", "Q3")):
        clock.set(T0 + timedelta(days=day))
        app.on_subject(code, lambda s, t, q=query: s.open_query(
            q, "LB1", "value", f"check {q}", envelope(MONITOR), t))
    app.on_subject("001", lambda s, t: s.close_query("Q3", "fine", envelope(MONITOR), t))
    app.close()
    runtime.project(STUDY)
    with connect(runtime.url) as conn:
        glance = overview(conn, schema_for_study(STUDY), None, oldest=1)
        at_other_site = overview(conn, schema_for_study(STUDY), {"JLU2"})
    assert glance.open_query_count == 2
    assert [(q["subject"], q["query_id"], q["text"]) for q in glance.oldest_open_queries] == [
        ("002", "Q2", "check Q2")]
    assert glance.enrolment == {("JLU1", "IL2"): 1, ("JLU1", "STD"): 1}
    assert (glance.records, glance.verified) == (2, 0)
    assert glance.unsigned == ["001", "002"] and glance.invalidated == []
    assert at_other_site.open_query_count == 0 and at_other_site.enrolment == {}
