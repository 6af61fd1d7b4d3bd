"""The regulator's bundle: offline verification with only a trusted public key; the ledger
beside ODM, CSV and casebooks as of a time, every file under the signed manifest."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from infra.keys import public_pem
from infra.ledger.bundle import canonical_info
from infra.postgres import schema_for_study
from infra.settings import Settings
from tests.support import T0, enroll, envelope, register, simulated_clock
from trialledger_verifier.bundle import BundleInvalid, load_public_keys, verify_bundle

STUDY = "NCT04397107"
XSD = (Path(__file__).resolve().parents[2] / ".." / "shared" / "standards" / "odm-1.3.2"
       / "ODM1-3-2.xsd")
# Between the two enrollments: the bundle as of then shows child 001 only.
BETWEEN = T0 + timedelta(minutes=30)


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, server_url: str) -> tuple[Path, Path, int]:
    """A small study, exported through the CLI; returns (bundle, trusted key file, events
    in the bundle: every event stored but the bundle's own export record, made once the file
    was complete). A second bundle, as of ``BETWEEN``, is written beside the first as
    ``bundle-between.zip`` (its record is in the first)."""
    from infra.postgres import temporary_database

    home = tmp_path_factory.mktemp("bundle-home")
    out = tmp_path_factory.mktemp("bundle")
    with temporary_database(server_url, "tl_test") as url:
        settings = Settings(database_url=url, home=home)
        runtime = Runtime(settings, url)
        clock = simulated_clock()
        app = runtime.study(STUDY, clock=clock)
        register(app)
        for n, code in enumerate(("001", "002")):
            clock.set(T0 + timedelta(hours=n))
            enroll(app, code)
            app.on_subject(code, lambda s, t: s.record_lab_result(
                "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
        runtime.close()
        app.close()
        code, output = run(["keys", "export-public", "-o", str(out / "trusted.pem")], settings)
        assert code == 0, output
        code, output = run(["export", "--study", STUDY, "--format", "bundle", "-o",
                            str(out / "bundle-between.zip"), "--as-of", BETWEEN.isoformat(),
                            "--database-url", url], settings)
        assert code == 0, output
        code, output = run(["export", "--study", STUDY, "--format", "bundle", "-o",
                            str(out / "bundle.zip"), "--database-url", url], settings)
        assert code == 0, output
        with psycopg.connect(url) as conn:
            stored = conn.execute(f'SELECT count(*) FROM "{schema_for_study(STUDY)}".'
                                  "trialledger_events").fetchone()
    assert stored is not None
    return out / "bundle.zip", out / "trusted.pem", stored[0] - 1


def members(bundle: Path) -> dict[str, bytes]:
    """Every member's bytes, in the bundle's order."""
    with zipfile.ZipFile(bundle) as z:
        return {name: z.read(name) for name in z.namelist()}


def rebuilt(files: dict[str, bytes], path: Path) -> Path:
    """A canonical zip of ``files`` (as the exporter writes one) at ``path``: a tampering
    that leaves every zip header and CRC right, so only the manifest can catch it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            with z.open(canonical_info(name), "w", force_zip64=True) as member:
                member.write(data)
    return path


@pytest.mark.requirement("R15")
def test_the_bundle_verifies_offline_with_the_right_key(exported: tuple[Path, Path, int]) -> None:
    bundle, trusted, events = exported
    report = verify_bundle(bundle, load_public_keys(trusted.read_text()))
    assert (report.study, report.events) == (STUDY, events)
    assert report.latest_size == events


def test_the_cli_verifies_a_bundle_without_a_database(exported: tuple[Path, Path, int],
                                                      tmp_path: Path) -> None:
    bundle, trusted, events = exported
    settings = Settings(database_url=None, home=tmp_path / "nowhere")
    code, output = run(["verify", "--bundle", str(bundle), "--public-key", str(trusted)],
                       settings)
    assert code == 0, output
    assert f"{events} events" in output
    assert not settings.pgdata.exists()  # no embedded database was started


