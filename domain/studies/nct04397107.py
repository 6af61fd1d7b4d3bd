"""NCT04397107: low-dose IL-2 in children with SLE, pSS or JIA (First Hospital of Jilin University).

Single-centre, open-label, prospective; 46 enrolled, Aug 2020 - Jun 2022; arms STD (standard
therapy) and IL2 (500,000 IU/m² SC on 5 consecutive days, then every 2 weeks for 6 months,
plus standard therapy). Everything here is data the domain checks commands against.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
             "city": "Changchun", "country": "CN"},
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
    }
