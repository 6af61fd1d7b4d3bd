"""The regulator's bundle: the ledger (events as stored, leaves, checkpoints, public keys),
any other files the caller adds (renderings: ODM, CSV, casebooks), and a manifest (SHA-256 of
every file, software version, creation and as-of times, the checkpoint it was built with)
signed as a C2SP note.

The zip is canonical — stored (not compressed), fixed timestamps, fixed order — so the offline
verifier can rebuild it byte for byte and so notice a change to any byte, headers included.
It is produced as a stream (:func:`bundle_chunks`): each member's bytes leave as soon as the
member is complete, the manifest and its signature last, so a download starts at once and a
cut-off one has no end record; a file on disk (:func:`write_bundle`) holds the same bytes.
Memory stays flat whatever the size of the log.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import zipfile
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.catalog import EVENTS_TABLE
from infra.keys import public_pem
from infra.ledger import store
from infra.ledger.logs import origin
from infra.ledger.note import Checkpoint, sign_note, verifier_key
from infra.signers import Signer
from infra.zip_stream import ZipStream, write_file

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


def _hashed(chunks: Iterable[bytes], sha256: Any) -> Iterator[bytes]:
    for chunk in chunks:
        sha256.update(chunk)
        yield chunk


def _lines(rows: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for row in rows:
        yield json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _events(conn: psycopg.Connection[Any], schema: str) -> Iterator[bytes]:
    query = SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM {}.{} ORDER BY notification_id").format(
        Identifier(schema), Identifier(EVENTS_TABLE))
    with conn.cursor(name="bundle_events") as cursor:
        cursor.itersize = 5000
        cursor.execute(query)
        for position, oid, version, topic, state in cursor:
            yield event_line(position, oid, version, topic, bytes(state))


def _leaves(conn: psycopg.Connection[Any], schema: str) -> Iterator[bytes]:
    query = SQL("SELECT leaf_index, notification_id, leaf_hash FROM {}.{} ORDER BY leaf_index"
                ).format(Identifier(schema), Identifier(store.LEAVES))
    with conn.cursor(name="bundle_leaves") as cursor:
        cursor.itersize = 10000
        cursor.execute(query)
        for index, position, h in cursor:
            yield leaf_line(index, position, bytes(h))


# events.jsonl and leaves.jsonl hold a line an event or leaf: each is made from its parts, keys in
# sorted order, as ``json.dumps(..., sort_keys=True, separators=(",", ":"))`` writes the
# object (the same bytes: a unit test compares), without a dict and an encoder a line.
_EVENT_LINE = b'{"originator_id":"%s","position":%d,"state":"%s","topic":%s,"version":%d}\n'
_LEAF_LINE = b'{"leaf_hash":"%s","leaf_index":%d,"position":%d}\n'


def event_line(position: int, originator_id: UUID, version: int, topic: str,
               state: bytes) -> bytes:
    """A stored event's line of events.jsonl (its state in base64)."""
    return _EVENT_LINE % (str(originator_id).encode(), position, base64.b64encode(state),
                          _json_string(topic), version)


def leaf_line(index: int, position: int, leaf_hash: bytes) -> bytes:
    """A leaf's line of leaves.jsonl (its hash in hex)."""
    return _LEAF_LINE % (leaf_hash.hex().encode(), index, position)


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> bytes:
    # A log has a few dozen topics: each is escaped once.
    return json.dumps(text).encode()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def _check_name(name: str, previous: str | None) -> None:
    """Refuses a name that clashes, could escape a folder, or comes out of order (the added
    files follow the ledger sorted by name, as the verifier expects them)."""
    parts = name.split("/")
    if (name in LEDGER or name in MANIFEST or name.startswith("/") or "\\" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"bundle member name {name!r} is not allowed")
    if previous is not None and name <= previous:
        raise ValueError(f"bundle member {name!r} comes after {previous!r}: the added files "
                         "must come sorted by name, each once")


def bundle_chunks(
    conn: psycopg.Connection[Any],
    study: str,
    schema: str,
    public_keys: dict[str, Ed25519PublicKey],
    private_key: Signer,
    key_name: str,
    *,
    files: Iterable[tuple[str, Path]] = (),
    as_of: datetime | None = None,
    created_at: datetime | None = None,
    software_version: str | None = None,
    witnessed: bool = False,
) -> Generator[bytes, None, dict[str, Any]]:
    """The bundle of ``study``, yielded member by member as each is complete; returns its
    manifest.

    ``files`` (bundle name, file on disk), sorted by name, are added after the ledger, each
    hashed into the manifest; they may be produced lazily: the next is asked for once the
    previous one is in. ``as_of`` is the recorded time they show (the ledger always holds
    the whole log). With ``witnessed`` (a deployment naming witnesses), the checkpoints are
    only those the witnesses' quorum cosigned, each note with their cosignature lines. An
    error part-way raises before the zip's end record is written.
    """
    created = created_at or datetime.now(UTC)
    hashes: dict[str, str] = {}
    points = _witnessed_points(conn, schema) if witnessed else store.checkpoints(conn, schema)
    archive = ZipStream()
    with conn.transaction():
        # One snapshot: events, leaves and checkpoints are read in the same transaction.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        ledger: list[tuple[str, Iterable[bytes]]] = [
            ("events.jsonl", _events(conn, schema)),
            ("leaves.jsonl", _leaves(conn, schema)),
            ("checkpoints.jsonl", _lines(iter(
                [{"tree_size": size, "note": note} for size, _, note in points]))),
            ("public_keys.pem", [_keys_pem(public_keys)]),
        ]
        for name, chunks in ledger:
            sha256 = hashlib.sha256()
            archive.member(canonical_info(name), _hashed(chunks, sha256))
            hashes[name] = sha256.hexdigest()
            yield from archive.drain()
    previous = None
    for name, source in files:
        _check_name(name, previous)
        previous = name
        sha256 = hashlib.sha256()
        archive.member(canonical_info(name), _hashed(_file_chunks(source), sha256))
        hashes[name] = sha256.hexdigest()
        yield from archive.drain()
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
        archive.member(canonical_info(name), [text.encode()])
    yield from archive.finish()
    return manifest


def _witnessed_points(conn: psycopg.Connection[Any],
                      schema: str) -> list[tuple[int, bytes, str]]:
    return [(size, Checkpoint.parse(note[:note.index("\n\n") + 1]).root, note)
            for size, note in store.cosigned(conn, schema)]


def write_bundle(
    conn: psycopg.Connection[Any],
    study: str,
    schema: str,
    path: Path,
    public_keys: dict[str, Ed25519PublicKey],
    private_key: Signer,
    key_name: str,
    *,
    files: Iterable[tuple[str, Path]] = (),
    as_of: datetime | None = None,
    created_at: datetime | None = None,
    software_version: str | None = None,
    witnessed: bool = False,
) -> dict[str, Any]:
    """Write the bundle of ``study`` to ``path`` — the bytes :func:`bundle_chunks` yields —
    and return its manifest; the file appears whole or not at all."""
    manifest: dict[str, Any] = write_file(
        bundle_chunks(conn, study, schema, public_keys, private_key, key_name, files=files,
                      as_of=as_of, created_at=created_at, software_version=software_version,
                      witnessed=witnessed),
        path)
    return manifest


def _keys_pem(public_keys: dict[str, Ed25519PublicKey]) -> bytes:
    parts = []
    for key_id, key in sorted(public_keys.items()):
        name = key_id.rpartition("+")[0]
        parts.append(f"# key id: {key_id}\n# verifier key: {verifier_key(name, key)}\n".encode())
        parts.append(public_pem(key))
    return b"".join(parts)
