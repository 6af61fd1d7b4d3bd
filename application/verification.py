"""`trialledger verify` as a transparency-log client: verify a study against what this
verifier remembers (the newest checkpoint, and newest witnessed one, it verified before) and
the deployment's witnesses, then remember the newest it verified now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from infra.ledger.note import Checkpoint
from infra.ledger.sealer import origin
from infra.settings import Settings
from infra.verifier_memory import VerifierMemory
from infra.verify import StudyVerification, Witnessing, verify_study
from infra.witness.client import endpoints


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
