"""A deterministic simulation of NCT04397107: 46 children, Aug 2020 - Jun 2022.

Every action is planned first with the time it would have been entered (the recorded time),
then played through the trial service in recorded-time order with an injected clock, so the
event log reads like the real study's would have. Each action is a command and the caller
making it (a fictional person of the site); a few are decided on the casebook as it stands
when they are played (close the queries then answered, correct in answer to the query the
soft checks raised). The investigator signs with username and password, as anyone does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from domain.caller import Caller
from domain.commands import (
    AdministerDose,
    ChangeTherapy,
    CloseQuery,
    Complete,
    CorrectRecord,
    EnrolSubject,
    LockCasebook,
    OpenQuery,
    RecordAssessment,
    RecordDeviation,
    RecordLabResult,
    RecordVitalSigns,
    ReportAdverseEvent,
    ResolveAdverseEvent,
    SignCasebook,
    StartTherapy,
    SubjectCommand,
    VerifySource,
    Withdraw,
)
from domain.envelope import Reason
from domain.rules.bsa import mosteller_bsa
from domain.studies import nct04397107
from domain.subject import Subject
from domain.user import Grant

STUDY_START = date(2020, 8, 15)
LAST_ENROLLMENT = date(2021, 6, 10)
LOCK_AT = datetime(2022, 6, 30, 16, 0, tzinfo=UTC)
SITE = "JLU1"
CLIENT = "trialledger-demo-simulator"

STUDY = nct04397107.STUDY_ID


@dataclass(frozen=True)
class Person:
    """A fictional member of the site's staff: who they are and the role they hold."""

    user_id: str
    username: str
    full_name: str
    role: str


COORDINATOR = Person("u-coord-01", "sim-coordinator", "Li Wei", "coordinator")
INVESTIGATOR = Person("u-inv-01", "sim-investigator", "Sirui Yang", "investigator")
DATA_MANAGER = Person("u-dm-01", "sim-data-manager", "Zhang Min", "data_manager")
MONITOR = Person("u-mon-01", "sim-monitor", "Chen Mei", "monitor")
# The one who signs: whoever plays the simulation registers them in the directory with the
# password the plan is given.
SIGNER = INVESTIGATOR

VISIT_DAYS = {"BASELINE": 0, "M1": 30, "M3": 91, "M6": 182, "M12": 365}

Command = SubjectCommand | EnrolSubject
# A step decided on the casebook as it stands when it is played.
Decide = Callable[[Subject], Sequence[SubjectCommand]]


@dataclass(order=True)
class Action:
    """One command (or a step deciding its commands), by ``caller`` on ``subject``, to be
    run when the clock reads ``recorded_at``."""

    recorded_at: datetime
    sequence: int
    subject: str = field(compare=False)
    caller: Caller = field(compare=False)
    step: Command | Decide = field(compare=False)
    kind: str = field(compare=False, default="")

    def commands(self, casebook: Callable[[str], Subject]) -> Sequence[Command]:
        """The action's commands; ``casebook`` reads a subject as it stands now."""
        if isinstance(self.step, SubjectCommand | EnrolSubject):
            return [self.step]
        return self.step(casebook(self.subject))


@dataclass
class Child:
    """The simulated facts about one child."""

    code: str
    disease: str
    arm: str
    sex: str
    date_of_birth: date
    enrolled_on: date
    height_cm: float
    weight_kg: float
    withdraws_after: str | None = None
    late_visit: str | None = None  # a visit the family came to weeks late (a deviation)
    missed_dose: bool = False  # one fortnightly IL-2 dose not given (a deviation)


class Plan:
    """Builds the ordered list of actions for one seed."""

    def __init__(self, seed: int, signer_password: str) -> None:
        self.rng = random.Random(seed)
        self.signer_password = signer_password
        self.actions: list[Action] = []
        self._sequence = 0

    def caller(self, person: Person) -> Caller:
        """``person`` as the caller of the next action (its request id)."""
        return Caller(person.user_id, person.username, person.full_name,
                      (Grant(person.role, STUDY, SITE),), CLIENT, f"sim-{self._sequence:06d}",
                      "demo")

    def on_subject(self, recorded_at: datetime, code: str, kind: str, caller: Caller,
                   step: Command | Decide) -> None:
        """Plan ``step`` on subject ``code`` by ``caller`` for ``recorded_at``."""
        self._sequence += 1
        self.actions.append(Action(recorded_at, self._sequence, code, caller, step, kind))

    def entry_time(self, observed: datetime) -> datetime:
        """When a coordinator would have typed it in: same day to three days later."""
        lag = timedelta(hours=self.rng.randint(1, 8), days=self.rng.choice([0, 0, 1, 1, 2, 3]))
        return min(observed + lag, LOCK_AT - timedelta(days=2))

    def ordered(self) -> list[Action]:
        """All actions in recorded-time order."""
        return sorted(self.actions)


