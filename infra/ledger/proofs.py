"""Inclusion and consistency proofs served from the stored subtree hashes."""

from __future__ import annotations

import base64
from typing import Any

import psycopg

from infra.ledger import store
from infra.ledger.merkle import consistency_proof, inclusion_proof, root


class ProofUnavailable(LookupError):
    """The event is not sealed, or a tree size is beyond the sealed log; ``field`` says which."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def served_checkpoint(conn: psycopg.Connection[Any], schema: str,
                      witnessed: bool) -> tuple[int, str] | None:
    """The (tree size, note) a deployment serves: with witnesses (``witnessed``) the newest
    checkpoint the quorum cosigned, carrying their cosignatures; else the newest signed."""
    if witnessed:
        return store.latest_cosigned(conn, schema)
    latest = store.latest_checkpoint(conn, schema)
    return None if latest is None else (latest[0], latest[2])


def latest_checkpoint(conn: psycopg.Connection[Any], schema: str,
                      witnessed: bool = False) -> dict[str, Any] | None:
    """The newest served checkpoint (see :func:`served_checkpoint`)."""
    served = served_checkpoint(conn, schema, witnessed)
    if served is None:
        return None
    size, note = served
    return {"tree_size": size, "root": _b64(root(store.node_source(conn, schema), size)),
            "note": note}


def _size(conn: psycopg.Connection[Any], schema: str, wanted: int | None, field: str) -> int:
    sealed = store.tree_size(conn, schema)
    if wanted is None:
        latest = store.latest_checkpoint(conn, schema)
        return latest[0] if latest else sealed
    if not 0 <= wanted <= sealed:
        raise ProofUnavailable(field, f"tree size {wanted} is beyond the sealed log ({sealed})")
    return wanted


def inclusion(conn: psycopg.Connection[Any], schema: str, position: int,
              tree_size: int | None) -> dict[str, Any]:
    """Proof that the event at ``position`` is leaf i of the tree of ``tree_size`` leaves."""
    index = store.leaf_index_of(conn, schema, position)
    if index is None:
        raise ProofUnavailable("event", f"no sealed event at position {position}")
    size = _size(conn, schema, tree_size, "tree_size")
    if index >= size:
        raise ProofUnavailable("tree_size", f"event {position} is leaf {index}, "
                                            f"not inside a tree of size {size}")
    nodes = store.node_source(conn, schema)
    return {
        "event": position,
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": _b64(nodes(0, index)),
        "root": _b64(root(nodes, size)),
        "proof": [_b64(h) for h in inclusion_proof(nodes, index, size)],
    }


def consistency(conn: psycopg.Connection[Any], schema: str, old: int,
                new: int | None) -> dict[str, Any]:
    """Proof that the tree of ``new`` leaves extends the tree of ``old`` leaves."""
    size = _size(conn, schema, new, "to")
    if not 0 <= old <= size:
        raise ProofUnavailable("from", f"from ({old}) must lie between 0 and to ({size})")
    nodes = store.node_source(conn, schema)
    return {
        "from": old,
        "to": size,
        "from_root": _b64(root(nodes, old)),
        "to_root": _b64(root(nodes, size)),
        "proof": [_b64(h) for h in consistency_proof(nodes, old, size)],
    }
