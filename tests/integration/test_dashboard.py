"""The dashboard's figures, counted by the database from the subject headers
(projections/dashboard.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from application.runtime import Runtime
from domain.envelope import Actor, Reason
from domain.service import StudyApplication
from domain.studies import nct04397107
from infra.postgres import connect, schema_for_study
from projections.dashboard import Overview, overview
from projections.history_view import OPEN_QUERIES, SUMMARIES, SUMMARY_KEYS
from projections.oracle import oracle_casebooks
from projections.queries import subject_list
from tests.support import DATA_MANAGER, T0, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
MONITOR = Actor("u-mon", "Ana Ruiz", "monitor", "JLU1")
SCHEMA = schema_for_study(STUDY)


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


INVESTIGATOR = Actor("u-pi", "Dr Wang Fang", "investigator", "JLU1")
FIX = envelope(DATA_MANAGER, Reason("data_entry_error", "checked against source"))


def _from_casebooks(books: list[dict[str, Any]], sites: set[str] | None,
                    oldest: int) -> Overview:
    """The overview as computed from whole casebooks (the fold's): what the kept summaries
    and open queries must agree with."""
    out = Overview()
    opened = []
    for book in books:
        if sites is not None and book["site"] not in sites:
            continue
        key = (str(book["site"]), str(book["arm"]))
        out.enrolment[key] = out.enrolment.get(key, 0) + 1
        out.records += sum(len(views) for views in book["records"].values())
        out.verified += len(book["sdv"])
        statuses = {s["status"] for s in book["signatures"].values()}
        if "valid" not in statuses:
            (out.invalidated if "invalidated" in statuses else out.unsigned).append(
                book["subject"])
        for query_id, query in book["queries"].items():
            if query["status"] != "closed":
                out.open_query_count += 1
                opened.append({"subject": book["subject"], "query_id": query_id, **query})
    opened.sort(key=lambda q: (q["opened_at"].encode(), q["subject"].encode(),
                               q["query_id"].encode()))
    out.oldest_open_queries = opened[:oldest]
    return out


def _agree(runtime: Runtime, app: StudyApplication) -> None:
    books = oracle_casebooks(app)
    listed = [{**{k: book.get(k) for k in SUMMARY_KEYS}, "version": book["version"]}
              for book in books]
    with connect(runtime.url) as conn:
        for sites in (None, {"JLU1"}, {"JLU2"}):
            for oldest in (2, 50):
                assert overview(conn, SCHEMA, sites, oldest) == _from_casebooks(books, sites,
                                                                                oldest)
        assert subject_list(conn, SCHEMA, None) == listed
        assert subject_list(conn, SCHEMA, {"JLU2"}) == []


def _kept(runtime: Runtime) -> tuple[list[Any], list[Any]]:
    with connect(runtime.url) as conn:
        return (conn.execute(f'SELECT * FROM "{SCHEMA}".{SUMMARIES} ORDER BY 1').fetchall(),
                conn.execute(f'SELECT * FROM "{SCHEMA}".{OPEN_QUERIES} ORDER BY 1, 2')
                .fetchall())


def test_kept_summaries_agree_with_the_casebooks_as_they_change_and_after_a_rebuild(
        runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    for code, arm in (("001", "IL2"), ("002", "STD"), ("003", "IL2")):
        enroll(app, code, arm=arm)
        for record in ("LB1", "LB2"):
            app.on_subject(code, lambda s, t, r=record: s.record_lab_result(
                r, T0, "C3", 0.8, "g/L", envelope(), t))
    meanings = app.definition().signature_meanings
    steps: list[tuple[str, Callable[[Any, datetime], None]]] = [
        ("002", lambda s, t: s.remove("LB2", FIX, t)),
        ("001", lambda s, t: s.open_query("Q1", "LB1", "value", "check", envelope(MONITOR), t)),
        ("002", lambda s, t: s.open_query("Q4", "LB1", "value", "check", envelope(MONITOR), t)),
        ("001", lambda s, t: s.open_query("Q2", "LB2", "value", "why", envelope(MONITOR), t)),
        ("001", lambda s, t: s.answer_query("Q2", "as measured", envelope(), t)),
        ("001", lambda s, t: s.open_query("Q3", "LB2", "unit", "unit?", envelope(MONITOR), t)),
        ("001", lambda s, t: s.close_query("Q3", "fine", envelope(MONITOR), t)),
        ("001", lambda s, t: s.verify_source("LB1", envelope(MONITOR), t)),
        ("003", lambda s, t: s.verify_source("LB2", envelope(MONITOR), t)),
        ("001", lambda s, t: s.sign("SIG1", "approval", meanings, INVESTIGATOR,
                                    envelope(INVESTIGATOR), t)),
        ("003", lambda s, t: s.sign("SIG1", "approval", meanings, INVESTIGATOR,
                                    envelope(INVESTIGATOR), t)),
        # A signed casebook changed: its signature is invalidated.
        ("003", lambda s, t: s.correct("LB1", "value", 0.9, FIX, t)),
        ("001", lambda s, t: s.close_query("Q1", "resolved", envelope(MONITOR), t)),
    ]
    runtime.project(STUDY)
    _agree(runtime, app)
    for day, (code, step) in enumerate(steps, start=1):
        # Two queries opened at the same time are listed by subject.
        clock.set(T0 + timedelta(days=min(day, 3)))
        app.on_subject(code, step)
        if day % 3 == 0:  # some changes projected one by one, some in one batch
            runtime.project(STUDY)
            _agree(runtime, app)
    runtime.project(STUDY)
    _agree(runtime, app)
    kept = _kept(runtime)
    assert kept[0] and kept[1]
    runtime.project(STUDY, rebuild=True)
    assert _kept(runtime) == kept
    _agree(runtime, app)
    app.close()
