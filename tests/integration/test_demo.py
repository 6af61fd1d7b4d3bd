"""`trialledger demo --no-serve` end to end on a fresh database, and its idempotence."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from api.cli import app as cli
from infra.ledger.offline import BundleInvalid, load_public_keys, verify_bundle
from infra.settings import Settings


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "120"})
    return result.exit_code, result.output


@pytest.mark.slow(seconds=240)
def test_demo_simulates_46_children_verifies_and_is_idempotent(db_url: str,
                                                               settings: Settings) -> None:
    code, output = run(["demo", "--no-serve", "--seed", "3", "--database-url", db_url], settings)
    assert code == 0, output
    total = re.search(r"│ all\s+│.*│\s+(\d+)\s+│", output)
    assert total is not None and total.group(1) == "46", output
    assert re.search(r"│ IL2\s+│", output) and re.search(r"│ STD\s+│", output)
    events = int(re.search(r"Events written: (\d+)", output).group(1))  # type: ignore[union-attr]
    assert events > 46 * 20
    assert f"all {events} events carry a valid Ed25519 signature" in output
    # The key never enters the database, and lives in a 0600 file.
    key_file = settings.keys_dir / "trialledger.key"
    assert key_file.stat().st_mode & 0o777 == 0o600

    code, again = run(["demo", "--no-serve", "--database-url", db_url], settings)
    assert code == 0, again
    assert "already exists" in again
    assert f"Events written: {events}" in again

    code, verified = run(["verify", "--database-url", db_url], settings)
    assert code == 0, verified
    assert f"NCT04397107: {events} events" in verified

    # The demo's bundle verifies offline with the deployment's key, and with no other.
    home = settings.home
    code, out = run(["keys", "export-public", "-o", str(home / "trusted.pem")], settings)
    assert code == 0, out
    code, out = run(["export", "--study", "NCT04397107", "--format", "bundle", "-o",
                     str(home / "demo.zip"), "--database-url", db_url], settings)
    assert code == 0, out
    trusted = load_public_keys((home / "trusted.pem").read_text())
    # The export is recorded (as an event) before the bundle is written: it is in it.
    assert verify_bundle(home / "demo.zip", trusted).events == events + 1
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BundleInvalid):
        verify_bundle(home / "demo.zip", {"trialledger+00000000": stranger})
    raw = bytearray((home / "demo.zip").read_bytes())
    raw[len(raw) // 2] ^= 0x20
    (home / "tampered.zip").write_bytes(bytes(raw))
    with pytest.raises(BundleInvalid):
        verify_bundle(home / "tampered.zip", trusted)


def test_the_same_seed_gives_the_same_study(db_url: str, settings: Settings,
                                           server_url: str) -> None:
    from api.simulation import plan_study

    first = [(a.recorded_at, a.kind) for a in plan_study(5)]
    second = [(a.recorded_at, a.kind) for a in plan_study(5)]
    other = [(a.recorded_at, a.kind) for a in plan_study(6)]
    assert first == second
    assert first != other
