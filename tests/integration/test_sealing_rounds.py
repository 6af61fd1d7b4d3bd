"""The server's background rounds: one study's failure does not stop the others."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from api.runtime import Runtime
from api.sealing import SealingRounds
from domain.studies import nct04397107
from tests.support import enroll, envelope, simulated_clock

FIRST, SECOND = "NCT04397107", "SECOND-STUDY"


def test_a_study_whose_round_fails_does_not_stop_the_next(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    for study in (FIRST, SECOND):
        app = runtime.study(study, clock=simulated_clock())
        app.register_study({**nct04397107.definition(), "study_id": study}, envelope())
        enroll(app)
        app.close()
    project = runtime.project

    def failing_first(study_id: str, **options: Any) -> int:
        if study_id == FIRST:  # studies are taken in id order: this one comes first
            raise psycopg.OperationalError("the connection was closed")
        return project(study_id, **options)

    monkeypatch.setattr(runtime, "project", failing_first)
    SealingRounds(runtime).seal_all()

    assert runtime.seal(FIRST).sealed == 0  # sealed before its projection failed
    assert runtime.seal(SECOND).sealed == 0
    assert project(SECOND) == 0  # projected in the same round
    assert project(FIRST) > 0  # left for the next round
