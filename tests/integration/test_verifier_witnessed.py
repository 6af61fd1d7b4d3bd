"""``trialledger-verify --witness``: a bundle exported by a deployment with a witness (its own
process) verifies offline with that witness's key, and not with another witness's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from infra.ledger.cosignature import Cosigner
from infra.ledger.note import verifier_key
from infra.settings import Settings
from tests.support import served_witness, study_with_a_child
from trialledger_verifier.cli import main

STUDY = "NCT04397107"


def _cli(*args: str, settings: Settings, **env: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"TRIALLEDGER_HOME": str(settings.home),
                                                      "COLUMNS": "200", **env})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def witness(settings: Settings, runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    """A witness serving as a process of its own, trusting the deployment's log key: its
    ``URL=VKEY`` entry."""
    state = tmp_path / "witness-state"
    vkey = _cli("witness", "init", "--state-dir", str(state), "--name", "witness.test/w1",
                settings=settings).strip()
    log_key = verifier_key(settings.key_name, runtime.signing_key().public_key())
    with served_witness(state, log_key, settings.home, tmp_path / "witness.log") as url:
        yield f"{url}={vkey}"


@pytest.mark.slow(seconds=20)
def test_a_witnessed_bundle_verifies_with_its_witness_key_only(
        runtime: Runtime, settings: Settings, db_url: str, witness: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    study_with_a_child(runtime)
    bundle, trusted = tmp_path / "bundle.zip", tmp_path / "trusted.pem"
    _cli("keys", "export-public", "-o", str(trusted), settings=settings)
    _cli("export", "--study", STUDY, "--format", "bundle", "-o", str(bundle), "--database-url",
         db_url, settings=settings, TRIALLEDGER_WITNESSES=witness)
    vkey = witness.partition("=")[2]
    args = ["--bundle", str(bundle), "--public-key", str(trusted)]

    assert main([*args, "--witness", vkey]) == 0
    out = capsys.readouterr().out
    assert "the latest checkpoint is cosigned by witness.test/w1 (quorum 1)" in out, out
    # Another witness's key of the same name: its cosignature is not there.
    other = Cosigner("witness.test/w1", Ed25519PrivateKey.generate().public_key()).vkey
    assert main([*args, "--witness", other]) == 1
    assert "carries 0 valid cosignatures of the 1 required" in capsys.readouterr().out
