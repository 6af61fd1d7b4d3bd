"""`trialledger verify` as a transparency-log client: verify a study (or the directory)
against what this verifier remembers (the newest checkpoint, and newest witnessed one, it
verified before) and the deployment's witnesses, then remember the newest it verified now."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from infra.catalog import CATALOG_SCHEMA
from infra.ledger import store
from infra.ledger.logs import DIRECTORY_LOG, origin
from infra.ledger.note import Checkpoint
from infra.settings import Settings
from infra.verifier_memory import VerifierMemory
from infra.verify import StudyVerification, Witnessing, verify_study
from infra.witness.client import endpoints
from trialledger_verifier.bundle import BundleReport, verify_bundle


def memory_of(settings: Settings) -> VerifierMemory:
    """Where this verifier remembers checkpoints: ``$TRIALLEDGER_HOME/verifier``."""
    return VerifierMemory(settings.home / "verifier")


def witnessing_of(settings: Settings) -> Witnessing:
    """The witnesses (and quorum) the deployment names."""
    return Witnessing([e.cosigner for e in endpoints(settings.witnesses)], settings.quorum)


def verify_remembering(conn: psycopg.Connection[Any], settings: Settings, study: str,
                       schema: str, public_keys: dict[str, Ed25519PublicKey],
                       trusted: Checkpoint | None = None,
                       workers: int = 1) -> StudyVerification:
    """Verify ``study``: the log must extend what was verified here before, and its events
    older than two sealing rounds must be sealed; remember its newest checkpoints if it holds."""
    memory = memory_of(settings)
    before = memory.recall(origin(study))
    result = verify_study(
        conn, study, schema, public_keys, trusted, workers=workers,
        remembered=before.latest if before else None,
        remembered_witnessed=before.witnessed if before else None,
        witnessing=witnessing_of(settings), now=datetime.now(UTC))
    if result.ok:
        memory.remember(origin(study), result.latest, result.witnessed)
    return result


def verify_directory(conn: psycopg.Connection[Any], settings: Settings,
                     public_keys: dict[str, Ed25519PublicKey],
                     trusted: Checkpoint | None = None,
                     workers: int = 1) -> StudyVerification | None:
    """Verify the directory's log (people, roles, clients, sign-ins) as a study's is, against
    ``trusted`` only if that checkpoint is the directory's (None: no directory yet)."""
    if not store.has_ledger(conn, CATALOG_SCHEMA):
        return None
    held = trusted if trusted is not None and trusted.origin == origin(DIRECTORY_LOG) else None
    return verify_remembering(conn, settings, DIRECTORY_LOG, CATALOG_SCHEMA, public_keys, held,
                              workers)


def _bundle_origin(path: Path) -> str | None:
    """The origin a bundle's manifest names (None if unreadable: the verifier then says why)."""
    try:
        with zipfile.ZipFile(path) as bundle:
            found = json.loads(bundle.read("manifest.json")).get("origin")
    except (OSError, ValueError, KeyError, AttributeError, zipfile.BadZipFile):
        return None
    return found if isinstance(found, str) else None


def verify_bundle_remembering(settings: Settings, path: Path,
                              trusted: dict[str, Ed25519PublicKey],
                              held: str | None) -> BundleReport:
    """Verify a bundle offline against what this verifier remembers of its log and the
    witnesses the deployment names; remember its newest checkpoints if it holds."""
    memory = memory_of(settings)
    log = _bundle_origin(path)
    before = memory.recall(log) if log else None
    remembered = [(c.size, c.root) for c in (before.latest, before.witnessed)
                  if c is not None] if before else []
    witnessing = witnessing_of(settings)
    report = verify_bundle(path, trusted, held, remembered=remembered,
                           witnesses={c.name: c.public_key for c in witnessing.cosigners},
                           quorum=witnessing.quorum)
    if log and report.checkpoints:
        latest = Checkpoint(log, report.latest_size, report.latest_root)
        memory.remember(log, latest, latest if witnessing.quorum else None)
    return report
