"""A large event never stalls the store, on the embedded PostgreSQL as on a server.

Written below the HTTP limits and the commands' field checks (the events are triggered
directly), so it holds whatever those limits become: whatever value is accepted, storing it
must not hang while holding the study's events-table lock. A 1 MB event used to stall in
psycopg's pipeline sync on the embedded server's Unix socket (psycopg #685).
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from application.runtime import Runtime
from domain.studies import nct04397107
from domain.subject import Subject
from infra.postgres import embedded_postgres, temporary_database
from infra.settings import Settings
from tests.support import (
    T0,
    correction,
    enroll,
    envelope,
    study_with_a_child,
)

MEGABYTE = "x" * 1_000_000
# What "answered" means here: a stalled write never returns at all; a stored one takes well
# under a second. Generous, so a loaded machine does not fail the test.
STALL_BOUND = 30.0


@pytest.fixture(scope="module")
def embedded_url() -> Iterator[str]:
    """A PostgreSQL of this module's own, embedded (Unix socket), as the README's default."""
    with tempfile.TemporaryDirectory(prefix="tl-large-") as home, \
            embedded_postgres(Path(home) / "pgdata") as url:
        yield url


@pytest.fixture(params=["server", "embedded"])
def large_runtime(request: pytest.FixtureRequest, server_url: str, tmp_path: Path
                  ) -> Iterator[Runtime]:
    """A server's runtime (group commit on) on a fresh database of either PostgreSQL, with
    child 001 enrolled and lab LB1 entered."""
    url = server_url if request.param == "server" else request.getfixturevalue("embedded_url")
    with temporary_database(url, "tl_test") as db_url:
        # A watchdog far beyond the bound: the test sees a stall, not the watchdog's cure.
        runtime = Runtime(Settings(database_url=db_url, home=tmp_path / "home",
                                   commit_timeout=600), db_url)
        try:
            study_with_a_child(runtime, lab=True)
            runtime.commit_in_groups()
            yield runtime
        finally:
            runtime.close()


def _within_bound(write: Callable[[], object]) -> None:
    """Run ``write``; fail (rather than hang) if it does not return within the bound."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            write()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STALL_BOUND)
    assert not thread.is_alive(), f"the write did not return within {STALL_BOUND} s"
    if errors:
        raise errors[0]


def _next_write_succeeds(runtime: Runtime) -> None:
    app = runtime.study(nct04397107.STUDY_ID)
    _within_bound(lambda: app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB2", T0 + timedelta(days=2), "C3", 0.7, "g/L", envelope(), t)))
    assert "LB2" in app.subject("001").records


def test_a_1_mb_correction_is_stored_and_the_next_write_succeeds(large_runtime: Runtime
                                                                 ) -> None:
    app = large_runtime.study(nct04397107.STUDY_ID)

    def correct(subject: Subject, at: object) -> None:
        subject.trigger_event(Subject.RecordCorrected, timestamp=at, envelope=correction(),
                              record_id="LB1", changes={"value": {"old": 0.8, "new": MEGABYTE}},
                              derived={})

    # Through the group commit, as a server's PATCH is.
    _within_bound(lambda: app.on_subject("001", correct))
    assert app.subject("001").records["LB1"].fields["value"] == MEGABYTE
    _next_write_succeeds(large_runtime)


def test_a_1_mb_screening_answer_is_stored_and_the_next_write_succeeds(
        large_runtime: Runtime) -> None:
    app = large_runtime.study(nct04397107.STUDY_ID)
    study = app.definition()
    at = app.clock.now()
    subject = Subject.consent(study, "002", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), at)
    facts = {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, "other_findings": MEGABYTE}
    subject.trigger_event(Subject.Screened, timestamp=at, envelope=envelope(), facts=facts,
                          criteria=[])
    subject.enroll(study, "IL2", date(2021, 1, 10), envelope(), at)

    _within_bound(lambda: app.save(subject))
    assert app.subject("002").screening_facts["other_findings"] == MEGABYTE
    _next_write_succeeds(large_runtime)


def test_a_batch_of_many_large_values_is_stored(large_runtime: Runtime) -> None:
    app = large_runtime.study(nct04397107.STUDY_ID)
    codes = [f"{n:03d}" for n in range(3, 11)]
    for code in codes:
        enroll(app, code)
        app.on_subject(code, lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
    big = "y" * 200_000
    start = threading.Barrier(len(codes))

    def correct(code: str) -> None:
        start.wait()
        app.on_subject(code, lambda s, t: s.trigger_event(
            Subject.RecordCorrected, timestamp=t, envelope=correction(), record_id="LB1",
            changes={"value": {"old": 0.8, "new": big}}, derived={}))

    def write_concurrently() -> None:
        # Concurrent writes share transactions: batches well over 1 MB.
        threads = [threading.Thread(target=correct, args=(code,)) for code in codes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    _within_bound(write_concurrently)
    assert all(app.subject(code).records["LB1"].fields["value"] == big for code in codes)
    _next_write_succeeds(large_runtime)
