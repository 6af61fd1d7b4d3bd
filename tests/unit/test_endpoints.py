"""Endpoints are data in the study definition; older definitions get their protocol's."""

from __future__ import annotations

import pytest

from domain.endpoints import parse_endpoints
from domain.errors import InvalidInput
from domain.studies import nct04397107
from domain.studies.protocols import study_endpoints
from domain.study import StudyDefinition


def test_the_definition_declares_the_registrys_six_outcomes_and_they_round_trip() -> None:
    data = nct04397107.definition()
    parsed = StudyDefinition.from_dict(data).endpoints
    assert parsed == nct04397107.ENDPOINTS
    assert [e.type for e in parsed or ()].count("primary") == 1
    assert len(parsed or ()) == 6


def test_a_stored_definition_without_endpoints_gets_its_protocols_by_study_id() -> None:
    legacy = {k: v for k, v in nct04397107.definition().items() if k != "endpoints"}
    assert study_endpoints(StudyDefinition.from_dict(legacy)) == nct04397107.ENDPOINTS
    other = StudyDefinition.from_dict({**legacy, "study_id": "OTHER-1"})
    assert study_endpoints(other) == ()  # no other study's tables
    declared_none = StudyDefinition.from_dict({**legacy, "endpoints": []})
    assert study_endpoints(declared_none) == ()


@pytest.mark.parametrize(("change", "field"), [
    ({"measure": "guesswork"}, "endpoints.0.measure"),
    ({"population": "everyone"}, "endpoints.0.population"),
    ({"timepoints": [{"code": "X"}]}, "endpoints.0.timepoints.0"),
    ({"timepoints": [{"code": "X", "window": [5, 1]}]}, "endpoints.0.timepoints.0.window"),
    ({"comparison": {"method": "t-test", "test": "A", "reference": "B"}},
     "endpoints.0.comparison.method"),
    ({"unit": ""}, "endpoints.0.unit"),
])
def test_a_malformed_endpoint_is_refused_naming_the_field(change: dict[str, object],
                                                          field: str) -> None:
    endpoint = {**nct04397107.ENDPOINTS[0].to_dict(), **change}
    with pytest.raises(InvalidInput) as refused:
        parse_endpoints([endpoint])
    assert refused.value.problems[0].field == field