def _clinic_time(day: date, rng: random.Random) -> datetime:
    return datetime.combine(day, time(1 + rng.randint(0, 7), rng.choice([0, 15, 30, 45])), UTC)


def make_children(rng: random.Random) -> list[Child]:
    """46 children: SLE, pSS and JIA, each allocated to IL2 or STD by the investigator (the
    study is open-label and not randomised: the registry says the patients were divided into
    groups); the investigator keeps the groups even, two of each in every four children."""
    diseases = ["SLE"] * 24 + ["PSS"] * 8 + ["JIA"] * 14
    rng.shuffle(diseases)
    span = (LAST_ENROLLMENT - STUDY_START).days
    starts = sorted(STUDY_START + timedelta(days=rng.randint(0, span)) for _ in diseases)
    children = []
    arms: list[str] = []
    for i, (disease, start) in enumerate(zip(diseases, starts, strict=True)):
        if not arms:  # the next four children: two to each group, in the order they come
            arms = ["IL2", "IL2", "STD", "STD"]
            rng.shuffle(arms)
        age = rng.randint(6, 17)
        dob = start - timedelta(days=365 * age + rng.randint(30, 330))
        height = round(100 + 4.5 * age + rng.uniform(-8, 8), 1)
        weight = round(max(15.0, (height / 100) ** 2 * rng.uniform(15, 23)), 1)
        female = rng.random() < (0.85 if disease in ("SLE", "PSS") else 0.55)
        children.append(Child(
            code=f"{i + 1:03d}", disease=disease, arm=arms.pop(), sex="F" if female else "M",
            date_of_birth=dob, enrolled_on=start, height_cm=height, weight_kg=weight,
        ))
    for child in rng.sample(children, 2):
        child.withdraws_after = rng.choice(["M3", "M6"])
    for child in rng.sample(children, 3):
        child.late_visit = rng.choice(["M3", "M6"])
    for child in rng.sample([c for c in children if c.arm == "IL2"], 2):
        child.missed_dose = True
    return children


def plan_study(seed: int, signer_password: str = "") -> list[Action]:
    """Every action of the simulated study, in recorded-time order; the investigator signs
    with ``signer_password``."""
    plan = Plan(seed, signer_password)
    for child in make_children(plan.rng):
        _plan_child(plan, child)
    return plan.ordered()


