"""`trialledger restore`: a study rebuilt in an empty database from a verified bundle holds
the same event bytes, signatures, leaves and checkpoint roots as its source; the server then
carries on appending and `verify` passes. A bundle that does not verify, and a target that
holds the study already, are refused with nothing stored."""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from application.exports import write_bundle_file, write_rendering
from application.runtime import Runtime
from infra.catalog import EVENTS_TABLE
from infra.keys import public_pem
from infra.ledger import store
from infra.ledger.note import verifier_key
from infra.postgres import connect, schema_for_study, temporary_database
from infra.settings import Settings
from infra.signing import SignedState, key_id_for
from tests.support import (
    api_client,
    enroll,
    served_witness,
    study_with_a_child,
    three_children_sealed,
)

STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)
ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "data" / "nct04397107-demo-bundle-69e9d0d.zip.xz"
LEGACY_KEYS = ROOT / "tests" / "data" / "nct04397107-demo-bundle-69e9d0d.keys.pem"


def trialledger(*args: str, home: Path,
                witnesses: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command in its own process, as an operator runs it (naming ``witnesses``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIALLEDGER_HOME": str(home),
           "COLUMNS": "200", **({"TRIALLEDGER_WITNESSES": witnesses} if witnesses else {})}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with connect(url) as conn:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                for row in conn.execute(query).fetchall()]


def events(url: str) -> list[tuple[Any, ...]]:
    return rows(url, f"SELECT notification_id, originator_id, originator_version, topic, state "
                     f"FROM {SCHEMA}.{EVENTS_TABLE} ORDER BY notification_id")


def leaves(url: str) -> list[tuple[Any, ...]]:
    return rows(url, f"SELECT leaf_index, notification_id, leaf_hash FROM {SCHEMA}."
                     f"{store.LEAVES} ORDER BY leaf_index")


def checkpoints(url: str) -> list[tuple[Any, ...]]:
    return rows(url, f"SELECT tree_size, root, note, key_id FROM {SCHEMA}.{store.CHECKPOINTS} "
                     "ORDER BY tree_size")


@pytest.fixture
def source(runtime: Runtime, tmp_path: Path) -> tuple[Path, Path]:
    """Three children sealed (checkpoints at sizes 11 and 15), exported as a bundle; the
    bundle and the source's public key."""
    three_children_sealed(runtime)
    bundle = tmp_path / "bundle.zip"
    write_bundle_file(runtime, STUDY, bundle)
    key = runtime.signing_key().public_key()
    pem = tmp_path / "source.pem"
    pem.write_bytes(f"# key id: {key_id_for('trialledger', key)}\n".encode() + public_pem(key))
    return bundle, pem


@pytest.fixture
def target(server_url: str) -> Iterator[str]:
    """Another empty database on the same server."""
    with temporary_database(server_url, "tl_restore") as url:
        yield url


