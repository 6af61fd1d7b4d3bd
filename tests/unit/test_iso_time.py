"""The remembered ISO text of times: the same instant in two zones keeps each its offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from projections.iso_time import iso


def test_the_same_instant_in_two_zones_keeps_its_own_offset() -> None:
    utc = datetime(2021, 3, 15, 4, 0, tzinfo=UTC)
    changchun = utc.astimezone(timezone(timedelta(hours=8)))
    assert utc == changchun  # equal (and equal hashes) as instants
    assert iso(utc) == "2021-03-15T04:00:00+00:00"
    assert iso(changchun) == "2021-03-15T12:00:00+08:00"
    assert iso(utc) == utc.isoformat()  # asked again: the remembered text