def test_another_key_fails(exported: tuple[Path, Path, int], tmp_path: Path) -> None:
    bundle, _, _ = exported
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(BundleInvalid, match=r"position 1 .*unknown key"):
        verify_bundle(bundle, load_public_keys(other.read_text()))
    code, output = run(["verify", "--bundle", str(bundle), "--public-key", str(other)],
                       Settings(database_url=None, home=tmp_path))
    assert code == 1 and "BUNDLE INVALID" in output
    # A file name that reads as console markup is named as it is.
    odd = tmp_path / "[bold]bundle.zip"
    odd.write_bytes(bundle.read_bytes())
    code, output = run(["verify", "--bundle", str(odd), "--public-key", str(other)],
                       Settings(database_url=None, home=tmp_path))
    assert code == 1 and "[bold]bundle.zip" in output


def _regions(bundle: Path) -> dict[str, tuple[int, int]]:
    """The byte range of each member (local header and data) and of the central directory."""
    with zipfile.ZipFile(bundle) as z:
        infos = sorted(z.infolist(), key=lambda i: i.header_offset)
        ends = [i.header_offset for i in infos[1:]] + [z.start_dir]
        regions = {i.filename: (i.header_offset, end) for i, end in zip(infos, ends, strict=True)}
    regions["(central directory)"] = (ends[-1], bundle.stat().st_size)
    return regions


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@pytest.mark.requirement("R15", "R21")
@given(st.data())
def test_any_changed_byte_fails(exported: tuple[Path, Path, int],
                                tmp_path_factory: pytest.TempPathFactory,
                                data: st.DataObject) -> None:
    """A byte of any member (its header or its content: ledger, ODM, CSV, casebook,
    manifest) or of the central directory, flipped in place."""
    bundle, trusted, _ = exported
    regions = _regions(bundle)
    start, end = regions[data.draw(st.sampled_from(sorted(regions)), label="member")]
    copy = tmp_path_factory.mktemp("tampered") / "bundle.zip"
    shutil.copy(bundle, copy)
    raw = bytearray(copy.read_bytes())
    index = data.draw(st.integers(start, end - 1), label="byte")
    raw[index] ^= data.draw(st.integers(1, 255))
    copy.write_bytes(bytes(raw))
    with pytest.raises(BundleInvalid):
        verify_bundle(copy, load_public_keys(trusted.read_text()))


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_byte_fails_even_in_a_well_formed_zip(
        exported: tuple[Path, Path, int], tmp_path_factory: pytest.TempPathFactory,
        data: st.DataObject) -> None:
    """A byte of any member's content changed and the zip written anew, CRCs and all: the
    zip itself is sound, the manifest's hashes and signature must catch it."""
    bundle, trusted, _ = exported
    files = members(bundle)
    name = data.draw(st.sampled_from(sorted(files)), label="member")
    content = bytearray(files[name])
    content[data.draw(st.integers(0, len(content) - 1), label="byte")] ^= data.draw(
        st.integers(1, 255))
    files[name] = bytes(content)
    copy = rebuilt(files, tmp_path_factory.mktemp("tampered") / "bundle.zip")
    with pytest.raises(BundleInvalid):
        verify_bundle(copy, load_public_keys(trusted.read_text()))


def test_an_untouched_rebuild_verifies(exported: tuple[Path, Path, int],
                                       tmp_path: Path) -> None:
    """The rebuilding above is faithful: the failures it provokes are the tampering's."""
    bundle, trusted, _ = exported
    copy = rebuilt(members(bundle), tmp_path / "bundle.zip")
    assert copy.read_bytes() == bundle.read_bytes()
    verify_bundle(copy, load_public_keys(trusted.read_text()))


