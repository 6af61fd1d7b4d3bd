"""A study's endpoints as data: what each outcome measures, in whom, when, in what unit, how
it is derived and summarised, and how the arms are compared.

A study definition declares its endpoints (``endpoints`` in its JSON form); the read side has
one engine that computes any study's tables from them. The engine knows a handful of
*measures* (how to turn a casebook into values), named here; everything else about an
endpoint (which drugs, tests, visits, windows, thresholds, categories) is its parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.errors import InvalidInput

# The measures the engine computes (projections/outcomes): each reads its own parameters.
MEASURES = (
    "dose_per_m2",  # average dose per m² of BSA over windows, per drug or drug class
    "lab_change",  # a lab value at each visit and its change from baseline
    "immune_response",  # absolute counts, and subjects changed beyond a threshold
    "score_change",  # an instrument's total, change from baseline, activity levels
    "adverse_reactions",  # AEs by category: related (ADR) and all, subjects and events
    "sdtm_ae_incidence",  # SDTM AE rows: subjects with at least one, and events
    "sdtm_ae_by_soc_severity",  # treatment-emergent SDTM AEs by body system and severity
    "sdtm_disposition",  # SDTM DS disposition events
)
# Who is counted: subjects with an arm and an enrolment date, by assigned arm; or, for an
# imported study, those treated, by the arm they actually received.
POPULATIONS = ("enrolled", "safety")
# Between-arm comparisons: a location shift of a continuous value, or a difference in
# proportions, each with a 95 % confidence interval.
COMPARISONS = ("hodges_lehmann", "newcombe")


@dataclass(frozen=True)
class Timepoint:
    """When an endpoint is read: a visit (``visit``), or a window of study days relative to
    the enrolment day (``window``: first and last day, both included)."""

    code: str
    visit: str | None = None
    window: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form."""
        return {"code": self.code, "visit": self.visit,
                "window": list(self.window) if self.window else None}


@dataclass(frozen=True)
class Comparison:
    """How the arms are compared: ``method`` of ``test`` against ``reference``."""

    method: str
    test: str
    reference: str
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form."""
        return {"method": self.method, "test": self.test, "reference": self.reference,
                "level": self.level}


@dataclass(frozen=True)
class Endpoint:
    """One outcome measure of a study."""

    id: str
    type: str  # primary | secondary | safety
    title: str
    measure: str
    population: str
    timepoints: tuple[Timepoint, ...]
    unit: str
    derivation: str
    statistic: str
    comparison: Comparison | None = None
    time_frame: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form, as a study definition stores it."""
        return {"id": self.id, "type": self.type, "title": self.title,
                "measure": self.measure, "population": self.population,
                "timepoints": [t.to_dict() for t in self.timepoints], "unit": self.unit,
                "derivation": self.derivation, "statistic": self.statistic,
                "comparison": self.comparison.to_dict() if self.comparison else None,
                "time_frame": self.time_frame, "parameters": dict(self.parameters)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "endpoint") -> Endpoint:
        """An endpoint from its JSON-native form, checked (``where`` names it in errors)."""
        if not isinstance(data, Mapping):
            raise InvalidInput(where, "must be an object")
        for key in ("id", "type", "title", "measure", "population", "unit", "derivation",
                    "statistic"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise InvalidInput(f"{where}.{key}", "is required (text)")
        if data["measure"] not in MEASURES:
            raise InvalidInput(f"{where}.measure", f"must be one of {', '.join(MEASURES)}")
        if data["population"] not in POPULATIONS:
            raise InvalidInput(f"{where}.population",
                               f"must be one of {', '.join(POPULATIONS)}")
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise InvalidInput(f"{where}.parameters", "must be an object")
        return cls(
            id=data["id"], type=data["type"], title=data["title"], measure=data["measure"],
            population=data["population"],
            timepoints=tuple(_timepoint(t, f"{where}.timepoints.{i}")
                             for i, t in enumerate(data.get("timepoints") or [])),
            unit=data["unit"], derivation=data["derivation"], statistic=data["statistic"],
            comparison=_comparison(data.get("comparison"), f"{where}.comparison"),
            time_frame=str(data.get("time_frame") or ""), parameters=dict(parameters))


def _timepoint(data: Any, where: str) -> Timepoint:
    if not isinstance(data, Mapping) or not isinstance(data.get("code"), str):
        raise InvalidInput(where, "needs a code")
    window = data.get("window")
    if window is not None and not (
            isinstance(window, Sequence) and len(window) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) for d in window)
            and window[0] <= window[1]):
        raise InvalidInput(f"{where}.window", "must be [first day, last day]")
    visit = data.get("visit")
    if (visit is None) == (window is None):
        raise InvalidInput(where, "needs a visit or a window, not both")
    return Timepoint(data["code"], visit, (window[0], window[1]) if window else None)


def _comparison(data: Any, where: str) -> Comparison | None:
    if data is None:
        return None
    if not isinstance(data, Mapping) or data.get("method") not in COMPARISONS:
        raise InvalidInput(f"{where}.method", f"must be one of {', '.join(COMPARISONS)}")
    if not isinstance(data.get("test"), str) or not isinstance(data.get("reference"), str):
        raise InvalidInput(where, "needs the test and reference arms")
    level = data.get("level", 0.95)
    if not isinstance(level, float) or not 0 < level < 1:
        raise InvalidInput(f"{where}.level", "must lie between 0 and 1")
    return Comparison(data["method"], data["test"], data["reference"], level)


def parse_endpoints(data: Any) -> tuple[Endpoint, ...]:
    """A definition's ``endpoints`` (a list of objects), checked; ids must be unique."""
    if not isinstance(data, list):
        raise InvalidInput("endpoints", "must be a list of endpoints")
    endpoints = tuple(Endpoint.from_dict(e, f"endpoints.{i}") for i, e in enumerate(data))
    ids = [e.id for e in endpoints]
    if len(set(ids)) != len(ids):
        raise InvalidInput("endpoints", "endpoint ids must be unique")
    return endpoints
