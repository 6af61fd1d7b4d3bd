"""The demo's simulated study is clinically plausible: doses follow the body-surface area of the
dose day, standard immunosuppressants are in paediatric ranges at their usual frequency, and
adverse events carry the causality an investigator would give them."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import pytest

from domain.commands import (
    AdministerDose,
    EnrolSubject,
    RecordLabResult,
    RecordVitalSigns,
    ReportAdverseEvent,
    StartTherapy,
)
from domain.rules.bsa import mosteller_bsa
from domain.studies.nct04397107_simulation import plan_study

RELATED = {"possible", "probable", "definite"}


@pytest.fixture(scope="module", params=[3, 11])
def steps(request: pytest.FixtureRequest) -> list[object]:
    return [a.step for a in plan_study(request.param)]


def test_each_il2_dose_follows_the_bsa_of_its_day(steps: list[object]) -> None:
    bsa: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for step in steps:
        if isinstance(step, RecordVitalSigns):
            height, weight = step.measurements["HEIGHT"][0], step.measurements["WEIGHT"][0]
            bsa[step.subject].append((step.observed_at, mosteller_bsa(height, weight).value))
    doses = [s for s in steps if isinstance(s, AdministerDose)]
    assert doses
    grew = 0
    for dose in doses:
        measured = sorted(bsa[dose.subject])
        area = [a for when, a in measured if when <= dose.observed_at][-1]
        assert dose.dose == round(500_000 * area, -4)
        grew += dose.dose != round(500_000 * measured[0][1], -4)
    assert grew > 0  # later doses follow the child's growth, not the baseline BSA


def test_standard_immunosuppressants_are_paediatric_doses_at_their_frequency(
        steps: list[object]) -> None:
    enrolled = {s.subject: s for s in steps if isinstance(s, EnrolSubject)}
    first_vitals: dict[str, RecordVitalSigns] = {}
    for step in steps:
        if isinstance(step, RecordVitalSigns):
            first_vitals.setdefault(step.subject, step)
    drugs = set()
    for step in steps:
        if not isinstance(step, StartTherapy) or step.category != "immunosuppressant":
            continue
        vitals = first_vitals[step.subject].measurements
        weight, height = vitals["WEIGHT"][0], vitals["HEIGHT"][0]
        area = mosteller_bsa(height, weight).value
        drugs.add(step.drug)
        disease = enrolled[step.subject].disease
        if step.drug == "methotrexate":
            assert disease == "JIA" and step.frequency == "QW"
            assert 10 <= step.dose_mg / area <= 15
        elif step.drug == "hydroxychloroquine":
            assert disease == "PSS" and step.frequency == "QD"
            assert step.dose_mg <= 400 and step.dose_mg / weight <= 6.5
        else:
            assert step.drug == "mycophenolate mofetil" and disease == "SLE"
            assert step.frequency == "BID" and step.dose_mg <= 1000
            assert 500 <= step.dose_mg / area <= 700
    assert drugs == {"methotrexate", "hydroxychloroquine", "mycophenolate mofetil"}


def test_adverse_events_carry_realistic_causality(steps: list[object]) -> None:
    arm = {s.subject: s.arm for s in steps if isinstance(s, EnrolSubject)}
    events = [(arm[s.subject], s.details) for s in steps if isinstance(s, ReportAdverseEvent)]
    assert {d["relationship"] for _, d in events} - RELATED  # not every AE is a reaction
    for group, details in events:
        if details["category"] in ("injection_site_reaction", "influenza_like_symptoms"):
            assert group == "IL2" and details["relationship"] in RELATED
    infections = [d["relationship"] for _, d in events if d["category"] == "infection"]
    assert sum(r not in RELATED for r in infections) > len(infections) / 2


def test_cd4_counts_accompany_every_treg_percentage(steps: list[object]) -> None:
    labs: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for step in steps:
        if isinstance(step, RecordLabResult):
            labs[(step.subject, step.visit)].add(step.code)
    assert labs and all({"TREG", "CD4"} <= codes for codes in labs.values())
