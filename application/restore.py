"""Restore: a study rebuilt in a database that does not hold it yet, from a bundle that
verifies offline against the keys the operator trusts.

The events go in as stored (positions, bytes, signatures: nothing is re-signed), then the
leaves, nodes and checkpoints, so the restored log is the exported one and every earlier
checkpoint and proof still holds; then the read tables are replayed. The deployment goes on
from there: its signing key is registered in the log if the log does not know it, and new
events follow the restored positions.

The directory (people, roles, API clients) is not part of a study's bundle and is not
touched: the events keep the printed name, role and site of whoever acted.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from application.runtime import Runtime
from application.verification import verify_bundle_remembering
from infra import keys
from infra.ledger.restore import LoadedLedger, TargetNotEmpty, holds_events, load_ledger
from infra.postgres import connect, schema_for_study
from trialledger_verifier.bundle import BundleReport


@dataclass(frozen=True)
class Restored:
    """What a restore verified, copied and replayed."""

    report: BundleReport
    loaded: LoadedLedger
    projected: int
    tree_size: int


def restore_bundle(runtime: Runtime, path: Path,
                   trusted: dict[str, Ed25519PublicKey]) -> Restored:
    """Verify the bundle at ``path`` offline against ``trusted`` (raises
    :class:`~trialledger_verifier.bundle.BundleInvalid`), then restore its study into this
    deployment's database; raise :class:`~infra.ledger.restore.TargetNotEmpty`, storing
    nothing, if the study holds events there already."""
    report = verify_bundle_remembering(runtime.settings, path, trusted, None)
    study = report.study
    schema = schema_for_study(study)
    if runtime.has_study(study):
        # Refused before any table is touched; load_ledger checks again under the lock.
        with connect(runtime.url) as conn:
            if holds_events(conn, schema):
                raise TargetNotEmpty(f"study {study} already holds events in this database")
    runtime.create_study_storage(study)
    with connect(runtime.url) as conn, zipfile.ZipFile(path) as bundle:
        loaded = load_ledger(conn, schema, bundle)
    # The keys the operator trusts anchor the log for online verification from now on.
    keys.trust_public_keys(runtime.settings, trusted)
    # This deployment's key joins the log (an event) if the log does not know it yet.
    runtime.adopt_restored_study(study)
    projected = runtime.project(study, rebuild=True)
    # Sealed now, so the log has no unsealed tail.
    sealed = runtime.seal(study)
    return Restored(report, loaded, projected, sealed.tree_size)