@pytest.mark.requirement("R17")
def test_restore_rebuilds_the_study_byte_for_byte_and_carries_on(
        runtime: Runtime, db_url: str, source: tuple[Path, Path], target: str,
        tmp_path: Path) -> None:
    bundle, pem = source
    home = tmp_path / "target-home"  # another deployment: its own signing key
    done = trialledger("restore", "--bundle", str(bundle), "--public-key", str(pem),
                       "--database-url", target, home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"restored study {STUDY}" in done.stdout and "users" in done.stdout

    # The same positions, bytes and signatures, leaves and checkpoints.
    exported = events(db_url)
    restored = events(target)
    assert restored[:len(exported)] == exported
    assert [SignedState.unpack(e[4]).signature for e in restored[:len(exported)]] == [
        SignedState.unpack(e[4]).signature for e in exported]
    assert leaves(target)[:len(exported)] == leaves(db_url)
    assert checkpoints(target) == checkpoints(db_url)
    assert [c[0] for c in checkpoints(target)] == [11, 15]
    # Nodes rebuilt as the sealer stores them, so proofs from the restored tree are the
    # source's.
    nodes = f"SELECT level, idx, hash FROM {SCHEMA}.{store.NODES}"
    assert set(rows(db_url, nodes)) <= set(rows(target, nodes))
    # This deployment's key is registered after the restored events (then sealed).
    assert len(restored) == len(exported) + 1
    assert restored[-1][3] == "Keyring.KeyRegistered.v1"

    # The read tables were replayed: the ODM snapshot as of the export is the source's.
    with zipfile.ZipFile(bundle) as z:
        as_of = datetime.fromisoformat(json.loads(z.read("manifest.json"))["as_of"])
    made = datetime(2026, 1, 1, tzinfo=UTC)
    on_target = Runtime(Settings(database_url=target, home=home), target)
    try:
        assert snapshot(on_target, as_of, made) == snapshot(runtime, as_of, made)

        # The server carries on: a new lab over HTTP lands after the restored positions.
        coordinator = api_client(on_target, "coordinator", site="JLU1")
        answer = coordinator.post(f"/v1/studies/{STUDY}/subjects/001/labs", json={
            "observed_at": "2021-01-11T08:00:00+00:00", "code": "C4", "value": 0.2,
            "unit": "g/L"})
        assert answer.status_code == 201, answer.text
        on_target.seal(STUDY, force_checkpoint=True)
        on_target.seal_directory(force_checkpoint=True)
    finally:
        on_target.close()
    after = events(target)
    assert after[:len(restored)] == restored and after[-1][0] > restored[-1][0]
    verified = trialledger("verify", "--database-url", target, home=home)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{STUDY}: {len(after)} events" in verified.stdout


def snapshot(runtime: Runtime, as_of: datetime, made: datetime) -> bytes:
    out = io.BytesIO()
    write_rendering(runtime, STUDY, "odm-snapshot", out, as_of, made)
    return out.getvalue()


def test_a_bundle_that_does_not_verify_is_refused_with_nothing_stored(
        source: tuple[Path, Path], target: str, tmp_path: Path) -> None:
    bundle, pem = source
    changed = tmp_path / "changed.zip"
    data = bytearray(bundle.read_bytes())
    at = data.index(b'"topic":"Subject.') + len(b'"topic":"')
    data[at] ^= 0x20  # one letter of one event's stored topic
    changed.write_bytes(bytes(data))
    done = trialledger("restore", "--bundle", str(changed), "--public-key", str(pem),
                       "--database-url", target, home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BUNDLE INVALID" in done.stdout and len(done.stdout.strip().splitlines()) == 1
    assert rows(target, "SELECT count(*) FROM pg_namespace WHERE nspname = "
                        f"'{SCHEMA}'") == [(0,)]
    # The right bundle under a key the operator does not trust is refused alike.
    other = tmp_path / "other.pem"
    other.write_text(LEGACY_KEYS.read_text())
    done = trialledger("restore", "--bundle", str(bundle), "--public-key", str(other),
                       "--database-url", target, home=tmp_path / "home")
    assert done.returncode == 1 and "unknown key" in done.stdout, done.stdout + done.stderr


def test_a_study_the_database_holds_already_is_refused(
        db_url: str, source: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, pem = source
    before = events(db_url)
    done = trialledger("restore", "--bundle", str(bundle), "--public-key", str(pem),
                       "--database-url", db_url, home=tmp_path / "home")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds events" in lines[0], done.stderr
    assert events(db_url) == before


def test_missing_files_are_usage_errors(source: tuple[Path, Path], target: str,
                                        tmp_path: Path) -> None:
    bundle, pem = source
    for args in (["--bundle", str(tmp_path / "none.zip"), "--public-key", str(pem)],
                 ["--bundle", str(bundle), "--public-key", str(tmp_path / "none.pem")],
                 ["--bundle", str(bundle)]):
        done = trialledger("restore", *args, "--database-url", target, home=tmp_path / "h")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.slow(seconds=60)
@pytest.mark.requirement("R17")
def test_a_bundle_of_an_earlier_version_restores_and_verifies(target: str,
                                                              tmp_path: Path) -> None:
    bundle = tmp_path / "legacy.zip"
    bundle.write_bytes(lzma.decompress(LEGACY.read_bytes()))
    home = tmp_path / "home"
    done = trialledger("restore", "--bundle", str(bundle), "--public-key", str(LEGACY_KEYS),
                       "--database-url", target, home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(bundle) as z:
        points = [json.loads(line) for line in z.read("checkpoints.jsonl").splitlines()]
    assert [(c[0], c[2]) for c in checkpoints(target)] == [
        (p["tree_size"], p["note"]) for p in points]
    assert len(events(target)) == 2841 + 1  # and this deployment's key, registered
    verified = trialledger("verify", "--database-url", target, home=home)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def witness_entry(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    """A witness (``witness init`` then ``witness serve``, a process of its own) trusting the
    source's log key; its ``URL=VKEY`` entry."""
    state, home = tmp_path / "witness-state", tmp_path / "witness-home"
    done = trialledger("witness", "init", "--state-dir", str(state), "--name",
                       "witness.test/w1", home=home)
    assert done.returncode == 0, done.stderr
    log_key = verifier_key("trialledger", runtime.signing_key().public_key())
    with served_witness(state, log_key, home, tmp_path / "witness.log") as url:
        yield f"{url}={done.stdout.strip()}"


@pytest.mark.slow(seconds=40)
def test_a_witnessed_bundle_restores_its_cosignatures_and_the_witness_carries_on(
        runtime: Runtime, db_url: str, witness_entry: str, target: str,
        tmp_path: Path) -> None:
    study_with_a_child(runtime)
    source = Runtime(replace(runtime.settings, witnesses=(witness_entry,)), db_url)
    bundle = tmp_path / "witnessed.zip"
    try:
        write_bundle_file(source, STUDY, bundle)
    finally:
        source.close()
    key = runtime.signing_key().public_key()
    pem = tmp_path / "source.pem"
    pem.write_bytes(public_pem(key))
    cosigned = f"SELECT tree_size, note FROM {SCHEMA}.{store.COSIGNED} ORDER BY tree_size"
    assert rows(db_url, cosigned), "the source has a witnessed checkpoint"

    # The same deployment (its key copied), on a new database, naming the same witness.
    home = tmp_path / "restored-home"
    shutil.copytree(runtime.settings.home / "keys", home / "keys")
    done = trialledger("restore", "--bundle", str(bundle), "--public-key", str(pem),
                       "--database-url", target, home=home, witnesses=witness_entry)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 witnessed" in done.stdout
    assert rows(target, cosigned) == rows(db_url, cosigned)
    witnessed_sizes = [size for size, _ in rows(db_url, cosigned)]
    assert [c[:3] for c in checkpoints(target)] == [
        c[:3] for c in checkpoints(db_url) if c[0] in witnessed_sizes]
    assert len(events(target)) == len(events(db_url))  # the same key: nothing registered

    # The restored deployment appends, the witness cosigns the extension, verify holds.
    on_target = Runtime(Settings(database_url=target, home=home, witnesses=(witness_entry,)),
                        target)
    try:
        app = on_target.study(STUDY)
        enroll(app, "002")
        on_target.seal(STUDY, force_checkpoint=True)
    finally:
        on_target.close()
    assert len(rows(target, cosigned)) == len(rows(db_url, cosigned)) + 1
    verified = trialledger("verify", "--database-url", target, home=home,
                           witnesses=witness_entry)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "witnessed by witness.test/w1" in verified.stdout
