"""The read bench's study: subjects enrolled one after another across the study span, each
followed for a year, their events written in recorded-time order (the simulated clock only
moves forward, so writing one subject's whole year before the next one's enrolment would
squeeze every later subject to the end of the span).

A subject has 3 events to enrol, then 5 visits (vital signs, a therapy start or taper, 70 lab
results, a third of which fail an edit check: a check and a query each) and, after half of
the visits, a correction: about 490 events.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope, Reason
from domain.service import StudyApplication
from domain.studies import nct04397107
from domain.subject import Subject

STUDY = nct04397107.STUDY_ID
START = datetime(2020, 8, 15, 8, 0, tzinfo=UTC)
ENROLMENT = timedelta(days=700)  # the first subject enrols at START, the last near its end
FOLLOW_UP = timedelta(days=386)  # the last visit (M12) and its correction 20 days later
PER_SUBJECT = 490  # as counted in a generated store
LABS_PER_VISIT = 70
VISITS = (("BASELINE", 0), ("M1", 30), ("M3", 91), ("M6", 182), ("M12", 365))
COORD = Envelope(Actor("u-c", "Bench Coordinator", "coordinator", "JLU1"), "bench", "system", "b")
FIX = Envelope(Actor("u-dm", "Bench Data Manager", "data_manager", "JLU1"), "bench", "system",
               "b", "data_management", Reason("transcription_error", "checked at monitoring"))
LABS = [("C3", "g/L"), ("C4", "g/L"), ("ANTIDSDNA", "IU/mL"), ("TREG", "% of CD4+"),
        ("IL6", "pg/mL")]

Step = Callable[[], None]  # writes one command's events


def subjects_for(events: int) -> int:
    """How many subjects make about ``events`` events."""
    return max(1, -(-events // PER_SUBJECT))


def code(n: int) -> str:
    """The code of subject ``n``."""
    return f"{n:05d}"


def enrolled_at(n: int, subjects: int) -> datetime:
    """When subject ``n`` of ``subjects`` is enrolled (recorded)."""
    return START + ENROLMENT * (n / subjects)


def study_end(subjects: int) -> datetime:
    """A time after the last event of the study."""
    return enrolled_at(subjects - 1, subjects) + FOLLOW_UP + timedelta(days=1)


def generate(runtime: Runtime, events: int, rng: random.Random) -> int:
    """Write about ``events`` events in recorded-time order; return how many subjects."""
    clock = SimulatedClock(START - timedelta(days=1))
    app = runtime.study(STUDY, clock=clock)
    app.register_study(nct04397107.definition(), COORD)
    subjects = subjects_for(events)
    schedule: list[tuple[datetime, int, int, Step]] = []
    for n in range(subjects):
        for order, (when, step) in enumerate(_steps(app, n, subjects, rng)):
            schedule.append((when, n, order, step))
    for when, _, _, step in sorted(schedule, key=lambda entry: entry[:3]):
        clock.set(when)
        step()
    app.close()
    return subjects


def _steps(app: StudyApplication, n: int, subjects: int,
           rng: random.Random) -> list[tuple[datetime, Step]]:
    """Subject ``n``'s commands, each with its recorded time."""
    enrolled = enrolled_at(n, subjects)
    subject_code = code(n)
    def enrol() -> None:
        app.enroll_subject(
            subject_code, "JLU1", date(2010, 5, 1), "F", "SLE", enrolled.date(),
            nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2" if n % 2 else "STD",
            enrolled.date(), COORD)

    def visit(k: int, name: str, day: int) -> Step:
        values = [rng.uniform(0.1, 2.0) for _ in range(LABS_PER_VISIT)]

        def batch(subject: Subject, at: datetime) -> None:
            observed = enrolled + timedelta(days=day)
            subject.record_vital_signs(f"VS{k}", observed, {"HEIGHT": (140.0, "cm"),
                                                            "WEIGHT": (35.0 + k, "kg")},
                                       COORD, at, visit=name)
            if day == 0:
                subject.start_therapy("CM1", observed, "prednisone", "glucocorticoid", 40.0,
                                      "PO", COORD, at)
            else:
                subject.change_therapy("CM1", observed, max(5.0, 40.0 - 7 * k), COORD, at)
            for j, value in enumerate(values):
                lab, unit = LABS[j % len(LABS)]
                subject.record_lab_result(f"LB{k}-{j}", observed, lab, value, unit, COORD, at,
                                          visit=name)

        def step() -> None:
            app.on_subject(subject_code, batch)
        return step

    def correction(k: int) -> Step:
        record = f"LB{k}-{rng.randrange(LABS_PER_VISIT)}"

        def step() -> None:
            app.on_subject(subject_code, lambda s, t: s.correct(record, "value", 1.0, FIX, t))
        return step

    steps: list[tuple[datetime, Step]] = [(enrolled, enrol)]
    for k, (name, day) in enumerate(VISITS):
        steps.append((enrolled + timedelta(days=day, hours=3), visit(k, name, day)))
        if rng.random() < 0.5:
            steps.append((enrolled + timedelta(days=day + 20), correction(k)))
    return steps


Question = tuple[str, datetime]  # subject code, as of


def as_of_questions(rng: random.Random, subjects: int,
                    samples: int) -> tuple[list[Question], list[Question]]:
    """``samples`` questions at times drawn over the whole study about subjects enrolled by
    then, and a quarter as many about subjects not enrolled yet (answered "not found")."""
    enrolments = [enrolled_at(n, subjects) for n in range(subjects)]
    end = study_end(subjects)
    found: list[Question] = []
    for _ in range(samples):
        asked = START + (end - START) * rng.random()
        found.append((code(rng.randrange(bisect_right(enrolments, asked))), asked))
    missing: list[Question] = []
    while subjects > 1 and len(missing) < samples // 4:
        asked = START + (enrolments[-1] - START) * rng.random()
        enrolled = bisect_right(enrolments, asked)
        if enrolled < subjects:
            missing.append((code(rng.randrange(enrolled, subjects)), asked))
    return found, missing


def outcome_times(subjects: int) -> list[tuple[str, datetime, int]]:
    """(name, T, subjects enrolled by T) of the outcome questions: a day after a quarter and
    half of the subjects are enrolled, and after the study's last event."""
    enrolments = [enrolled_at(n, subjects) for n in range(subjects)]
    times = [(name, enrolments[max(1, round(subjects * share)) - 1] + timedelta(days=1))
             for name, share in (("early", 0.25), ("middle", 0.5))]
    times.append(("late", study_end(subjects)))
    return [(name, when, bisect_right(enrolments, when)) for name, when in times]
