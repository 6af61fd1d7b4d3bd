"""Witnessing a log's checkpoints (a study's, or the directory's): after a sealing round,
the newest checkpoint is sent to every configured witness with a consistency proof from the
size that witness last cosigned; once the quorum has cosigned, the checkpoint with their
cosignature lines is stored, and only such a checkpoint is served."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from infra.ledger import store
from infra.ledger.cosignature import add_cosignatures, witnesses_of
from infra.ledger.merkle import consistency_proof
from infra.logging import get_logger
from infra.witness.client import (
    WitnessConflict,
    WitnessEndpoint,
    WitnessUnavailable,
    request_cosignature,
)

if TYPE_CHECKING:  # imported when witnesses are asked: 15 MB in every process otherwise
    import httpx

_log = get_logger(__name__)


@dataclass(frozen=True)
class WitnessRound:
    """What asking the witnesses gave: the checkpoint's size, who cosigned, who did not."""

    size: int
    cosigned_by: tuple[str, ...]
    refusals: tuple[str, ...]
    stored: bool


def witness_latest(conn: psycopg.Connection[Any], log: str, schema: str,
                   witnesses: list[WitnessEndpoint], quorum: int) -> WitnessRound | None:
    """Have the newest checkpoint cosigned, unless it is already (None: nothing to do)."""
    latest = store.latest_checkpoint(conn, schema)
    done = store.cosigned(conn, schema)
    if latest is None or (done and done[-1][0] >= latest[0]):
        return None
    size, _, note = latest
    lines: list[str] = []
    names: list[str] = []
    refusals: list[str] = []
    import httpx

    with httpx.Client() as client:
        for witness in witnesses:
            # The size this witness last cosigned, as far as this log knows; a witness that
            # knows better says so (409), and is asked again from its own size.
            old = next((s for s, n in reversed(done)
                        if witness.cosigner.name in witnesses_of(n, [witness.cosigner])), 0)
            try:
                lines.append(_ask(conn, schema, client, witness, old, size, note))
                names.append(witness.cosigner.name)
            except WitnessUnavailable as e:
                refusals.append(f"{witness.cosigner.name}: {e}")
                _log.error("ledger.witness_refused", log=log, witness=witness.url,
                          tree_size=size, reason=str(e))
    stored = len(lines) >= quorum
    if stored:
        with conn.transaction():
            store.add_cosigned(conn, schema, size, add_cosignatures(note, lines))
    return WitnessRound(size, tuple(names), tuple(refusals), stored)


def _ask(conn: psycopg.Connection[Any], schema: str, client: httpx.Client,
         witness: WitnessEndpoint, old: int, size: int, note: str) -> str:
    nodes = store.node_source(conn, schema)
    try:
        return request_cosignature(client, witness, old, consistency_proof(nodes, old, size),
                                   note)
    except WitnessConflict as e:
        if e.size > size:
            raise WitnessUnavailable(f"it has cosigned size {e.size}, more than this log's "
                                     f"latest checkpoint ({size}): the log was rolled back"
                                     ) from e
        if e.size == old:
            raise
        return request_cosignature(client, witness, e.size,
                                   consistency_proof(nodes, e.size, size), note)
