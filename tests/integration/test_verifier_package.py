"""The offline verifier as its own package (``verifier/``): its wheel, installed into a clean
virtual environment with nothing but ``cryptography``, verifies a real bundle and refuses one
with a byte changed; an editable install works the same; and its command line's exit codes."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from domain.keyring import Keyring
from domain.topics import stored_names
from infra.ledger.cosignature import Cosigner
from infra.ledger.note import verifier_key
from infra.ledger.sealer import SEAL_INTERVAL
from trialledger_verifier import bundle as offline
from trialledger_verifier.bundle import BundleInvalid, load_witness_key
from trialledger_verifier.cli import main

ROOT = Path(__file__).resolve().parent.parent.parent
DATA = ROOT / "tests" / "data"
BUNDLE = DATA / "nct04397107-demo-bundle-69e9d0d.zip.xz"
KEYS = DATA / "nct04397107-demo-bundle-69e9d0d.keys.pem"
# What a clean environment may hold besides the verifier: cryptography and its own needs, and
# what `python -m venv` puts there.
ALLOWED = {"trialledger-verifier", "cryptography", "cffi", "pycparser", "pip", "setuptools"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "bundle.zip"
    path.write_bytes(lzma.decompress(BUNDLE.read_bytes()))
    return path


@pytest.fixture(scope="module")
def tampered(bundle: Path) -> Path:
    """The bundle with one byte changed in the middle of its events."""
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    path = bundle.with_name("tampered.zip")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the verifier's two directories as the repository lays them out, so building
    writes nothing into the working tree."""
    copy = tmp_path_factory.mktemp("sources")
    for name in ("verifier", "trialledger_verifier"):
        shutil.copytree(ROOT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    return copy


def _clean_env() -> dict[str, str]:
    """This process's environment without what would reach the repository or a database."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}


def _clean_venv(where: Path) -> Path:
    """A new virtual environment (no system site-packages); its bin directory."""
    # venv bases it on the interpreter the tests' own venv was made from, not on that venv.
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    return where / "bin"


def _pip(bin_dir: Path, *args: str) -> None:
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", *args], check=True, env=_clean_env())


def _installed(bin_dir: Path) -> set[str]:
    listing = subprocess.run(
        [str(bin_dir / "python"), "-c", "import importlib.metadata as m; "
         "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"],
        capture_output=True, text=True, check=True, env=_clean_env(),
        cwd=bin_dir).stdout
    return {name.strip().lower() for name in listing.split()}


def _verify(command: list[str], bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, "--bundle", str(bundle), "--public-key", str(KEYS)],
                          capture_output=True, text=True, check=False, env=_clean_env(),
                          cwd=bundle.parent)


@pytest.mark.slow(seconds=20)
def test_the_wheel_alone_verifies_a_bundle_in_a_clean_environment(
        sources: Path, bundle: Path, tampered: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "--disable-pip-version-check", "-w", str(wheels),
                    str(sources / "verifier")], check=True)
    [wheel] = wheels.glob("trialledger_verifier-*.whl")
    bin_dir = _clean_venv(tmp_path / "venv")
    _pip(bin_dir, str(wheel))
    assert _installed(bin_dir) <= ALLOWED, "the verifier pulled in more than cryptography"
    assert "psycopg" not in _installed(bin_dir)

    good = _verify([str(bin_dir / "trialledger-verify")], bundle)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith(f"OK {bundle}: study NCT04397107, 2841 events")
    bad = _verify([str(bin_dir / "trialledger-verify")], tampered)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.startswith(f"BUNDLE INVALID {tampered}: ")
    assert "Traceback" not in bad.stdout + bad.stderr


@pytest.mark.slow(seconds=15)
def test_an_editable_install_of_the_verifier_alone_works(
        sources: Path, bundle: Path, tmp_path: Path) -> None:
    bin_dir = _clean_venv(tmp_path / "venv")
    _pip(bin_dir, "-e", str(sources / "verifier"))
    assert _installed(bin_dir) <= ALLOWED
    result = _verify([str(bin_dir / "python"), "-m", "trialledger_verifier"], bundle)
    assert result.returncode == 0, result.stdout + result.stderr
    # Editable: the code run is the source tree's, not a copy.
    where = subprocess.run([str(bin_dir / "python"), "-c",
                            "import trialledger_verifier; print(trialledger_verifier.__file__)"],
                           capture_output=True, text=True, check=True,
                           env=_clean_env(), cwd=tmp_path).stdout.strip()
    assert Path(where).parent == sources / "trialledger_verifier"


def test_the_command_line_exit_codes(bundle: Path, tampered: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    key = ["--public-key", str(KEYS)]
    assert main(["--bundle", str(bundle), *key]) == 0
    assert "every signature, key, leaf and root verifies" in capsys.readouterr().out
    assert main(["--bundle", str(tampered), *key]) == 1
    assert capsys.readouterr().out.startswith(f"BUNDLE INVALID {tampered}: ")

    # Usage errors: one line on stderr naming the option, exit 2.
    assert main(["--bundle", str(tmp_path / "absent.zip"), *key]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(["--bundle", str(bundle), "--public-key", str(tmp_path / "absent.pem")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trialledger-verify: --public-key") and err.count("\n") == 1
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello\n")
    assert main(["--bundle", str(bundle), "--public-key", str(not_a_key)]) == 2
    assert "no public key" in capsys.readouterr().err


def test_a_held_checkpoint_from_another_log_is_refused(
        bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = tmp_path / "held.txt"
    held.write_text("trialledger/OTHER\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    assert main(["--bundle", str(bundle), "--public-key", str(KEYS),
                 "--checkpoint", str(held)]) == 1
    assert "the held checkpoint is for trialledger/OTHER" in capsys.readouterr().out


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_a_witness_key_reads_as_the_server_writes_it() -> None:
    key = Ed25519PrivateKey.generate()
    vkey = Cosigner("witness.example/w1", key.public_key()).vkey
    name, public = load_witness_key(vkey)
    assert name == "witness.example/w1"
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw) == _raw(key)
    with pytest.raises(BundleInvalid, match="cosignature/v1"):
        load_witness_key(verifier_key("trialledger", key.public_key()))  # a log's key
    wrong_id = vkey.replace(vkey.split("+")[1], "00000000")
    with pytest.raises(BundleInvalid, match="key id does not match"):
        load_witness_key(wrong_id)


def test_witnesses_asked_for_and_absent_fail_the_bundle(
        bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vkey = Cosigner("witness.example/w1", Ed25519PrivateKey.generate().public_key()).vkey
    key = ["--bundle", str(bundle), "--public-key", str(KEYS)]
    assert main([*key, "--witness", vkey]) == 1
    assert "carries 0 valid cosignatures of the 1 required" in capsys.readouterr().out
    assert main([*key, "--witness", vkey, "--quorum", "2"]) == 2
    assert capsys.readouterr().err.startswith("trialledger-verify: --quorum 2")
    assert main([*key, "--witness", "not-a-key"]) == 2
    assert capsys.readouterr().err.startswith("trialledger-verify: --witness")


def test_the_verifier_knows_the_servers_contracts() -> None:
    """The verifier keeps its own copy of what it must know of the server (it imports none of
    it): the key events' stored names, and how long an event may wait to be sealed."""
    assert frozenset(stored_names(Keyring.KeyRegistered)) == offline.KEY_REGISTERED
    assert frozenset(stored_names(Keyring.KeyRetired)) == offline.KEY_RETIRED
    assert frozenset(stored_names(Keyring.KeyRevoked)) == offline.KEY_REVOKED
    assert offline.UNSEALED_GRACE_SECONDS == 2 * SEAL_INTERVAL
