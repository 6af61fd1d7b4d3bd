"""Which endpoints a study has: those its definition declares, or, for a definition stored
before endpoints were declared, those of its known protocol (by study id); else none."""

from __future__ import annotations

from collections.abc import Mapping

from domain.endpoints import Endpoint
from domain.sdtm import SDTM_ENDPOINTS
from domain.studies import nct04397107
from domain.study import StudyDefinition

# Studies whose logs predate declared endpoints: NCT04397107 (the demo, the legacy bundle)
# and the CDISC pilot as imported from SDTM.
KNOWN: Mapping[str, tuple[Endpoint, ...]] = {
    nct04397107.STUDY_ID: nct04397107.ENDPOINTS,
    "CDISCPILOT01": tuple(e for endpoints in SDTM_ENDPOINTS.values() for e in endpoints),
}


def study_endpoints(definition: StudyDefinition) -> tuple[Endpoint, ...]:
    """The endpoints of the study ``definition`` describes."""
    if definition.endpoints is not None:
        return definition.endpoints
    return KNOWN.get(definition.study_id, ())
