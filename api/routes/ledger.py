"""Integrity proofs: the signing keys, the latest signed checkpoint, inclusion and
consistency proofs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.auth import CurrentPrincipal, Principal
from api.responses import Checkpoint, ConsistencyProof, InclusionProof, LedgerKey
from api.schemas import PROBLEM_RESPONSES
from api.writes import runtime_of, study_app
from domain.errors import InvalidInput, NotFound
from domain.permissions import Action, permitting_grant
from infra.keys import verifier_key_of
from infra.ledger import proofs
from infra.postgres import schema_for_study

router = APIRouter(tags=["ledger"], responses=PROBLEM_RESPONSES)


def _may_check(principal: Principal, study: str) -> None:
    """Whoever may read the study, or verify it, may have its proofs."""
    if permitting_grant(principal.user.grants, Action.VERIFY, study, None) is None:
        principal.grant_for_any_site(Action.READ, study)


@router.get("/v1/studies/{study}/ledger/keys", response_model=list[LedgerKey])
def list_ledger_keys(request: Request, principal: CurrentPrincipal,
                     study: str) -> list[LedgerKey]:
    """The keys the study's log is signed with, as its keyring records them: key id, C2SP
    verifier key, and when each was valid (a retired or revoked key signs nothing after)."""
    app = study_app(request, study)
    _may_check(principal, study)
    keyring = app.keyring()
    if keyring is None:
        return []
    return [LedgerKey(key_id=key_id, vkey=verifier_key_of(key_id, keyring.public_keys[key_id]),
                      public_key=keyring.public_keys[key_id], status=status,
                      valid_from=keyring.valid_from[key_id],
                      valid_until=keyring.valid_until.get(key_id))
            for key_id, status in keyring.keys.items()]


@router.get("/v1/studies/{study}/ledger/checkpoint", response_model=None,
            responses={200: {"model": Checkpoint, "description": "The checkpoint"}})
def get_checkpoint(request: Request, principal: CurrentPrincipal, study: str) -> dict[str, Any]:
    """The latest signed checkpoint (C2SP signed note) of the study's ledger; when the
    deployment names witnesses, the latest their quorum cosigned, with their cosignatures."""
    study_app(request, study)
    _may_check(principal, study)
    runtime = runtime_of(request)
    with runtime.primary_read() as conn:
        checkpoint = proofs.latest_checkpoint(conn, schema_for_study(study),
                                              witnessed=bool(runtime.settings.witnesses))
    if checkpoint is None:
        raise NotFound(f"study {study} has no {'witnessed ' if runtime.settings.witnesses else ''}"
                       "checkpoint yet")
    return {"origin": f"trialledger/{study}", **checkpoint}


@router.get("/v1/studies/{study}/ledger/proofs/inclusion", response_model=None,
            responses={200: {"model": InclusionProof, "description": "The proof"}})
def get_inclusion_proof(
    request: Request, principal: CurrentPrincipal, study: str,
    event: Annotated[int, Query(ge=1, le=2**62, description="The event's log position")],
    tree_size: Annotated[int | None, Query(ge=1, le=2**62, description="Default: latest")]
    = None,
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of one event in the tree of ``tree_size`` leaves."""
    study_app(request, study)
    _may_check(principal, study)
    with runtime_of(request).primary_read() as conn:
        return _proof(lambda: proofs.inclusion(conn, schema_for_study(study), event, tree_size))


@router.get("/v1/studies/{study}/ledger/proofs/consistency", response_model=None,
            responses={200: {"model": ConsistencyProof, "description": "The proof"}})
def get_consistency_proof(
    request: Request, principal: CurrentPrincipal, study: str,
    from_size: Annotated[int, Query(alias="from", ge=0, le=2**62, description="Older size")],
    to_size: Annotated[int | None, Query(alias="to", ge=0, le=2**62,
                                         description="Default: latest")] = None,
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two tree sizes."""
    study_app(request, study)
    _may_check(principal, study)
    with runtime_of(request).primary_read() as conn:
        return _proof(lambda: proofs.consistency(conn, schema_for_study(study), from_size,
                                                 to_size))


def _proof(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return compute()
    except proofs.ProofUnavailable as e:
        if e.field == "event":
            raise NotFound(str(e)) from e
        raise InvalidInput(e.field, str(e)) from e
