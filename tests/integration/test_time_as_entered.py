"""Time as entered: a site at UTC+8 enters a lab drawn at 2021-03-01T07:00+08:00 (which is
2021-02-28 in UTC). The event keeps the offset beside the UTC instant; SDTM exports (CSV,
Dataset-JSON) show the site's local date and time, ODM keeps the offset, the casebook shows
both. A record entered in UTC stays in UTC.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pypdf
import pytest

from application.exports import (
    write_casebook_zip,
    write_csv_dir,
    write_domain_dir,
    write_rendering,
)
from application.runtime import Runtime
from domain.studies import nct04397107
from tests.interchange import valid_dataset_json
from tests.support import T0, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
CHANGCHUN = timezone(timedelta(hours=8))
DRAWN = datetime(2021, 3, 1, 7, 0, tzinfo=CHANGCHUN)
DRAWN_IN_UTC = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)


@dataclass
class Entered:
    runtime: Runtime
    out: Path


@pytest.fixture
def entered(runtime: Runtime, tmp_path: Path) -> Entered:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=60))
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB-LOCAL", DRAWN, "C3", 1.1, "g/L", envelope(), t, 0.9, 1.8))
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB-UTC", DRAWN_IN_UTC, "C4", 0.2, "g/L", envelope(), t, 0.1, 0.4))
    app.close()
    return Entered(runtime, tmp_path)


def test_the_entry_keeps_its_offset_beside_the_utc_instant(entered: Entered) -> None:
    subject = entered.runtime.study(STUDY).subject("001")
    record = subject.records["LB-LOCAL"]
    assert record.observed_at == DRAWN and record.observed_at.utcoffset() == timedelta(0)
    assert record.observed_offset == "+08:00"
    assert subject.records["LB-UTC"].observed_offset == "+00:00"


def test_sdtm_exports_show_the_sites_local_date(entered: Entered) -> None:
    write_csv_dir(entered.runtime, STUDY, entered.out / "csv", None)
    with (entered.out / "csv" / "LB.csv").open(newline="") as f:
        lbdtc = {row["LBSPID"]: row["LBDTC"] for row in csv.DictReader(f)}
    # The local date (1 March), not the UTC one (28 February); no offset, as SDTM writes it.
    assert lbdtc == {"LB-LOCAL": "2021-03-01T07:00:00", "LB-UTC": "2021-02-01T09:00:00"}
    write_domain_dir(entered.runtime, STUDY, "dataset-json", entered.out / "dj", None)
    document = valid_dataset_json((entered.out / "dj" / "lb.json").read_bytes())
    names = [column["name"] for column in document["columns"]]
    rows = [dict(zip(names, row, strict=True)) for row in document["rows"]]
    assert {r["LBSPID"]: r["LBDTC"] for r in rows} == lbdtc


@pytest.mark.parametrize("export_format", ["odm-snapshot", "odm-archive"])
def test_odm_keeps_the_offset(entered: Entered, export_format: str) -> None:
    out = io.BytesIO()
    write_rendering(entered.runtime, STUDY, export_format, out, None)
    xml = out.getvalue().decode()
    assert 'Value="2021-03-01T07:00:00+08:00"' in xml
    assert 'Value="2021-02-01T09:00:00+00:00"' in xml
    assert "2021-02-28T23:00:00" not in xml


def test_the_casebook_shows_utc_and_the_local_time(entered: Entered) -> None:
    assert write_casebook_zip(entered.runtime, STUDY, entered.out / "cb.zip", None) == 1
    with zipfile.ZipFile(entered.out / "cb.zip") as z:
        reader = pypdf.PdfReader(io.BytesIO(z.read("001.pdf")))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "LB-LOCAL 2021-02-28 23:00:00 UTC 2021-03-01 07:00:00 +08:00" in text
