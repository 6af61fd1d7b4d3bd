"""The ledger's state as the dashboard shows it: the served checkpoint, when it was signed,
which configured witnesses cosigned it, and when this host last verified the study."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from application.runtime import Runtime
from application.verification import memory_of
from infra.ledger import store
from infra.ledger.cosignature import split_note
from infra.ledger.logs import origin
from infra.ledger.note import SIGNATURE_PREFIX
from infra.postgres import schema_for_study


@dataclass(frozen=True)
class LedgerStatus:
    """The served checkpoint's size, signing time and cosigners, and the last verification
    here (``trialledger verify`` remembers what it verified)."""

    tree_size: int
    signed_at: datetime | None
    cosigners: list[str]
    witnesses: int
    verified_at: str | None
    verified_size: int | None


def ledger_status(runtime: Runtime, study: str,
                  checkpoint: dict[str, Any]) -> LedgerStatus:
    """The status around ``checkpoint`` (as ``GET …/ledger/checkpoint`` served it)."""
    settings = runtime.settings
    with runtime.primary_read() as conn:
        signed_at = store.checkpoint_signed_at(conn, schema_for_study(study),
                                               int(checkpoint["tree_size"]))
    witnesses = {entry.partition("=")[2].partition("+")[0] for entry in settings.witnesses}
    _, lines = split_note(str(checkpoint["note"]))
    signers = [line.removeprefix(SIGNATURE_PREFIX).partition(" ")[0] for line in lines]
    remembered = memory_of(settings).recall(origin(study))
    latest = remembered.latest if remembered else None
    return LedgerStatus(int(checkpoint["tree_size"]), signed_at,
                        sorted(n for n in set(signers) if n in witnesses), len(witnesses),
                        remembered.verified_at if remembered else None,
                        latest.size if latest else None)
