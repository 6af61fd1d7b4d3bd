"""NCT04397107: low-dose IL-2 in children with SLE, pSS or JIA (First Hospital of Jilin University).

Single-centre, open-label, prospective; 46 enrolled, Aug 2020 - Jun 2022; arms STD (standard
therapy) and IL2 (500,000 IU/m² SC on 5 consecutive days, then every 2 weeks for 6 months,
plus standard therapy). Everything here is data the domain checks commands against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.endpoints import Comparison, Endpoint, Timepoint
from domain.rules.ctcae import AE_CATEGORIES
from domain.rules.eligibility import Criterion, Fact

STUDY_ID = "NCT04397107"
REGISTERED_AT = datetime(2020, 8, 1, 8, 0, tzinfo=UTC)

ELIGIBILITY_CRITERIA: tuple[Criterion, ...] = (
    Criterion("I1", "inclusion", "age < 18 years old", "age_years", "lt", 18),
    Criterion("I2", "inclusion", "meet the diagnostic criteria of disease classification",
              "meets_classification_criteria", "is_true"),
    Criterion("I3", "inclusion", "HIV negative", "hiv_negative", "is_true"),
    Criterion("I4", "inclusion", "negative for hepatitis B virus", "hbv_negative", "is_true"),
    Criterion("I5", "inclusion", "negative for hepatitis C virus", "hcv_negative", "is_true"),
    Criterion("E1", "exclusion", "heart failure (cardiac function grade III or worse, NYHA)",
              "nyha_class", "ge", 3),
    Criterion("E2", "exclusion",
              "liver insufficiency (transaminase above 2 times the upper limit of normal)",
              "transaminase_x_uln", "gt", 2),
    Criterion("E3", "exclusion", "renal insufficiency (creatinine clearance <= 30 mL/min)",
              "creatinine_clearance_ml_min", "le", 30),
    Criterion("E4", "exclusion", "acute or severe infections such as bacteraemia and sepsis",
              "severe_infection", "is_true"),
    Criterion("E5", "exclusion", "malignant tumour", "malignancy", "is_true"),
    Criterion("E6a", "exclusion",
              "high-dose steroid pulse therapy or intravenous glucocorticoids in the last month",
              "recent_steroid_pulse_or_iv", "is_true"),
    Criterion("E6b", "exclusion", "rituximab, infliximab or other biological agents were used",
              "biologic_agent_used", "is_true"),
    Criterion("E7", "exclusion",
              "mental disorders or any other chronic illness or substance abuse that may "
              "interfere with the ability to comply or provide information",
              "compliance_interfering_condition", "is_true"),
    Criterion("E8", "exclusion", "inability to comply with the IL-2 treatment regimen",
              "unable_to_comply_il2", "is_true"),
)

ELIGIBLE_SCREENING_ANSWERS: dict[str, Fact] = {
    "meets_classification_criteria": True,
    "hiv_negative": True,
    "hbv_negative": True,
    "hcv_negative": True,
    "nyha_class": 1,
    "alt_u_l": 25.0,
    "alt_uln_u_l": 40.0,
    "ast_u_l": 28.0,
    "ast_uln_u_l": 40.0,
    "creatinine_clearance_ml_min": 110.0,
    "severe_infection": False,
    "malignancy": False,
    "recent_steroid_pulse_or_iv": False,
    "biologic_agent_used": False,
    "compliance_interfering_condition": False,
    "unable_to_comply_il2": False,
}

# Target day after baseline and half-width of the window, in days.
VISITS: tuple[tuple[str, str, int, int], ...] = (
    ("BASELINE", "Baseline", 0, 7),
    ("M1", "Month 1", 30, 14),
    ("M3", "Month 3", 91, 14),
    ("M6", "Month 6", 182, 14),
    ("M12", "Month 12", 365, 30),
)
VISIT_WINDOWS = {code: window for code, _, _, window in VISITS}

# What is expected of children aged 6-17 with these diseases: a value outside is kept, flagged
# and queried (a soft check), unlike one outside the catalogue's physical limits (refused).
RANGES: dict[str, dict[str, dict[str, Any]]] = {
    "vitals": {
        "HEIGHT": {"low": 100, "high": 195, "unit": "cm"},
        "WEIGHT": {"low": 14, "high": 110, "unit": "kg"},
        "TEMP": {"low": 35.5, "high": 39.5, "unit": "C"},
        "HR": {"low": 50, "high": 150, "unit": "beats/min"},
        "SYSBP": {"low": 75, "high": 150, "unit": "mmHg"},
        "DIABP": {"low": 40, "high": 100, "unit": "mmHg"},
        "RESP": {"low": 10, "high": 40, "unit": "breaths/min"},
    },
    "labs": {
        "C3": {"low": 0.15, "high": 3.0, "unit": "g/L"},
        "C4": {"low": 0.01, "high": 0.8, "unit": "g/L"},
        "ANTIDSDNA": {"low": 0, "high": 3000, "unit": "IU/mL"},
        "TREG": {"low": 0.5, "high": 30, "unit": "% of CD4+"},
        "CD4": {"low": 100, "high": 3000, "unit": "cells/uL"},
        "IL6": {"low": 0, "high": 200, "unit": "pg/mL"},
    },
}


# The IL-2 regimen's phases with their dose frequency (CDISC EXDOSFRQ codes).
IL2_SCHEDULE: tuple[dict[str, Any], ...] = (
    {"phase": "induction", "dose_per_m2": 500_000, "route": "SC", "frequency": "QD",
     "days": 5},
    {"phase": "maintenance", "dose_per_m2": 500_000, "route": "SC", "frequency": "Q2W",
     "months": 6},
)


# The registry's outcomes ("Outcome" in the registry record), as the engine computes them.
FOLLOW_UP = ("M1", "M3", "M6", "M12")
BY_VISIT = tuple(Timepoint(code, visit=code) for code in ("BASELINE", *FOLLOW_UP))
IL2_VS_STD_SHIFT = Comparison("hodges_lehmann", test="IL2", reference="STD")
IL2_VS_STD_PROPORTION = Comparison("newcombe", test="IL2", reference="STD")
REGISTRY_AE_CATEGORIES = tuple(c for c in AE_CATEGORIES if c != "other")

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        id="dose", type="primary",
        title="Change in steroid dose and immunosuppressor dose at 1 year compared to "
              "control group",
        measure="dose_per_m2", population="enrolled",
        # Baseline: the enrolment day (no course is recorded before consent); 1 year: the
        # mean over the 28 days ending on day 365, for subjects with a month-12 visit.
        timepoints=(Timepoint("BASELINE", window=(0, 0)), Timepoint("M12", window=(338, 365))),
        unit="glucocorticoids: prednisone-equivalent mg/m2/day; each immunosuppressant: "
             "mg/m2/day, or mg/m2/week for a weekly drug",
        derivation="Each day, the dose in force (valid time) of every course running at the "
                   "end of the day, as an average daily dose by its frequency (a weekly 15 mg "
                   "is 2.14 mg/day), divided by the body-surface area in force that day "
                   "(Mosteller, latest height and weight); glucocorticoids summed as "
                   "prednisone equivalents, each immunosuppressant on its own (x 7 for a "
                   "drug given weekly or less often); averaged over the days of the window. "
                   "Subjects: glucocorticoids, everyone in the arm; a drug, those with a "
                   "course of it. Change: 1 year - baseline, per subject.",
        statistic="n, mean, SD, median, Q1, Q3",
        comparison=IL2_VS_STD_SHIFT, time_frame="1 year",
        parameters={"change": ["M12", "BASELINE"],
                    "weekly_frequencies": ["QW", "Q2W", "QM"]}),
    Endpoint(
        id="complement-dsdna", type="secondary",
        title="The Immunologic Impact of IL-2 Treatment (C3, C4, anti-dsDNA)",
        measure="lab_change", population="enrolled", timepoints=BY_VISIT,
        unit="C3, C4: g/L; anti-dsDNA: IU/mL",
        derivation="The latest result of the test at each visit, in the first catalogued "
                   "unit (mg/dL x 0.01 = g/L); change: visit - baseline, per subject.",
        statistic="n, mean, SD, median, Q1, Q3",
        comparison=IL2_VS_STD_SHIFT, time_frame="1 month, 3 month, 6 month, 1 year",
        parameters={"tests": {"C3": "g/L", "C4": "g/L", "ANTIDSDNA": "IU/mL"},
                    "conversions": {"C3": {"mg/dL": 0.01}, "C4": {"mg/dL": 0.01}}}),
    Endpoint(
        id="immune-response", type="secondary", title="Immunological Responses",
        measure="immune_response", population="enrolled", timepoints=BY_VISIT,
        unit="immune cells: cells/uL; cytokines: pg/mL",
        derivation="Absolute counts: as measured (cells/uL), or a percentage of a parent "
                   "population times that population's absolute count at the same visit "
                   "(Treg = % of CD4+ x CD4+ cells/uL / 100). Changed: the visit's value "
                   "differs from baseline by more than the threshold (20 % of baseline; any "
                   "change from a baseline of 0), counted up and down.",
        statistic="n, mean, SD, median, Q1, Q3; subjects changed / subjects with both values",
        comparison=IL2_VS_STD_PROPORTION, time_frame="1 month, 3 month, 6 month, 1 year",
        parameters={"tests": {"TREG": "cells/uL", "CD4": "cells/uL", "CD8": "cells/uL",
                              "NK": "cells/uL", "IL6": "pg/mL", "IL10": "pg/mL",
                              "IL17A": "pg/mL", "IFNG": "pg/mL", "TNFA": "pg/mL"},
                    "percent_of": {"TREG": "CD4"}, "threshold_fraction": 0.2}),
    Endpoint(
        id="sledai", type="secondary", title="Change from baseline in SELENA SLEDAI Score",
        measure="score_change", population="enrolled", timepoints=BY_VISIT,
        unit="points (0-105)",
        derivation="The SELENA-SLEDAI total of the visit's latest assessment (SLE subjects); "
                   "change: visit - baseline, per subject.",
        statistic="n, mean, SD, median, Q1, Q3",
        comparison=IL2_VS_STD_SHIFT, time_frame="1 month, 3 month, 6 month, 1 year",
        parameters={"instrument": "SLEDAI"}),
    Endpoint(
        id="essdai", type="secondary",
        title="Change from baseline in EULAR SS disease activity index",
        measure="score_change", population="enrolled", timepoints=BY_VISIT,
        unit="points (0-123); activity levels",
        derivation="The ESSDAI total of the visit's latest assessment (pSS subjects); change: "
                   "visit - baseline; activity: low < 5, moderate 5-13, high >= 14.",
        statistic="n, mean, SD, median, Q1, Q3; subjects per activity level",
        comparison=IL2_VS_STD_SHIFT, time_frame="1 month, 3 month, 6 month, 1 year",
        parameters={"instrument": "ESSDAI",
                    "levels": [["low", None, 5], ["moderate", 5, 14], ["high", 14, None]]}),
    Endpoint(
        id="adverse-drug-reactions", type="secondary",
        title="Incidence of adverse drug reactions",
        measure="adverse_reactions", population="enrolled",
        timepoints=(Timepoint("Y1", window=(0, 365)),),
        unit="subjects (% of the arm) and events",
        derivation="Adverse events beginning from enrolment to day 365; a reaction: causality "
                   "possibly, probably or definitely related; by the registry's categories "
                   "and in all (any category), with every AE whatever its causality beside.",
        statistic="subjects, percent, events",
        comparison=IL2_VS_STD_PROPORTION, time_frame="up to 1 year",
        parameters={"categories": list(REGISTRY_AE_CATEGORIES),
                    "related": ["possible", "probable", "definite"]}),
)


# What an audit-trail review must see (domain.review): changes to the IL-2 dose, C3 and C4
# (the complement endpoint), and an AE's grade and causality; entries a month late.
AUDIT_REVIEW: dict[str, Any] = {
    "late_days": 30,
    "min_changes": 3,
    "sponsor_roles": ["monitor", "data_manager"],
    "critical_fields": [
        {"kind": "doses", "field": "dose"},
        {"kind": "labs", "field": "value", "code": "C3"},
        {"kind": "labs", "field": "value", "code": "C4"},
        {"kind": "adverse-events", "field": "grade"},
        {"kind": "adverse-events", "field": "relationship"},
    ],
}


def definition() -> dict[str, Any]:
    """The study definition, JSON-native, as registered."""
    return {
        "study_id": STUDY_ID,
        "title": "Low-dose interleukin-2 in children with systemic lupus erythematosus, "
                 "primary Sjögren syndrome or juvenile idiopathic arthritis",
        "start_date": "2020-08-15",
        "end_date": "2022-06-30",
        "arms": [
            {"code": "STD", "name": "Standard therapy"},
            {"code": "IL2", "name": "Low-dose IL-2 plus standard therapy"},
        ],
        "diseases": [
            {"code": "SLE", "name": "Systemic lupus erythematosus", "assessment": "SLEDAI"},
            {"code": "PSS", "name": "Primary Sjögren syndrome", "assessment": "ESSDAI"},
            {"code": "JIA", "name": "Juvenile idiopathic arthritis", "assessment": None},
        ],
        "sites": [
            {"code": "JLU1", "name": "The First Hospital of Jilin University",
             "city": "Changchun", "country": "CN", "time_zone": "Asia/Shanghai"},
        ],
        "visits": [
            {"code": code, "name": name, "day": day, "window_days": window}
            for code, name, day, window in VISITS
        ],
        "eligibility": [c.to_dict() for c in ELIGIBILITY_CRITERIA],
        "signature_meanings": [
            {"code": "authorship", "text": "I am the author of these data"},
            {"code": "review", "text": "I have reviewed these data"},
            {"code": "approval", "text": "I approve these data"},
            {"code": "responsibility",
             "text": "I take responsibility for the data in this casebook"},
        ],
        "products": [
            {"code": "IL2", "name": "Recombinant human interleukin-2", "unit": "IU",
             "regimen": "500,000 IU/m2 SC on 5 consecutive days, then every 2 weeks for 6 months",
             "dose_per_m2": 500_000,
             "schedule": [dict(phase) for phase in IL2_SCHEDULE]},
        ],
        "ranges": RANGES,
        "endpoints": [e.to_dict() for e in ENDPOINTS],
        "audit_review": AUDIT_REVIEW,
        # The reported term is free text: a name or initials typed into it by mistake can
        # be redacted (crypto-shredded) without losing the rest of the event.
        "identifying_items": {"adverse-events": ["term"]},
    }
