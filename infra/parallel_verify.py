"""Signature checks and leaf hashes in worker processes, for verifying large logs on all cores.

Workers only answer "does this signature verify with the key it names?" and "what is this
event's leaf hash?"; every rule that depends on order stays in the main process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.ledger.merkle import leaf_hash
from infra.signing import SignedState, SignedStateError, check_signature, leaf_data

Row = tuple[int, str, int, str, bytes, Any, Any]  # position, oid, version, topic, state, leaf
_STUDY = ""
_KEYS: dict[str, Ed25519PublicKey] = {}


def _init(study: str, keys: dict[str, bytes]) -> None:
    global _STUDY, _KEYS
    _STUDY = study
    _KEYS = {k: Ed25519PublicKey.from_public_bytes(raw) for k, raw in keys.items()}


def _check_batch(rows: list[tuple[str, int, str, bytes]]) -> list[tuple[bool, bytes]]:
    results = []
    for oid, version, topic, state in rows:
        ok = False
        try:
            envelope = SignedState.unpack(state)
            key = _KEYS.get(envelope.key_id)
            ok = key is not None and check_signature(_STUDY, oid, version, topic, envelope, key)
        except SignedStateError:
            pass
        results.append((ok, leaf_hash(leaf_data(_STUDY, oid, version, topic, state))))
    return results


def raw_keys(keys: dict[str, Ed25519PublicKey], mentioned: dict[str, bytes]) -> dict[str, bytes]:
    """Every key a worker may need, as raw bytes (picklable)."""
    raw = {k: v.public_bytes(Encoding.Raw, PublicFormat.Raw) for k, v in keys.items()}
    return {**mentioned, **raw}


def checked_in_parallel(study: str, keys: dict[str, bytes], batches: Iterable[list[Row]],
                        workers: int) -> Iterator[tuple[Row, bool, bytes]]:
    """Each row with (signature ok, leaf hash), in the original order."""
    in_flight: list[tuple[list[Row], Future[list[tuple[bool, bytes]]]]] = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_init,
                             initargs=(study, keys)) as pool:
        for batch in batches:
            job = [(r[1], r[2], r[3], r[4]) for r in batch]
            in_flight.append((batch, pool.submit(_check_batch, job)))
            if len(in_flight) > 2 * workers:
                yield from _drain(in_flight.pop(0))
        while in_flight:
            yield from _drain(in_flight.pop(0))


def _drain(item: tuple[list[Row], Future[list[tuple[bool, bytes]]]]
           ) -> Iterator[tuple[Row, bool, bytes]]:
    batch, future = item
    for row, (ok, h) in zip(batch, future.result(), strict=True):
        yield row, ok, h
