"""Site time zones: refused unless IANA names, and times shown on the site's clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.console.casebook_view import site_time, site_zones
from domain.errors import InvalidInput
from domain.studies import nct04397107
from domain.study import StudyDefinition


def _with_zone(zone: object) -> dict[str, object]:
    definition = nct04397107.definition()
    definition["sites"] = [{**definition["sites"][0], "time_zone": zone}]
    return definition


def test_a_site_time_zone_must_be_a_known_iana_name() -> None:
    assert StudyDefinition.from_dict(_with_zone("Asia/Shanghai")).sites["JLU1"][
        "time_zone"] == "Asia/Shanghai"
    for wrong in ("Mars/Olympus", "../etc/passwd", 8):
        with pytest.raises(InvalidInput) as refused:
            StudyDefinition.from_dict(_with_zone(wrong))
        assert "sites.time_zone" in str(refused.value.problems)


def test_times_on_the_sites_clock_in_its_zone_else_at_the_entered_offset() -> None:
    when = datetime(2021, 3, 14, 6, 30, tzinfo=UTC)
    assert site_time(when, "Asia/Shanghai") == "2021-03-14 14:30:00+08:00 Asia/Shanghai"
    # Daylight saving is the zone's, not a fixed offset's: New York moved that morning.
    assert site_time(when, "America/New_York") == "2021-03-14 01:30:00-05:00 America/New_York"
    assert site_time("2021-03-14T12:00:00+00:00", "America/New_York").startswith(
        "2021-03-14 08:00:00-04:00")
    assert site_time(when, None, "+05:30") == "2021-03-14 12:00:00+05:30"
    assert site_time(when, None) == ""
    assert site_zones(nct04397107.definition()) == {"JLU1": "Asia/Shanghai"}
