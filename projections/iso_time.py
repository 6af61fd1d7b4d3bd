"""ISO 8601 text of the times the read side renders, remembered for the times seen lately.

A rebuild renders each event's recorded time and each record's observed and entry times
several times over (record views, audit rows, versions): about eight ``isoformat`` calls an
event, a tenth of folding it. A look-up is a quarter of the call.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import lru_cache


def iso(value: datetime) -> str:
    """``value.isoformat()``."""
    # Keyed on the zone too: times in two zones that are the same instant compare equal.
    return _iso(value, value.tzinfo)


@lru_cache(maxsize=1 << 14)
def _iso(value: datetime, _zone: tzinfo | None) -> str:
    return value.isoformat()
