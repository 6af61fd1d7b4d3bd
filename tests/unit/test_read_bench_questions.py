"""The read bench asks what users ask (bench/read_store.py): as-of questions over the whole
study about subjects enrolled by then (not-found questions apart), outcome tables at an early,
a middle and a late time."""

from __future__ import annotations

import random

from bench.read_store import (
    as_of_questions,
    enrolled_at,
    outcome_times,
    study_end,
    subjects_for,
)


def test_a_million_events_are_more_than_two_thousand_subjects() -> None:
    assert subjects_for(1_000_000) >= 2000


def test_as_of_questions_span_the_study_and_ask_about_enrolled_subjects() -> None:
    subjects = 400
    found, missing = as_of_questions(random.Random(5), subjects, 400)
    last_enrolment = enrolled_at(subjects - 1, subjects)
    assert len(found) == 400
    assert all(enrolled_at(int(code), subjects) <= asked for code, asked in found)
    # Drawn over the whole study: early ones and ones after the last enrolment.
    assert any(asked < enrolled_at(subjects // 4, subjects) for _, asked in found)
    assert any(asked > last_enrolment for _, asked in found)
    assert max(asked for _, asked in found) <= study_end(subjects)
    assert len(missing) == 100
    assert all(enrolled_at(int(code), subjects) > asked for code, asked in missing)


def test_outcome_times_see_a_quarter_half_and_all_of_the_subjects() -> None:
    subjects = 2041
    (early, t1, n1), (middle, t2, n2), (late, t3, n3) = outcome_times(subjects)
    assert (early, middle, late) == ("early", "middle", "late")
    assert t1 < t2 < t3 == study_end(subjects)
    assert abs(n1 - subjects / 4) <= 10 and abs(n2 - subjects / 2) <= 10 and n3 == subjects
