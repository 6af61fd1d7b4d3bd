"""The regulator's bundle: the ledger (events as stored, leaves, checkpoints, public keys),
any other files the caller adds (renderings: ODM, CSV, casebooks), and a manifest (SHA-256 of
every file, software version, creation and as-of times, the checkpoint it was built with)
signed as a C2SP note.

The zip is canonical — stored (not compressed), fixed timestamps, fixed order — so the offline
verifier can rebuild it byte for byte and so notice a change to any byte, headers included.
Entries are written streaming: memory stays flat whatever the size of the log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.catalog import EVENTS_TABLE
from infra.keys import public_pem
from infra.ledger import store
from infra.ledger.note import sign_note, verifier_key
from infra.ledger.sealer import origin

FORMAT = "trialledger-bundle/2"
# Member order: the ledger, then the added files by name, then the manifest and its signature.
LEDGER = ("events.jsonl", "leaves.jsonl", "checkpoints.jsonl", "public_keys.pem")
MANIFEST = ("manifest.json", "manifest.sig")
EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_info(name: str) -> zipfile.ZipInfo:
    """The fixed header fields of every bundle member."""
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    return info


class _Hashing:
    """Writes to a zip member and hashes what it writes."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.out.write(data)


def _lines(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _events(conn: psycopg.Connection[Any], schema: str) -> Iterator[dict[str, Any]]:
    query = SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {}.{} ORDER BY notification_id").format(
        Identifier(schema), Identifier(EVENTS_TABLE))
    with conn.cursor(name="bundle_events") as cursor:
        cursor.itersize = 5000
        cursor.execute(query)
        for position, oid, version, topic, state in cursor:
            yield {"position": position, "originator_id": str(oid), "version": version,
                   "topic": topic, "state": base64.b64encode(bytes(state)).decode()}


def _leaves(conn: psycopg.Connection[Any], schema: str) -> Iterator[dict[str, Any]]:
    query = SQL("SELECT leaf_index, notification_id, leaf_hash FROM {}.{} ORDER BY leaf_index"
                ).format(Identifier(schema), Identifier(store.LEAVES))
    with conn.cursor(name="bundle_leaves") as cursor:
        cursor.itersize = 10000
        cursor.execute(query)
        for index, position, h in cursor:
            yield {"leaf_index": index, "position": position, "leaf_hash": bytes(h).hex()}


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def _check_names(files: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The added files sorted by name; refuses names that clash or could escape a folder."""
    seen: set[str] = set()
    for name, _ in files:
        parts = name.split("/")
        if (name in LEDGER or name in MANIFEST or name in seen or name.startswith("/")
                or "\\" in name or any(p in ("", ".", "..") for p in parts)):
            raise ValueError(f"bundle member name {name!r} is not allowed")
        seen.add(name)
    return sorted(files)


def write_bundle(
    conn: psycopg.Connection[Any],
    study: str,
    schema: str,
    path: Path,
    public_keys: dict[str, Ed25519PublicKey],
    private_key: Ed25519PrivateKey,
    key_name: str,
    *,
    files: Sequence[tuple[str, Path]] = (),
    as_of: datetime | None = None,
    created_at: datetime | None = None,
    software_version: str | None = None,
) -> dict[str, Any]:
    """Write the bundle of ``study`` to ``path``; return its manifest.

    ``files`` (bundle name, file on disk) are added after the ledger, each hashed into the
    manifest; ``as_of`` is the recorded time they show (the ledger always holds the whole log).
    """
    extra = _check_names(files)
    created = created_at or datetime.now(UTC)
    hashes: dict[str, str] = {}
    points = store.checkpoints(conn, schema)
    with conn.transaction(), zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as bundle:
        # One snapshot: events, leaves and checkpoints are read in the same transaction.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        sources: list[tuple[str, Iterator[bytes]]] = [
            ("events.jsonl", _lines(_events(conn, schema))),
            ("leaves.jsonl", _lines(_leaves(conn, schema))),
            ("checkpoints.jsonl", _lines(iter(
                [{"tree_size": size, "note": note} for size, _, note in points]))),
            ("public_keys.pem", iter([_keys_pem(public_keys)])),
            *((name, _file_chunks(source)) for name, source in extra),
        ]
        for name, chunks in sources:
            with bundle.open(canonical_info(name), "w", force_zip64=True) as member:
                out = _Hashing(member)
                for chunk in chunks:
                    out.write(chunk)
            hashes[name] = out.sha256.hexdigest()
        latest = points[-1] if points else None
        manifest = {
            "format": FORMAT,
            "study": study,
            "origin": origin(study),
            "software_version": software_version,
            "created_at": created.astimezone(UTC).isoformat(),
            "as_of": as_of.astimezone(UTC).isoformat() if as_of else None,
            "checkpoint": {"tree_size": latest[0],
                           "root": base64.b64encode(latest[1]).decode(),
                           "note": latest[2]} if latest else None,
            "files": hashes,
        }
        manifest_text = json.dumps(manifest, sort_keys=True, indent=1) + "\n"
        for name, text in (("manifest.json", manifest_text),
                           ("manifest.sig", sign_note(manifest_text, key_name, private_key))):
            with bundle.open(canonical_info(name), "w", force_zip64=True) as member:
                member.write(text.encode())
    return manifest


def _keys_pem(public_keys: dict[str, Ed25519PublicKey]) -> bytes:
    parts = []
    for key_id, key in sorted(public_keys.items()):
        name = key_id.rpartition("+")[0]
        parts.append(f"# key id: {key_id}\n# verifier key: {verifier_key(name, key)}\n".encode())
        parts.append(public_pem(key))
    return b"".join(parts)
