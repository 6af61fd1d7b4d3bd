"""Offline verification of an exported bundle, with only a trusted public key."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.cli import app as cli
from api.runtime import Runtime
from infra.keys import public_pem
from infra.ledger.offline import BundleInvalid, load_public_keys, verify_bundle
from infra.postgres import schema_for_study
from infra.settings import Settings
from tests.support import T0, enroll, envelope, register, simulated_clock

STUDY = "NCT04397107"


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "200"})
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, server_url: str) -> tuple[Path, Path, int]:
    """A small study, exported through the CLI; returns (bundle, trusted key file, events
    stored, the export's own record included)."""
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
                            str(out / "bundle.zip"), "--database-url", url], settings)
        assert code == 0, output
        with psycopg.connect(url) as conn:
            stored = conn.execute(f'SELECT count(*) FROM "{schema_for_study(STUDY)}".'
                                  "trialledger_events").fetchone()
    assert stored is not None
    return out / "bundle.zip", out / "trusted.pem", stored[0]


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
    assert not (tmp_path / "nowhere").exists()  # no embedded database was started


def test_another_key_fails(exported: tuple[Path, Path, int], tmp_path: Path) -> None:
    bundle, _, _ = exported
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(BundleInvalid, match=r"position 1 .*unknown key"):
        verify_bundle(bundle, load_public_keys(other.read_text()))
    code, output = run(["verify", "--bundle", str(bundle), "--public-key", str(other)],
                       Settings(database_url=None, home=tmp_path))
    assert code == 1 and "BUNDLE INVALID" in output


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_byte_fails(exported: tuple[Path, Path, int],
                                tmp_path_factory: pytest.TempPathFactory,
                                data: st.DataObject) -> None:
    bundle, trusted, _ = exported
    copy = tmp_path_factory.mktemp("tampered") / "bundle.zip"
    shutil.copy(bundle, copy)
    raw = bytearray(copy.read_bytes())
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    copy.write_bytes(bytes(raw))
    with pytest.raises(BundleInvalid):
        verify_bundle(copy, load_public_keys(trusted.read_text()))


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
