"""The systemd units of infra/deploy/: hardened as docs/deployment.md says, accepted by
``systemd-analyze verify`` without a warning, and rated at most 2.0 ("OK") by ``systemd-analyze
security``. Skipped where systemd-analyze is not installed."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent.parent / "infra" / "deploy"
SERVICES = sorted(DEPLOY.glob("*.service"))
INSTALLED = "/opt/trialledger/bin/trialledger"
# systemd-analyze's exposure score times ten: 2.0 and below is what it calls "OK".
MOST_EXPOSURE = 20

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(analyze is None, reason="systemd-analyze is not installed")


def _service_section(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep case
    parser.read(path)
    return dict(parser["Service"])


@pytest.fixture
def units(tmp_path: Path) -> list[Path]:
    """The units as installed, but for the program's path: ``verify`` insists that it exists
    and is executable, and nothing is installed in /opt here; this interpreter stands in."""
    copies = []
    for unit in sorted(DEPLOY.glob("*.service")) + sorted(DEPLOY.glob("*.timer")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, sys.executable))
        copies.append(copy)
    return copies


def test_the_server_witness_and_verifier_have_units() -> None:
    assert {p.name for p in SERVICES} == {"trialledger.service", "trialledger-witness.service",
                                          "trialledger-verify.service"}
    assert (DEPLOY / "trialledger-verify.timer").is_file()


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_every_service_is_hardened(unit: Path) -> None:
    service = _service_section(unit)
    assert service["User"] and service["User"] != "root"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service["EnvironmentFile"].startswith("/etc/trialledger/")
    # Writable: its own state directory, nothing else.
    assert service["ReadWritePaths"] == f"/var/lib/{service['StateDirectory']}"
    assert service["ExecStart"].startswith(f"{INSTALLED} ")


@needs_analyze
def test_systemd_analyze_verify_accepts_the_units_without_a_warning(units: list[Path]) -> None:
    assert analyze is not None
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True,
                            text=True, check=False)
    # An unknown or malformed setting is only a warning (exit 0): none may be printed.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@needs_analyze
def test_systemd_analyze_security_rates_every_service_ok(units: list[Path]) -> None:
    assert analyze is not None
    services = [str(u) for u in units if u.suffix == ".service"]
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                             f"--threshold={MOST_EXPOSURE}", *services],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