def _plan_child(plan: Plan, child: Child) -> None:
    rng = plan.rng
    baseline = child.enrolled_on
    enrolled_at = _clinic_time(baseline, rng)
    answers = dict(nct04397107.ELIGIBLE_SCREENING_ANSWERS)
    answers["alt_u_l"] = float(rng.randint(10, 45))
    answers["creatinine_clearance_ml_min"] = float(rng.randint(80, 140))
    plan.on_subject(enrolled_at, child.code, "enroll", plan.caller(INVESTIGATOR), EnrolSubject(
        study=STUDY, subject=child.code, site=SITE, date_of_birth=child.date_of_birth,
        sex=child.sex, disease=child.disease, consent_date=child.enrolled_on,
        screening_answers=answers, arm=child.arm, enrolled_on=child.enrolled_on))

    counter = iter(range(1, 10_000))

    def rid(prefix: str) -> str:
        return f"{child.code}-{prefix}{next(counter):04d}"

    steroid_id = rid("CM")
    prednisone = {"SLE": 40.0, "PSS": 15.0, "JIA": 10.0}[child.disease]
    prednisone = min(prednisone, round(child.weight_kg * 1.0))
    _plan_therapy_start(plan, child, steroid_id, "prednisone", "glucocorticoid",
                        prednisone, "QD", enrolled_at)
    immuno_id = rid("CM")
    weight = child.weight_kg
    height = child.height_cm
    baseline_bsa = mosteller_bsa(height, weight).value
    immuno_drug, immuno_dose, frequency = _standard_immunosuppressant(
        child.disease, baseline_bsa, weight, rng)
    _plan_therapy_start(plan, child, immuno_id, immuno_drug, "immunosuppressant",
                        immuno_dose, frequency, enrolled_at)
    baselines = {code: rng.uniform(low, high) for code, (_, _, (low, high)) in LAB_PLAN.items()}
    measured: list[tuple[datetime, float]] = []  # each visit's time and BSA
    end: datetime | None = None
    last_entered = enrolled_at
    baseline_entered = enrolled_at
    for visit, day in VISIT_DAYS.items():
        window = nct04397107.VISIT_WINDOWS[visit]
        visit_day = baseline + timedelta(days=day + (rng.randint(-window // 2, window // 2)
                                                     if day else 0))
        if visit == child.late_visit:
            visit_day = baseline + timedelta(days=day + window + rng.randint(5, 20))
        observed = enrolled_at if visit == "BASELINE" else _clinic_time(visit_day, rng)
        if day:
            height = round(height + rng.uniform(0, 0.6) * day / 91, 1)
            weight = round(weight * rng.uniform(0.98, 1.04), 1)
        measured.append((observed, mosteller_bsa(height, weight).value))
        last_entered = _plan_visit(plan, child, visit, observed, height, weight, baselines, rid)
        if visit == child.late_visit:
            _plan_late_visit_review(plan, child, last_entered)
        if not day:
            baseline_entered = last_entered
        if day:
            improvement = 0.6 if child.arm == "IL2" else 0.75
            prednisone = max(0.0, round(prednisone * improvement / 2.5) * 2.5)
            _plan_therapy_change(plan, child, steroid_id, observed, prednisone)
        end = observed
        if child.withdraws_after == visit:
            break
    assert end is not None
    # Everything clinical is observed at least a few days before the subject leaves, so
    # its entry (up to ~3 days late) lands before the end of participation is recorded.
    cutoff = end - timedelta(days=4)
    if child.arm == "IL2":
        first_dose = max(enrolled_at + timedelta(hours=1), baseline_entered - timedelta(hours=1))
        _plan_il2(plan, child, baseline, measured, rid, first=first_dose,
                  floor=baseline_entered + timedelta(minutes=30), last=cutoff)
    _plan_adverse_events(plan, child, baseline, rid, last=cutoff)
    investigator = plan.caller(INVESTIGATOR)
    finished_at = last_entered + timedelta(hours=1)
    if child.withdraws_after:
        leave = end + timedelta(days=rng.randint(3, 20))
        plan.on_subject(max(plan.entry_time(leave), finished_at), child.code, "withdraw",
                        investigator, Withdraw(study=STUDY, subject=child.code,
                                               observed_at=leave,
                                               withdrawal_reason="withdrew consent"))
    else:
        plan.on_subject(finished_at, child.code, "complete", investigator,
                        Complete(study=STUDY, subject=child.code, observed_at=end))
    # The investigator signs each casebook once its data are final, before the lock.
    plan.on_subject(LOCK_AT - timedelta(hours=12), child.code, "signature",
                    plan.caller(SIGNER), SignCasebook(
                        study=STUDY, subject=child.code, signature_id=f"SIG-{child.code}",
                        meaning="responsibility", username=SIGNER.username,
                        password=plan.signer_password))
    plan.on_subject(LOCK_AT, child.code, "lock", plan.caller(DATA_MANAGER), LockCasebook(
        study=STUDY, subject=child.code, reason=Reason("database_lock", "final database lock")))


def _standard_immunosuppressant(disease: str, bsa: float, weight: float,
                                 rng: random.Random) -> tuple[str, float, str]:
    """The standard immunosuppressant of the disease in a paediatric dose, at its usual
    frequency: mycophenolate mofetil 600 mg/m² twice a day (at most 1 g a dose) for SLE,
    hydroxychloroquine 5 mg/kg a day (at most 400 mg) for pSS, methotrexate 10-15 mg/m² once
    a week for JIA (never daily); each rounded as the tablets or suspension allow."""
    if disease == "SLE":
        return "mycophenolate mofetil", min(1000.0, round(600 * bsa / 50) * 50.0), "BID"
    if disease == "PSS":
        return "hydroxychloroquine", min(400.0, max(50.0, round(5 * weight / 50) * 50.0)), "QD"
    tablets = [k * 2.5 for k in range(1, 11) if 10 * bsa <= k * 2.5 <= 15 * bsa]
    return "methotrexate", rng.choice(tablets) if tablets else 2.5, "QW"


def _plan_therapy_start(plan: Plan, child: Child, record_id: str, drug: str, category: str,
                        dose_mg: float, frequency: str, when: datetime) -> None:
    coordinator = plan.caller(COORDINATOR)
    plan.on_subject(plan.entry_time(when) + timedelta(minutes=1), child.code, "therapy",
                    coordinator, StartTherapy(
                        study=STUDY, subject=child.code, record_id=record_id, observed_at=when,
                        drug=drug, category=category, route="PO", dose_mg=dose_mg,
                        frequency=frequency))


def _plan_therapy_change(plan: Plan, child: Child, record_id: str, when: datetime,
                         dose: float) -> None:
    coordinator = plan.caller(COORDINATOR)

    def change_if_different(subject: Subject) -> list[SubjectCommand]:
        if subject.records[record_id].fields["dose_mg"] == dose:
            return []
        return [ChangeTherapy(study=STUDY, subject=child.code, record_id=record_id,
                              observed_at=when, dose_mg=dose)]

    if dose > 0:
        plan.on_subject(plan.entry_time(when), child.code, "therapy", coordinator,
                        change_if_different)


LAB_PLAN: dict[str, tuple[str, tuple[float, float], tuple[float, float]]] = {
    # code: (unit, reference range, simulated baseline range)
    "C3": ("g/L", (0.9, 1.8), (0.4, 1.2)),
    "C4": ("g/L", (0.1, 0.4), (0.05, 0.25)),
    "ANTIDSDNA": ("IU/mL", (0.0, 100.0), (50.0, 600.0)),
    "TREG": ("% of CD4+", (5.0, 10.0), (2.0, 6.0)),
    # Measured with Treg at every visit: Treg cells/uL = % of CD4+ x CD4+ cells/uL.
    "CD4": ("cells/uL", (500.0, 1500.0), (300.0, 900.0)),
    "IL6": ("pg/mL", (0.0, 7.0), (2.0, 30.0)),
}
# The tests IL-2 raises (Treg, complement, and CD4+ counts as lymphopenia recovers).
RISING = ("C3", "C4", "TREG", "CD4")


def _plan_visit(plan: Plan, child: Child, visit: str, observed: datetime, height: float,
                weight: float, baselines: dict[str, float],
                rid: Callable[[str], str]) -> datetime:
    """Plan one visit's vitals, labs (around the child's own ``baselines``, moved by the
    treatment's effect) and score; return when its last entry is made."""
    rng = plan.rng
    day = VISIT_DAYS[visit]
    vitals_id = rid("VS")
    coordinator = plan.caller(COORDINATOR)
    measurements = {"HEIGHT": (height, "cm"), "WEIGHT": (weight, "kg"),
                    "TEMP": (round(rng.uniform(36.2, 37.4), 1), "C"),
                    "HR": (float(rng.randint(70, 110)), "beats/min")}
    entered = plan.entry_time(observed)
    plan.on_subject(entered, child.code, "vitals", coordinator, RecordVitalSigns(
        study=STUDY, subject=child.code, record_id=vitals_id, observed_at=observed,
        measurements=measurements, visit=visit))
    # The effect of IL-2 on Treg and complement, as the study hypothesised.
    effect = min(day, 182) / 182 * (1.0 if child.arm == "IL2" else 0.35)
    c3_low = False
    for code, (unit, (low, high), _) in LAB_PLAN.items():
        baseline_value = baselines[code] * rng.uniform(0.9, 1.1)  # day-to-day variation
        if code in RISING:
            value = baseline_value * (1 + effect * rng.uniform(0.3, 0.9))
        else:
            value = baseline_value * (1 - effect * rng.uniform(0.2, 0.6))
        value = round(value, 0 if unit == "cells/uL" else 2)
        lab_id = rid("LB")
        lab_caller = plan.caller(COORDINATOR)
        lab_time = entered + timedelta(minutes=5)
        # About one result in sixteen is mistyped at entry and corrected at monitoring.
        mistyped = rng.random() < 0.06
        entered_value = round(value * rng.choice([0.1, 10.0, 0.9, 1.1]), 2) if mistyped else value
        c3_low = c3_low or (code == "C3" and entered_value < low)
        plan.on_subject(lab_time, child.code, "lab", lab_caller, RecordLabResult(
            study=STUDY, subject=child.code, record_id=lab_id, observed_at=observed, code=code,
            value=entered_value, unit=unit, reference_low=low, reference_high=high,
            visit=visit))
        if mistyped and entered_value != value:
            _plan_lab_correction(plan, child, lab_id, value, lab_time)
    scorer = plan.caller(INVESTIGATOR)
    score_id = rid("QS")
    if child.disease == "SLE":
        items = {k: rng.random() < max(0.05, 0.35 - effect * 0.25)
                 for k in ("arthritis", "rash", "alopecia", "mucosal_ulcers",
                           "increased_dna_binding", "proteinuria", "fever", "leukopenia")}
        # Low complement is scored from the C3 of the visit; now and then it is overlooked,
        # the soft check queries it, and the investigator corrects the score in answer.
        overlooked = c3_low and rng.random() < 0.1
        items["low_complement"] = c3_low and not overlooked
        plan.on_subject(entered + timedelta(minutes=10), child.code, "assessment", scorer,
                        RecordAssessment(study=STUDY, subject=child.code, record_id=score_id,
                                         observed_at=observed, instrument="SLEDAI",
                                         items=items, visit=visit))
        if overlooked:
            _plan_score_correction(plan, child, score_id, entered + timedelta(minutes=10))
    elif child.disease == "PSS":
        domains = {"constitutional": rng.choice([0, 1]), "glandular": rng.choice([0, 1, 2]),
                   "articular": rng.choice([0, 1, 2]), "biological": rng.choice([0, 1, 2]),
                   "haematological": rng.choice([0, 1])}
        plan.on_subject(entered + timedelta(minutes=10), child.code, "assessment", scorer,
                        RecordAssessment(study=STUDY, subject=child.code, record_id=score_id,
                                         observed_at=observed, instrument="ESSDAI",
                                         items=domains, visit=visit))
    return entered + timedelta(minutes=10)


def _open_system_query(subject: Subject, record_id: str, field: str) -> str | None:
    """The id of the open query the soft checks raised on the field, if any."""
    return next((q["query_id"] for q in subject.queries.values()
                 if q["record_id"] == record_id and q["field"] == field
                 and q["status"] != "closed" and q["query_id"].startswith("SC-")), None)


def _plan_score_correction(plan: Plan, child: Child, score_id: str, entered: datetime) -> None:
    """The investigator answers the soft check's query on low complement by correcting the
    score; the monitor closes the query at the next monitoring visit."""
    field = "items.low_complement"
    fix = plan.caller(INVESTIGATOR)
    reason = Reason("query_response", "C3 below the lower limit: low complement present")
    answered = min(entered + timedelta(days=plan.rng.randint(2, 7)), LOCK_AT - timedelta(days=3))

    def correct(subject: Subject) -> list[SubjectCommand]:
        query_id = _open_system_query(subject, score_id, field)
        if query_id is None:
            return []
        return [CorrectRecord(study=STUDY, subject=child.code, kind="assessments",
                              record_id=score_id, field=field, value=True, reason=reason,
                              query_id=query_id)]

    plan.on_subject(answered, child.code, "correction", fix, correct)
    plan.on_subject(answered + timedelta(days=1), child.code, "query", plan.caller(MONITOR),
                    _close_answered(child.code, score_id, "Score corrected; verified"))


def _close_answered(code: str, record_id: str, text: str) -> Decide:
    """Close every answered query on the record."""
    def close(subject: Subject) -> list[SubjectCommand]:
        return [CloseQuery(study=STUDY, subject=code, query_id=query["query_id"], text=text)
                for query in subject.queries.values()
                if query["record_id"] == record_id and query["status"] == "answered"]

    return close


def _plan_late_visit_review(plan: Plan, child: Child, entered: datetime) -> None:
    """The monitor confirms the late visit against source and closes the soft check's
    queries on it; the deviation stays on record."""
    close = plan.caller(MONITOR)

    def review(subject: Subject) -> list[SubjectCommand]:
        return [CloseQuery(study=STUDY, subject=child.code, query_id=query["query_id"],
                           text="Visit date confirmed against source; deviation on record")
                for query in subject.queries.values()
                if query["status"] == "open"
                and query["text"].startswith("Automatic check: visit")]

    plan.on_subject(min(entered + timedelta(days=10), LOCK_AT - timedelta(days=3)), child.code,
                    "query", close, review)


def _plan_lab_correction(plan: Plan, child: Child, lab_id: str, corrected: float,
                         entered: datetime) -> None:
    """At monitoring the monitor queries the value against source, unless the soft checks
    already did; the coordinator corrects it in answer (the correction linked to the query);
    the monitor closes the query."""
    rng = plan.rng
    queried = min(entered + timedelta(days=rng.randint(14, 45), hours=rng.randint(1, 6)),
                  LOCK_AT - timedelta(days=4))
    answered = min(queried + timedelta(days=rng.randint(1, 5), hours=rng.randint(1, 6)),
                   LOCK_AT - timedelta(days=2))
    closed = answered + timedelta(days=1)
    ask = plan.caller(MONITOR)

    def query(subject: Subject) -> list[SubjectCommand]:
        if _open_system_query(subject, lab_id, "value") is not None:
            return []
        return [OpenQuery(study=STUDY, subject=child.code, query_id=f"Q-{lab_id}",
                          record_id=lab_id, field="value",
                          text="Value does not match the laboratory report")]

    plan.on_subject(queried, child.code, "query", ask, query)
    reason = Reason("transcription_error",
                    "value re-checked against the laboratory report during monitoring")
    fix = plan.caller(COORDINATOR)

    def correct(subject: Subject) -> list[SubjectCommand]:
        query_id = _open_system_query(subject, lab_id, "value") or f"Q-{lab_id}"
        return [CorrectRecord(study=STUDY, subject=child.code, kind="labs", record_id=lab_id,
                              field="value", value=corrected, reason=reason,
                              query_id=query_id)]

    plan.on_subject(answered, child.code, "correction", fix, correct)
    close = plan.caller(MONITOR)
    plan.on_subject(closed, child.code, "query", close, _close_answered(
        child.code, lab_id, "Corrected value verified against source"))
    plan.on_subject(closed + timedelta(minutes=5), child.code, "sdv", close,
                    VerifySource(study=STUDY, subject=child.code, record_id=lab_id))


def _plan_il2(plan: Plan, child: Child, baseline: date, measured: Sequence[tuple[datetime, float]],
              rid: Callable[[str], str], first: datetime, floor: datetime,
              last: datetime) -> None:
    """500,000 IU/m² SC on 5 consecutive days, then every 2 weeks for 6 months.

    Each dose follows the BSA of the dose day: that of the latest visit's height and weight
    (``measured``: each visit's time and BSA). The first dose is entered after the baseline
    measurements.
    """
    induction, maintenance = nct04397107.IL2_SCHEDULE
    days = [*range(induction["days"]), *range(18, 183, 14)]
    missed = plan.rng.choice(days[6:-1]) if child.missed_dose else None
    for day in days:
        when = datetime.combine(baseline + timedelta(days=day), time(2, 0), UTC) + timedelta(
            hours=plan.rng.randint(0, 4))
        when = max(when, first)
        if when > last:
            break
        if day == missed:
            _plan_missed_dose(plan, child, when)
            continue
        bsa = [area for measured_at, area in measured if measured_at <= when][-1]
        dose = round(500_000 * bsa, -4)
        dose_id = rid("EX")
        coordinator = plan.caller(COORDINATOR)
        frequency = (induction if day < induction["days"] else maintenance)["frequency"]
        plan.on_subject(max(plan.entry_time(when), floor), child.code, "dose", coordinator,
                        AdministerDose(study=STUDY, subject=child.code, record_id=dose_id,
                                       observed_at=when, drug="IL2", dose=dose, unit="IU",
                                       route="SC", frequency=frequency))


def _plan_missed_dose(plan: Plan, child: Child, when: datetime) -> None:
    """The child missed a fortnightly dose (fever, family away): the investigator records the
    deviation at the next visit to the clinic."""
    investigator = plan.caller(INVESTIGATOR)
    missed_on = when.date()
    plan.on_subject(plan.entry_time(when) + timedelta(days=2), child.code, "deviation",
                    investigator, RecordDeviation(
                        study=STUDY, subject=child.code,
                        deviation_id=f"DV-{child.code}-EX-{missed_on.isoformat()}",
                        category="dose_deviation",
                        description="Fortnightly IL-2 dose not given: the child was away "
                                    "from the clinic",
                        occurred_on=missed_on, severity="minor"))


@dataclass(frozen=True)
class AdverseEvent:
    """An adverse event the children may have: its term, the registry's category, CTCAE
    grade, whether only IL-2 causes it, the causality the investigator judges it with on IL-2
    and on standard therapy alone (the choices weighted as listed), and how common it is."""

    term: str
    category: str
    grade: int
    il2_only: bool
    on_il2: tuple[str, ...]
    on_standard: tuple[str, ...]
    weight: int  # how common it is among the others


# Injection-site reactions and influenza-like symptoms are IL-2's own (related); fever is often
# IL-2's too; infections on immunosuppressants are judged mostly not related, now and then
# possibly; a transaminase rise on methotrexate or mycophenolate, possibly or probably.
AE_MENU = (
    AdverseEvent("Injection site erythema", "injection_site_reaction", 1, True,
                 ("definite", "probable", "probable"), (), 4),
    AdverseEvent("Influenza-like illness", "influenza_like_symptoms", 1, True,
                 ("probable", "possible", "possible"), (), 3),
    AdverseEvent("Pyrexia", "fever", 1, False,
                 ("possible", "possible", "unlikely"), ("unlikely", "not_related"), 2),
    AdverseEvent("Upper respiratory tract infection", "infection", 1, False,
                 ("not_related", "not_related", "unlikely", "unlikely", "possible"),
                 ("not_related", "not_related", "unlikely", "unlikely", "possible"), 4),
    AdverseEvent("Herpes zoster", "infection", 2, False,
                 ("possible", "unlikely"), ("possible", "unlikely"), 1),
    AdverseEvent("Pneumonia", "infection", 3, False,
                 ("unlikely", "not_related", "possible"), ("unlikely", "not_related"), 1),
    AdverseEvent("Alanine aminotransferase increased", "drug_induced_liver_damage", 1, False,
                 ("possible", "probable"), ("possible", "probable"), 1),
)


def _plan_adverse_events(plan: Plan, child: Child, baseline: date,
                         rid: Callable[[str], str], last: datetime) -> None:
    rng = plan.rng
    chance = 0.5 if child.arm == "IL2" else 0.25
    if rng.random() > chance:
        return
    menu = [ae for ae in AE_MENU if child.arm == "IL2" or not ae.il2_only]
    ae = rng.choices(menu, [ae.weight for ae in menu])[0]
    relationship = rng.choice(ae.on_il2 if child.arm == "IL2" else ae.on_standard)
    onset = _clinic_time(baseline + timedelta(days=rng.randint(3, 150)), rng)
    if onset > last:
        return
    serious = ae.grade >= 3
    details = {
        "term": ae.term, "category": ae.category, "grade": ae.grade, "serious": serious,
        "seriousness_criteria": ["hospitalisation"] if serious else [],
        "relationship": relationship, "action_taken": "none", "outcome": "recovering",
    }
    ae_id = rid("AE")
    reporter = plan.caller(INVESTIGATOR)
    reported = plan.entry_time(onset)
    plan.on_subject(reported, child.code, "ae", reporter, ReportAdverseEvent(
        study=STUDY, subject=child.code, record_id=ae_id, observed_at=onset, details=details))
    ended = onset + timedelta(days=rng.randint(2, 12))
    plan.on_subject(max(plan.entry_time(ended), reported + timedelta(minutes=1)), child.code,
                    "ae", plan.caller(INVESTIGATOR), ResolveAdverseEvent(
                        study=STUDY, subject=child.code, record_id=ae_id, observed_at=ended,
                        outcome="recovered"))