def test_a_cut_off_bundle_is_refused_and_said_to_be_cut_off(exported: tuple[Path, Path, int],
                                                            tmp_path: Path) -> None:
    """A download that stopped part-way (at any member, inside the central directory or its
    end record) is refused, as cut off, in one line from the CLI and without a traceback."""
    bundle, trusted, _ = exported
    raw = bundle.read_bytes()
    regions = _regions(bundle)
    cuts = sorted({start + (end - start) // 2 for start, end in regions.values()}
                  | {regions["(central directory)"][0], len(raw) - 10, len(raw) - 1})
    keys = load_public_keys(trusted.read_text())
    settings = Settings(database_url=None, home=tmp_path / "nowhere")
    for cut in cuts:
        partial = tmp_path / f"cut-{cut}.zip"
        partial.write_bytes(raw[:cut])
        with pytest.raises(BundleInvalid, match="the file is cut off"):
            verify_bundle(partial, keys)
        code, output = run(["verify", "--bundle", str(partial), "--public-key", str(trusted)],
                           settings)
        assert code == 1 and "cut off" in output and len(output.strip().splitlines()) == 1, (
            output)
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(BundleInvalid, match="the file is empty"):
        verify_bundle(tmp_path / "empty.zip", keys)


@pytest.mark.requirement("R15")
def test_a_changed_casebook_is_named(exported: tuple[Path, Path, int], tmp_path: Path) -> None:
    bundle, trusted, _ = exported
    files = members(bundle)
    files["casebooks/001.html"] = files["casebooks/001.html"].replace(b"0.8", b"0.9")
    with pytest.raises(BundleInvalid, match=r"casebooks/001\.html does not match its SHA-256"):
        verify_bundle(rebuilt(files, tmp_path / "b.zip"), load_public_keys(trusted.read_text()))


def test_files_present_but_unlisted_or_listed_but_absent_fail(
        exported: tuple[Path, Path, int], tmp_path: Path) -> None:
    bundle, trusted, _ = exported
    keys = load_public_keys(trusted.read_text())
    files = members(bundle)
    extra = {**{k: v for k, v in files.items() if not k.startswith("manifest")},
             "casebooks/003.html": b"<p>a subject nobody enrolled</p>",
             **{k: v for k, v in files.items() if k.startswith("manifest")}}
    with pytest.raises(BundleInvalid, match=r"casebooks/003\.html is in the bundle but not "
                                            "listed"):
        verify_bundle(rebuilt(extra, tmp_path / "extra.zip"), keys)
    missing = {k: v for k, v in files.items() if k != "csv/LB.csv"}
    with pytest.raises(BundleInvalid, match=r"csv/LB\.csv is listed in the manifest but "
                                            "absent"):
        verify_bundle(rebuilt(missing, tmp_path / "missing.zip"), keys)


def test_the_bundle_holds_renderings_the_ledger_and_a_full_manifest(
        exported: tuple[Path, Path, int]) -> None:
    bundle, trusted, events = exported
    files = members(bundle)
    manifest = json.loads(files["manifest.json"])
    assert list(files) == ["events.jsonl", "leaves.jsonl", "checkpoints.jsonl",
                           "public_keys.pem", *sorted(manifest["files"].keys() - {
                               "events.jsonl", "leaves.jsonl", "checkpoints.jsonl",
                               "public_keys.pem"}), "manifest.json", "manifest.sig"]
    assert {"odm/snapshot.xml", "odm/archive.xml", "csv/DM.csv", "csv/LB.csv",
            "csv/audit_trail.csv", "csv/audit_trail.jsonl", "csv/ADSL.csv", "csv/ADLIST.csv",
            "casebooks/001.html", "casebooks/001.pdf", "casebooks/002.html",
            "casebooks/002.pdf"} <= set(files)
    # The analysis datasets behind the outcome tables, beside the CSV files.
    adsl = files["csv/ADSL.csv"].decode().splitlines()
    assert len(adsl) == 3 and ",001," in adsl[1] and ",002," in adsl[2]
    assert manifest["software_version"].startswith("trialledger ")
    created = datetime.fromisoformat(manifest["created_at"])
    assert datetime.fromisoformat(manifest["as_of"]) == created  # default: as of now
    note = manifest["checkpoint"]["note"].split("\n")
    assert manifest["checkpoint"]["tree_size"] == int(note[1]) == events
    assert manifest["checkpoint"]["root"] == note[2]
    report = verify_bundle(bundle, load_public_keys(trusted.read_text()))
    assert (report.files, report.as_of) == (len(manifest["files"]), manifest["as_of"])


@pytest.mark.requirement("R22")
def test_odm_files_in_the_bundle_validate_against_the_xsd(
        exported: tuple[Path, Path, int]) -> None:
    bundle, _, _ = exported
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    for name in ("odm/snapshot.xml", "odm/archive.xml"):
        root = etree.fromstring(members(bundle)[name])
        assert schema.validate(root), (name, schema.error_log)


def test_as_of_shapes_the_renderings_not_the_ledger(exported: tuple[Path, Path, int]) -> None:
    bundle, trusted, _ = exported
    between = bundle.with_name("bundle-between.zip")
    files = members(between)
    manifest = json.loads(files["manifest.json"])
    assert datetime.fromisoformat(manifest["as_of"]) == BETWEEN
    assert [n for n in files if n.startswith("casebooks/")] == [
        "casebooks/001.html", "casebooks/001.pdf"]
    snapshot = etree.fromstring(files["odm/snapshot.xml"])
    assert datetime.fromisoformat(snapshot.get("AsOfDateTime", "")) == BETWEEN
    dm = files["csv/DM.csv"].decode().splitlines()
    assert len(dm) == 2 and ",001," in dm[1]
    # The ledger holds the whole log as it stood at export: 002's enrollment included.
    events = [json.loads(line) for line in io.BytesIO(files["events.jsonl"])]
    assert len({e["originator_id"] for e in events}) >= 4  # study, keyring, two subjects
    report = verify_bundle(between, load_public_keys(trusted.read_text()))
    assert report.as_of == manifest["as_of"]


def test_a_held_newer_checkpoint_exposes_an_older_bundle(exported: tuple[Path, Path, int]) -> None:
    bundle, trusted, events = exported
    held = f"trialledger/NCT04397107\n{events + 1}\n" + "A" * 43 + "=\n"
    with pytest.raises(BundleInvalid, match="rolled back"):
        verify_bundle(bundle, load_public_keys(trusted.read_text()), held)


def test_keys_in_the_bundle_are_the_deployments(exported: tuple[Path, Path, int]) -> None:
    bundle, trusted, _ = exported
    import zipfile

    with zipfile.ZipFile(bundle) as z:
        inside = load_public_keys(z.read("public_keys.pem").decode())
    assert inside.keys() == load_public_keys(trusted.read_text()).keys()


def test_on_two_cores_a_bundle_starts_no_casebook_worker_while_its_tables_render(
        tmp_path: Path, server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tables' renderings keep the second core busy: the casebooks start no worker
    process while they run (one of about 120 MB fewer at once, bench/README.md), at most one
    once they are done, and are all in."""
    import psutil

    from application.exports import write_bundle_file
    from infra.postgres import temporary_database
    from projections import casebook_doc

    started = []

    class Checked(casebook_doc.RenderWorker):
        def __init__(self) -> None:
            tables = [p for p in psutil.Process().children(recursive=True)
                      if any("application.bundle_tables" in part for part in p.cmdline())]
            assert not tables, "a casebook worker was started beside the tables' renderings"
            started.append(self)
            super().__init__()

    monkeypatch.setattr(casebook_doc, "PARALLEL_FROM", 1)
    monkeypatch.setattr(casebook_doc.os, "sched_getaffinity", lambda pid: {0, 1},
                        raising=False)
    monkeypatch.setattr(casebook_doc, "RenderWorker", Checked)
    with temporary_database(server_url, "tl_test") as url:
        runtime = Runtime(Settings(database_url=url, home=tmp_path / "home"), url)
        app = runtime.study(STUDY, clock=simulated_clock())
        register(app)
        for code in ("001", "002"):
            enroll(app, code)
        app.close()
        try:
            write_bundle_file(runtime, STUDY, tmp_path / "bundle.zip")
        finally:
            runtime.close()
    assert len(started) <= 1
    with zipfile.ZipFile(tmp_path / "bundle.zip") as z:
        assert {"casebooks/001.pdf", "casebooks/002.pdf"} <= set(z.namelist())
