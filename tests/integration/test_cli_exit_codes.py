"""The CLI says what happened: 0 success, 1 evidence does not verify, 2 usage or environment;
one line per error (the traceback only with --debug); no export written over what is there;
an export recorded once complete, or recorded as failed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from application.exports import DestinationRefused, export_to_path
from application.runtime import Runtime
from domain.errors import Unauthenticated
from domain.study import Study
from infra.settings import Settings
from tests.support import (
    add_person,
    enroll,
    envelope,
    free_port,
    register,
    simulated_clock,
)

STUDY = "NCT04397107"
ROOT = Path(__file__).resolve().parents[2]
LEGACY_KEYS = ROOT / "tests" / "data" / "nct04397107-demo-bundle-69e9d0d.keys.pem"


def trialledger(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The command as a person runs it: its own process, its exit code and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIALLEDGER_HOME": str(home),
           "COLUMNS": "200"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_version_and_usage(tmp_path: Path) -> None:
    version = trialledger("--version", home=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("trialledger ")
    unknown = trialledger("export", "--no-such-option", home=tmp_path)
    assert unknown.returncode == 2


def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path: Path) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    for command in (["verify"], ["users", "list"], ["keys", "list"], ["validate"]):
        done = trialledger(*command, "--database-url", closed, home=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "database is not reachable" in lines[0], done.stderr
        assert "Traceback" not in done.stderr
    debug = trialledger("--debug", "verify", "--database-url", closed, home=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_bad_evidence_is_1_and_a_missing_file_or_key_is_2(tmp_path: Path) -> None:
    junk = tmp_path / "bundle.zip"
    junk.write_bytes(b"not a zip at all")
    bad = trialledger("verify", "--bundle", str(junk), "--public-key", str(LEGACY_KEYS),
                      home=tmp_path)
    assert bad.returncode == 1 and "BUNDLE INVALID" in bad.stdout
    missing = trialledger("verify", "--bundle", str(tmp_path / "nope.zip"), "--public-key",
                          str(LEGACY_KEYS), home=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    typo = trialledger("verify", "--bundle", str(junk), "--public-key",
                       str(tmp_path / "kyes.pem"), home=tmp_path)
    assert typo.returncode == 2 and "--public-key" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1


def _exports(runtime: Runtime) -> list[Study.Event]:
    app = runtime.study(STUDY)
    return [e for e in app.events.get(app.study().id)
            if isinstance(e, Study.ExportRecorded | Study.ExportFailed)]


@pytest.fixture
def study(runtime: Runtime) -> Runtime:
    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    enroll(app, "001")
    return runtime


def _export(settings: Settings, runtime: Runtime, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["export", "--study", STUDY, "--database-url", runtime.url,
                                      *args], env={"TRIALLEDGER_HOME": str(settings.home),
                                                   "COLUMNS": "200"})
    return result.exit_code, result.output


def test_exports_never_overwrite_without_force(study: Runtime, settings: Settings,
                                               tmp_path: Path) -> None:
    target = tmp_path / "snapshot.xml"
    target.write_text("keep me")
    code, out = _export(settings, study, "--format", "odm-snapshot", "-o", str(target))
    assert code == 2 and "--force" in out and target.read_text() == "keep me"
    code, out = _export(settings, study, "--format", "odm-snapshot", "-o", str(target),
                        "--force")
    assert code == 0, out
    assert target.read_text().startswith("<?xml")

    directory = tmp_path / "csv"
    directory.mkdir()
    code, out = _export(settings, study, "--format", "csv", "-o", str(directory))
    assert code == 0, out  # an empty directory is no one's work
    code, out = _export(settings, study, "--format", "csv", "-o", str(directory))
    assert code == 2 and "not empty" in out
    (directory / "mine.txt").write_text("a file of someone's")
    code, out = _export(settings, study, "--format", "csv", "-o", str(directory), "--force")
    assert code == 0, out
    assert not (directory / "mine.txt").exists() and (directory / "DM.csv").exists()
    code, out = _export(settings, study, "--format", "csv", "-o",
                        str(tmp_path / "no" / "such" / "dir"))
    assert code == 2 and "not a directory" in out
    # Three exports completed; the refusals recorded nothing.
    assert [type(e).__name__ for e in _exports(study)] == ["ExportRecorded"] * 3
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_a_failed_export_is_recorded_as_failed_and_leaves_nothing(study: Runtime,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "archive.xml"

    def breaks_half_way(path: Path) -> None:
        path.write_text("<ODM half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        export_to_path(study, STUDY, "odm-archive", target, None, envelope(), breaks_half_way)
    assert list(out.iterdir()) == []
    [failed] = _exports(study)
    assert isinstance(failed, Study.ExportFailed)
    assert failed.export_format == "odm-archive"
    assert "No space left on device" in failed.failure

    target.write_text("an earlier export")
    with pytest.raises(DestinationRefused):
        export_to_path(study, STUDY, "odm-archive", target, None, envelope(), breaks_half_way)
    assert target.read_text() == "an earlier export" and len(_exports(study)) == 1
    written = export_to_path(study, STUDY, "odm-archive", target, None, envelope(),
                             lambda path: path.write_text("complete"), replace=True)
    assert written == len("complete") and target.read_text() == "complete"
    assert [type(e).__name__ for e in _exports(study)] == ["ExportFailed", "ExportRecorded"]


def test_people_clients_and_keys_are_listed_and_a_client_revoked(study: Runtime,
                                                                  settings: Settings) -> None:
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, [*args, "--database-url", study.url], env={
            "TRIALLEDGER_HOME": str(settings.home), "COLUMNS": "300"})
        return result.exit_code, result.output

    add_person(study, "mlee", "monitor", site="JLU1")
    code, out = run("clients", "add", "--client-id", "edc-app", "--name", "EDC app")
    assert code == 0, out
    secret = out.rsplit(": ", 1)[1].strip()
    assert run("clients", "revoke", "--client-id", "edc-app")[0] == 0
    code, out = run("clients", "revoke", "--client-id", "edc-app")
    assert code == 2 and "already revoked" in out
    code, out = run("clients", "list")
    assert code == 0 and "edc-app" in out and "revoked" in out
    with pytest.raises(Unauthenticated):
        study.people().authenticate_client("edc-app", secret)
    code, out = run("users", "list")
    assert code == 0 and "mlee" in out and f"monitor@{STUDY}/JLU1" in out
    code, out = run("keys", "list")
    key = study.study(STUDY).keyring()
    assert key is not None
    [key_id] = key.keys
    assert code == 0 and key_id in out and "active" in out
