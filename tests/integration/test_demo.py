"""`trialledger demo --no-serve` end to end on a fresh database, and its idempotence; then
its people signing in over HTTP to a real server, as its printed next steps say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from api.cli import app as cli
from infra.postgres import temporary_database
from infra.settings import Settings
from tests.support import free_port, wait_until_ready
from trialledger_verifier.bundle import BundleInvalid, load_public_keys, verify_bundle

STUDY = "NCT04397107"


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "120"})
    return result.exit_code, result.output




@dataclass
class Demo:
    """One demo run on a fresh database and home (the simulation takes minutes: run once)."""

    settings: Settings
    db_url: str
    port: int
    code: int
    output: str


@pytest.fixture(scope="module")
def demo(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with temporary_database(server_url, "tl_test") as db_url:
        settings = Settings(database_url=db_url, home=tmp_path_factory.mktemp("demo") / "home")
        port = free_port()
        code, output = run(["demo", "--no-serve", "--seed", "3", "--port", str(port),
                            "--database-url", db_url], settings)
        yield Demo(settings, db_url, port, code, output)


@pytest.mark.slow(seconds=240)
def test_demo_simulates_46_children_verifies_and_is_idempotent(demo: Demo) -> None:
    settings, db_url, code, output = demo.settings, demo.db_url, demo.code, demo.output
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

    credentials = settings.home / "demo-credentials.json"
    handed_out = credentials.read_bytes()
    code, again = run(["demo", "--no-serve", "--database-url", db_url], settings)
    assert code == 0, again
    assert "already exists" in again
    assert f"Events written: {events}" in again
    # The people are there already: their passwords are neither rotated nor lost.
    assert credentials.read_bytes() == handed_out
    assert f"passwords: {credentials}" in again

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
    # The export is recorded (as an event) once the bundle is complete: not in it.
    assert verify_bundle(home / "demo.zip", trusted).events == events
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BundleInvalid):
        verify_bundle(home / "demo.zip", {"trialledger+00000000": stranger})
    # Realistic deviations: visits weeks late (found by the soft checks) and missed IL-2
    # doses (reported by the investigator); in the bundle's DV.csv too.
    code, listed = run(["deviations", "--study", "NCT04397107", "--format", "json",
                        "--database-url", db_url], settings)
    assert code == 0, listed
    deviations = json.loads(listed)
    found = {(d["category"], d["detected_by"]) for d in deviations}
    assert {("visit_out_of_window", "system"), ("dose_deviation", "investigator")} <= found
    assert len({d["subject"] for d in deviations}) >= 4
    with zipfile.ZipFile(home / "demo.zip") as bundle:
        dv = bundle.read("csv/DV.csv").decode()
        ds = bundle.read("csv/DS.csv").decode()
    # Nothing randomised the children: the investigator allocated them to a group.
    assert "RANDOMIZED" not in ds and "ALLOCATED TO IL2 BY THE INVESTIGATOR" in ds
    assert dv.count("VISIT OUT OF WINDOW") >= 3 and "STUDY TREATMENT DEVIATION" in dv
    code, table = run(["deviations", "--study", "NCT04397107", "--site", "JLU1",
                       "--database-url", db_url], settings)
    assert code == 0 and f"{len(deviations)} protocol deviations" in table, table
    code, out = run(["deviations", "--study", "NCT04397107", "--format", "xml",
                     "--database-url", db_url], settings)
    assert code == 2 and "--format" in out

    raw = bytearray((home / "demo.zip").read_bytes())
    raw[len(raw) // 2] ^= 0x20
    (home / "tampered.zip").write_bytes(bytes(raw))
    with pytest.raises(BundleInvalid):
        verify_bundle(home / "tampered.zip", trusted)


def test_the_same_seed_gives_the_same_study(db_url: str, settings: Settings,
                                           server_url: str) -> None:
    from domain.studies.nct04397107_simulation import plan_study

    first = [(a.recorded_at, a.kind) for a in plan_study(5)]
    second = [(a.recorded_at, a.kind) for a in plan_study(5)]
    other = [(a.recorded_at, a.kind) for a in plan_study(6)]
    assert first == second
    assert first != other


def test_the_demo_people_sign_in_over_http_as_the_printed_next_steps_say(demo: Demo) -> None:
    assert demo.code == 0, demo.output
    credentials = demo.settings.home / "demo-credentials.json"
    assert f"passwords: {credentials}" in demo.output
    assert credentials.stat().st_mode & 0o777 == 0o600
    people = json.loads(credentials.read_text())["people"]
    assert {p["role"] for p in people.values()} == {
        "investigator", "coordinator", "monitor", "data_manager", "regulator", "admin"}
    # The output ends with the next steps: the API's address, a shell snippet, and last the
    # web console's address.
    steps = demo.output[demo.output.index("Next steps:"):]
    base = f"http://127.0.0.1:{demo.port}"
    assert f"The API: {base}/v1" in steps and "trialledger serve" in steps
    assert steps.rstrip().splitlines()[-1] == (
        f"Open the web console: {base}/ui/ (sign in as any person of the demo: usernames and "
        f"passwords in {credentials})")
    snippet = textwrap.dedent(steps.split("read the audit trail:\n", 1)[1].split("\n\n")[0])
    assert password_free(snippet, people)

    env = {**os.environ, "TRIALLEDGER_HOME": str(demo.settings.home)}
    log = demo.settings.home.parent / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--database-url", demo.db_url,
             "--port", str(demo.port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(base, log)
        # The snippet, pasted into a shell as printed.
        pasted = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", snippet],
                                capture_output=True, text=True, timeout=60)
        assert pasted.returncode == 0, pasted.stderr
        entries = json.loads(pasted.stdout)["entries"]
        assert len(entries) == 5 and all(e["event_type"] for e in entries)

        # And by hand: the monitor's password from the file, the whole study's audit trail.
        token = httpx.post(f"{base}/v1/auth/token", json={
            "username": "demo-monitor", "password": people["demo-monitor"]["password"]})
        assert token.status_code == 200, token.text
        audit = httpx.get(f"{base}/v1/studies/{STUDY}/audit", headers={
            "Authorization": f"Bearer {token.json()['access_token']}"})
        assert audit.status_code == 200, audit.text
        assert audit.json()["entries"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def password_free(text: str, people: dict[str, dict[str, str]]) -> bool:
    """True if no demo password appears in ``text`` (they are in the file, not the output)."""
    return not any(p["password"] in text for p in people.values())


@pytest.mark.slow(seconds=60)
def test_the_demo_casebooks_are_short_and_readable(demo: Demo) -> None:
    """(After the test above, which counts the demo's events.) Each of the 46 children's
    PDF fits in 12 pages and reads in the casebook's words:
    labels, not field ids; a correction with its reason."""
    import io

    import pypdf

    path = demo.settings.home / "casebooks.zip"
    code, out = run(["export", "--study", STUDY, "--format", "casebook", "-o", str(path),
                     "--database-url", demo.db_url], demo.settings)
    assert code == 0, out
    assert "casebooks of 46 subjects" in out
    texts = []
    with zipfile.ZipFile(path) as z:
        for name in (n for n in z.namelist() if n.endswith(".pdf")):
            reader = pypdf.PdfReader(io.BytesIO(z.read(name)))
            assert len(reader.pages) <= 12, name
            texts.append(" ".join(" ".join(p.extract_text() for p in reader.pages).split()))
    text = " ".join(texts)
    for label in ("Heart rate (beats/min)", "Daily dose", "Reference low", "Enrolled on"):
        assert label in text
    for field_id in ("dose_mg", "reference_low", "enrolled_on", "dose_per_m2", '{"'):
        assert field_id not in text
    assert re.search(r"Record corrected Result \S+ \S+ .{0,80}transcription_error: value "
                     r"re-checked against the laboratory report", text)
