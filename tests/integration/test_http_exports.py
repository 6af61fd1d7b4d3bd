"""Exports over HTTP: streamed, valid, verifiable, and each one recorded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from lxml import etree

from application.runtime import Runtime
from domain.study import Study
from infra import keys
from tests.support import api_client, study_with_a_corrected_lab
from trialledger_verifier.bundle import verify_bundle

STUDY = "NCT04397107"
XSD = (Path(__file__).resolve().parents[2] / ".." / "shared" / "standards" / "odm-1.3.2"
       / "ODM1-3-2.xsd")


def _exports(runtime: Runtime) -> list[Study.ExportRecorded]:
    app = runtime.study(STUDY)
    study_id = app.study().id
    return [e for e in app.events.get(study_id) if isinstance(e, Study.ExportRecorded)]


def test_odm_archive_and_csv_stream_and_are_recorded(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    regulator = api_client(runtime, "regulator", username="inspector")
    response = regulator.get(f"/v1/studies/{STUDY}/exports/odm-archive")
    assert response.status_code == 200, response.text
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    root = etree.fromstring(response.content)
    assert schema.validate(root), schema.error_log
    csv = regulator.get(f"/v1/studies/{STUDY}/exports/csv",
                        params={"as_of": "2021-01-12T00:00:00+00:00"})
    assert csv.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(csv.content)).namelist()
    assert {"DM.csv", "LB.csv", "audit_trail.csv", "audit_trail.jsonl"} <= set(names)
    recorded = _exports(runtime)
    assert [(e.export_format, e.envelope.actor.printed_name) for e in recorded] == [
        ("odm-archive", "Inspector"), ("csv", "Inspector")]
    assert recorded[1].as_of is not None and recorded[1].as_of.isoformat().startswith(
        "2021-01-12")


def test_the_bundle_over_http_verifies_offline(runtime: Runtime, tmp_path: Path) -> None:
    study_with_a_corrected_lab(runtime)
    regulator = api_client(runtime, "regulator")
    response = regulator.get(f"/v1/studies/{STUDY}/exports/bundle")
    assert response.status_code == 200
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(response.content)
    report = verify_bundle(bundle, keys.load_public_keys(runtime.settings))
    assert report.study == STUDY and report.events > 0
    # As of before the correction (T0 + 9 days): the bundle's casebook shows the C3 entered.
    as_of = "2021-01-12T00:00:00+00:00"
    earlier = regulator.get(f"/v1/studies/{STUDY}/exports/bundle", params={"as_of": as_of})
    assert earlier.status_code == 200
    (tmp_path / "earlier.zip").write_bytes(earlier.content)
    report = verify_bundle(tmp_path / "earlier.zip", keys.load_public_keys(runtime.settings))
    assert report.as_of == as_of
    with zipfile.ZipFile(tmp_path / "earlier.zip") as z:
        page = z.read("casebooks/001.html").decode()
        assert "<th>Result</th>" in page and "<td>C3</td><td>g/L</td><td>0.8</td>" in page
        assert "<td>0.6</td>" not in page
        assert "casebooks/001.pdf" in z.namelist()


def test_exports_are_refused_to_the_site_and_with_a_naive_time(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    assert coordinator.get(f"/v1/studies/{STUDY}/exports/odm-snapshot").status_code == 403
    regulator = api_client(runtime, "regulator")
    naive = regulator.get(f"/v1/studies/{STUDY}/exports/odm-snapshot",
                          params={"as_of": "2021-01-12T00:00:00"})
    assert naive.status_code == 422
    assert regulator.get(f"/v1/studies/{STUDY}/exports/pdf").status_code == 422
    assert _exports(runtime) == []
