"""Offline verification of a TrialLedger bundle, with nothing but a trusted public key.

This module stands alone on purpose: it imports only the standard library and `cryptography`,
and re-implements the few formats it checks, so a regulator's engineer can read it in an
afternoon and trust it without trusting the code that wrote the log. It ships twice: inside
the server's package (whose ``trialledger verify --bundle`` calls it) and as the small
``trialledger-verifier`` package (``verifier/pyproject.toml``), one implementation for both.

What it checks, in order, stopping at the first failure:
1. the members are exactly the files manifest.json lists (the ledger's four among them) plus
   the manifest and its signature — none unlisted, none missing — in canonical order, and the
   zip is the canonical one (rebuilt byte for byte from its members);
2. every listed file's SHA-256 (the ledger's and the renderings': ODM, CSV, casebooks)
   matches manifest.json (and, once the keys are known from the log, manifest.sig is a C2SP
   signed note of manifest.json by a key still valid at its end);
3. every event: its aggregate's version chain, its Ed25519 signature over
   (study, aggregate id, version, topic, payload, recorded_at, key id), and that its key was
   valid then — a trusted key, or one registered by an earlier valid event; not used after
   its retirement; not used at or after its revocation;
4. every leaf is SHA-256(0x00 ‖ the stored event), in order, one per event;
5. every checkpoint is signed by a valid key and its root is the RFC 9162 root recomputed
   from the events;
6. the checkpoint the manifest names is the latest one verified in step 5;
7. optionally, a checkpoint the caller already holds, and those this verifier remembers
   from before: same root at their size (else "forked"), not larger than the latest
   (else "rolled back");
8. given witnesses' keys, every checkpoint carries the quorum of their cosignatures (C2SP
   cosignature/v1); an event left unsealed for more than two sealing rounds before the
   bundle was made is refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

LEDGER = ("events.jsonl", "leaves.jsonl", "checkpoints.jsonl", "public_keys.pem")
MANIFEST = ("manifest.json", "manifest.sig")
FORMATS = ("trialledger-bundle/1", "trialledger-bundle/2")
# The key events' stored names: explicit ones, and the module paths of logs written before.
KEY_REGISTERED = frozenset({"Keyring.KeyRegistered.v1", "domain.keyring:Keyring.KeyRegistered"})
KEY_RETIRED = frozenset({"Keyring.KeyRetired.v1", "domain.keyring:Keyring.KeyRetired"})
KEY_REVOKED = frozenset({"Keyring.KeyRevoked.v1", "domain.keyring:Keyring.KeyRevoked"})
# Two sealing rounds of the server (it seals every 2 s): an event recorded longer than this
# before the bundle was made, and not sealed, had its leaf removed.
UNSEALED_GRACE_SECONDS = 4.0


class BundleInvalid(Exception):
    """The bundle does not verify; the message says what and where."""


@dataclass(frozen=True)
class BundleReport:
    """What a successful verification covered."""

    study: str
    events: int
    checkpoints: int
    latest_size: int
    files: int = len(LEDGER)
    as_of: str | None = None
    created_at: str | None = None
    software_version: str | None = None
    latest_root: bytes = b""
    witnessed_by: tuple[str, ...] = ()


# --- formats ------------------------------------------------------------------------


def _prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _key_hash(name: str, key: Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def _key_id(name: str, key: Ed25519PublicKey) -> str:
    return f"{name}+{_key_hash(name, key).hex()}"


def _unpack(state: bytes) -> tuple[str, str, bytes, bytes]:
    """(key id, recorded_at, signature, payload) of a stored event's state."""
    if state[:4] != b"TLS1":
        raise ValueError("not a signed event")
    (n,) = struct.unpack_from(">H", state, 4)
    key_id = state[6:6 + n].decode()
    (m,) = struct.unpack_from(">H", state, 6 + n)
    start = 8 + n
    recorded_at = state[start:start + m].decode()
    signature = state[start + m:start + m + 64]
    if len(signature) != 64:
        raise ValueError("signed event truncated")
    return key_id, recorded_at, signature, state[start + m + 64:]


def _canonical_b64(text: str) -> bytes:
    """Base64 as a signed note writes it, and only so: a text that decodes to the same bytes
    but differs from their encoding (an unused low bit set in the last character, a
    character outside the alphabet) is refused, so no byte of a note can change unnoticed."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise BundleInvalid(f"not base64 as a signed note writes it: {text[:16]!r}") from None
    if base64.b64encode(raw).decode() != text:
        raise BundleInvalid(f"not base64 as a signed note writes it: {text[:16]!r}")
    return raw


def _open_note(note: str, keys: dict[str, Ed25519PublicKey]) -> str:
    """The text of a C2SP signed note if one of ``keys`` (by key id) signed it."""
    text, sep, lines = note.rpartition("\n\n")
    if not sep:
        raise BundleInvalid("signed note has no signature lines")
    text += "\n"
    for line in lines.splitlines():
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        raw = _canonical_b64(blob)
        for key_id, key in keys.items():
            if key_id.rpartition("+")[0] == name and raw[:4] == _key_hash(name, key):
                try:
                    key.verify(raw[4:], text.encode())
                except InvalidSignature:
                    raise BundleInvalid(f"note signature by {key_id} is forged") from None
                return text
    raise BundleInvalid("note is not signed by any valid key")


def _cosigned_by(note: str, witnesses: dict[str, Ed25519PublicKey]) -> tuple[str, ...]:
    """The witnesses (name -> key) whose valid cosignature/v1 line ``note`` carries."""
    text, _, lines = note.rpartition("\n\n")
    body = text + "\n"
    names = []
    for line in lines.splitlines():
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        key = witnesses.get(name)
        if key is None:
            continue
        raw = _canonical_b64(blob)
        pub = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        if raw[:4] != hashlib.sha256(name.encode() + b"\n\x04" + pub).digest()[:4]:
            continue
        message = f"cosignature/v1\ntime {struct.unpack('>Q', raw[4:12])[0]}\n{body}"
        try:
            key.verify(raw[12:], message.encode())
        except InvalidSignature:
            raise BundleInvalid(f"the cosignature by witness {name} is forged") from None
        names.append(name)
    return tuple(names)


def load_witness_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """A witness's name and key from its C2SP verifier key
    ``<name>+<hex key id>+<base64(0x04 ‖ Ed25519 key)>``; the key id must match the key."""
    name, _, rest = vkey.strip().partition("+")
    hex_id, _, blob = rest.partition("+")
    try:
        raw = base64.b64decode(blob, validate=True)
        wanted = bytes.fromhex(hex_id)
    except ValueError:
        raise BundleInvalid(f"not a verifier key (<name>+<key id>+<key>): {vkey.strip()!r}"
                            ) from None
    if not name or len(raw) != 33 or raw[:1] != b"\x04":
        raise BundleInvalid(f"not a witness's (cosignature/v1) verifier key: {vkey.strip()!r}")
    if hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4] != wanted:
        raise BundleInvalid(f"witness key {name}: its key id does not match its key")
    return name, Ed25519PublicKey.from_public_bytes(raw[1:])


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class _Tree:
    """RFC 9162 root of a growing list of leaves, from the right edge only."""

    def __init__(self) -> None:
        self.size = 0
        self.edge: dict[int, bytes] = {}

    def add(self, leaf: bytes) -> None:
        level, h, n = 0, leaf, self.size
        while n & 1:
            h = _node(self.edge.pop(level), h)
            n >>= 1
            level += 1
        self.edge[level] = h
        self.size += 1

    def root(self) -> bytes:
        if not self.size:
            return hashlib.sha256(b"").digest()
        levels = sorted(self.edge)
        h = self.edge[levels[0]]
        for level in levels[1:]:
            h = _node(self.edge[level], h)
        return h


# --- the verification ---------------------------------------------------------------


def load_public_keys(pem_text: str,
                     default_name: str = "trialledger") -> dict[str, Ed25519PublicKey]:
    """Keys from PEM text; a ``# key id: name+hash`` line before a key gives its name."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    keys: dict[str, Ed25519PublicKey] = {}
    name = default_name
    block: list[str] = []
    for line in pem_text.splitlines():
        if line.startswith("# key id:"):
            name = line.split(":", 1)[1].strip().rpartition("+")[0]
        elif line.startswith("-----BEGIN"):
            block = [line]
        elif block:
            block.append(line)
            if line.startswith("-----END"):
                key = load_pem_public_key("\n".join(block).encode())
                if not isinstance(key, Ed25519PublicKey):
                    raise BundleInvalid("trusted key is not Ed25519")
                keys[_key_id(name, key)] = key
                block, name = [], default_name
    if not keys:
        raise BundleInvalid("no public key found in the trusted key file")
    return keys


def _members(bundle: zipfile.ZipFile) -> tuple[str, dict[str, Any], list[str]]:
    """manifest.json (text and parsed) and the member names it implies, in canonical order;
    refuses a file present but not listed, or listed but absent."""
    names = [info.filename for info in bundle.infolist()]
    if "manifest.json" not in names:
        raise BundleInvalid("the bundle has no manifest.json")
    manifest_text = bundle.read("manifest.json").decode()
    manifest = json.loads(manifest_text)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") not in FORMATS:
        raise BundleInvalid("manifest.json is not a TrialLedger bundle manifest")
    expected = [*LEDGER, *sorted(n for n in files if n not in LEDGER), *MANIFEST]
    for name in expected[:-len(MANIFEST)]:
        if name not in files:
            raise BundleInvalid(f"{name} is not listed in the manifest")
        if name not in names:
            raise BundleInvalid(f"{name} is listed in the manifest but absent from the bundle")
    for name in names:
        if name not in expected:
            raise BundleInvalid(f"{name} is in the bundle but not listed in the manifest")
    if names != expected:
        raise BundleInvalid(f"bundle members are {names}, expected {expected}")
    return manifest_text, manifest, expected


def _check_canonical(path: Path, bundle: zipfile.ZipFile, members: list[str]) -> None:
    with tempfile.TemporaryFile() as rebuilt:
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_STORED) as copy:
            for name in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.create_system = 3
                with bundle.open(name) as src, copy.open(info, "w", force_zip64=True) as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        rebuilt.seek(0)
        with path.open("rb") as original:
            while True:
                a, b = original.read(1 << 20), rebuilt.read(1 << 20)
                if a != b:
                    raise BundleInvalid("the zip is not the canonical bundle: bytes were "
                                        "changed outside the members' contents")
                if not a:
                    return


def verify_bundle(path: Path, trusted_keys: dict[str, Ed25519PublicKey],
                  held_checkpoint: str | None = None, *,
                  remembered: list[tuple[int, bytes]] | None = None,
                  witnesses: dict[str, Ed25519PublicKey] | None = None,
                  quorum: int = 0) -> BundleReport:
    """Verify the bundle at ``path``; raise :class:`BundleInvalid` naming the first failure.

    ``remembered`` are (size, root) of checkpoints of this log verified before; ``witnesses``
    (name -> Ed25519 key) and ``quorum`` the cosignatures every checkpoint must carry.
    """
    try:
        opened = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise BundleInvalid(_not_a_zip(path)) from e
    except OSError as e:
        raise BundleInvalid(f"not a readable bundle: {e}") from e
    try:
        with opened as bundle:
            manifest_text, manifest, members = _members(bundle)
            _check_canonical(path, bundle, members)
            return _verify_members(bundle, manifest_text, manifest, trusted_keys,
                                   held_checkpoint, remembered or [],
                                   (witnesses or {}, quorum))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as e:
        # RuntimeError and its subclass for unsupported features: zipfile's answer to a
        # changed header that claims encryption, another compression method or a newer zip
        # version.
        raise BundleInvalid(f"not a readable bundle: {e}") from e
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as e:
        # Bytes changed inside a file so that it no longer parses (bad JSON, UTF-8, base64).
        raise BundleInvalid(f"malformed bundle content: {e!r}") from e


def _not_a_zip(path: Path) -> str:
    """Why a file zipfile cannot open is no bundle: most often a download cut off part-way
    (the bundle is streamed, its end record last)."""
    with path.open("rb") as f:
        start = f.read(4)
    if not start:
        return "the file is empty"
    if start == b"PK\x03\x04":
        return ("the file is cut off: it begins as a zip but has no end record (an interrupted "
                "download or copy?); export the bundle again")
    return "not a zip file"


def _verify_members(bundle: zipfile.ZipFile, manifest_text: str, manifest: dict[str, Any],
                    trusted: dict[str, Ed25519PublicKey],
                    held_checkpoint: str | None, remembered: list[tuple[int, bytes]],
                    witnessing: tuple[dict[str, Ed25519PublicKey], int]) -> BundleReport:
    # Hashes first, so a damaged file is named; the manifest's signature is checked at the
    # end, with the keys the log itself shows valid by then (it may be signed by a new key).
    for name, expected in manifest["files"].items():
        digest = hashlib.sha256()
        with bundle.open(name) as member:
            while chunk := member.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != expected:
            raise BundleInvalid(f"{name} does not match its SHA-256 in the manifest")
    study = manifest["study"]
    origin = f"trialledger/{study}"

    def events() -> Any:
        # Streamed twice (revocations first), so memory stays flat for any size of log. Read
        # as UTF-8 everywhere, not in the locale's encoding (a regulator's Windows: cp1252).
        for line in io.TextIOWrapper(bundle.open("events.jsonl"), encoding="utf-8"):
            yield json.loads(line)

    revoked: dict[str, datetime] = {}
    for event in events():
        if event["topic"] in KEY_REVOKED:
            data = json.loads(_unpack(base64.b64decode(event["state"]))[3])
            effective = data["effective_at"]
            revoked[data["key_id"]] = datetime.fromisoformat(
                effective["_data_"] if isinstance(effective, dict) else effective)
    keys = dict(trusted)
    retired: set[str] = set()
    versions: dict[str, int] = {}
    tree = _Tree()
    leaves = io.TextIOWrapper(bundle.open("leaves.jsonl"), encoding="utf-8")
    with io.TextIOWrapper(bundle.open("checkpoints.jsonl"), encoding="utf-8") as lines:
        points = [json.loads(line) for line in lines]
    held = held_checkpoint.split("\n") if held_checkpoint is not None else None
    if held is not None and (len(held) < 3 or not held[1].isdigit()):
        raise BundleInvalid("the held checkpoint is malformed")
    wanted = ({int(p["tree_size"]) for p in points} | ({int(held[1])} if held else set())
              | {size for size, _ in remembered})
    created = manifest.get("created_at")
    overdue = (datetime.fromisoformat(created).timestamp() - UNSEALED_GRACE_SECONDS
               if created else None)
    roots: dict[int, bytes] = {0: tree.root()}
    count = 0
    for event in events():
        count += 1
        where = (f"event at position {event['position']} (aggregate {event['originator_id']} "
                 f"v{event['version']}, {event['topic']})")
        problem = _check_event(study, event, keys, retired, revoked, versions)
        if problem:
            raise BundleInvalid(f"{where}: {problem}")
        line = leaves.readline()
        if not line:
            # Not sealed yet: the tail after the last leaf, recorded just before the export.
            recorded_at = _unpack(base64.b64decode(event["state"]))[1]
            if overdue is not None and datetime.fromisoformat(recorded_at).timestamp() < overdue:
                raise BundleInvalid(f"{where}: recorded at {recorded_at}, more than two "
                                    "sealing rounds before the bundle was made, and not "
                                    "sealed: its leaf was removed")
            continue
        leaf = json.loads(line)
        state = base64.b64decode(event["state"])
        computed = hashlib.sha256(b"\x00" + _prefixed(
            b"trialledger/leaf/v1", study.encode(), event["originator_id"].encode(),
            str(event["version"]).encode(), event["topic"].encode(), state)).digest()
        if (leaf["leaf_index"], leaf["position"]) != (tree.size, event["position"]):
            raise BundleInvalid(f"{where}: leaf {leaf['leaf_index']} (position "
                                f"{leaf['position']}) is out of place: events were deleted, "
                                "inserted or reordered")
        if bytes.fromhex(leaf["leaf_hash"]) != computed:
            raise BundleInvalid(f"{where}: does not match its sealed leaf")
        tree.add(computed)
        if tree.size in wanted:
            roots[tree.size] = tree.root()
    if leaves.readline():
        raise BundleInvalid("there are more leaves than events: events were deleted")

    latest, latest_root = 0, roots[0]
    witnessed_by: tuple[str, ...] = ()
    witness_keys, quorum = witnessing
    for point in points:
        body = _open_note(point["note"], keys).split("\n")
        size = int(body[1])
        if body[0] != origin or size != point["tree_size"]:
            raise BundleInvalid(f"checkpoint of size {point['tree_size']} is for another log")
        if size not in roots:
            raise BundleInvalid(f"checkpoint of size {size} covers more events than the bundle "
                                f"holds ({tree.size} sealed): the log's tail was cut off")
        if _canonical_b64(body[2]) != roots[size]:
            raise BundleInvalid(f"checkpoint of size {size}: root does not match the events")
        witnessed_by = _cosigned_by(point["note"], witness_keys)
        if len(witnessed_by) < quorum:
            raise BundleInvalid(f"checkpoint of size {size} carries {len(witnessed_by)} valid "
                                f"cosignatures of the {quorum} required")
        latest, latest_root = max(latest, size), roots[size]
    _check_named_checkpoint(manifest, points, latest)
    current = {k: v for k, v in keys.items() if k not in retired and k not in revoked}
    if _open_note(bundle.read("manifest.sig").decode(), current) != manifest_text:
        raise BundleInvalid("manifest.sig does not sign manifest.json")
    checks = [("the checkpoint this verifier verified before", size, root)
              for size, root in remembered]
    if held is not None:
        if held[0] != origin:
            raise BundleInvalid(f"the held checkpoint is for {held[0]}, not {origin}")
        checks.append(("the held checkpoint", int(held[1]), base64.b64decode(held[2])))
    for what, held_size, held_root in checks:
        if latest < held_size:
            raise BundleInvalid(f"rolled back: the bundle's latest checkpoint has size {latest}, "
                                f"older than {what} (size {held_size})")
        if roots.get(held_size) != held_root:
            raise BundleInvalid(f"forked: the log is not consistent with {what} (size "
                                f"{held_size})")
    return BundleReport(study, count, len(points), latest, len(manifest["files"]),
                        manifest.get("as_of"), manifest.get("created_at"),
                        manifest.get("software_version"), latest_root, witnessed_by)


def _check_named_checkpoint(manifest: dict[str, Any], points: list[dict[str, Any]],
                            latest: int) -> None:
    """The checkpoint the manifest says it was built with is the latest verified one."""
    named = manifest.get("checkpoint")
    if named is None:
        if points:
            raise BundleInvalid("the manifest names no checkpoint, the bundle holds some")
        return
    # Format 1 named the note alone; format 2 adds its size and root.
    note = named if isinstance(named, str) else named["note"]
    newest = next((p["note"] for p in points if p["tree_size"] == latest), None)
    if note != newest:
        raise BundleInvalid("the manifest names a checkpoint other than the bundle's latest")
    if isinstance(named, dict):
        body = note.split("\n")
        if (named["tree_size"], named["root"]) != (int(body[1]), body[2]):
            raise BundleInvalid("the manifest's checkpoint size or root differs from its note")


def _check_event(study: str, event: dict[str, Any], keys: dict[str, Ed25519PublicKey],
                 retired: set[str], revoked: dict[str, datetime],
                 versions: dict[str, int]) -> str | None:
    oid, version, topic = event["originator_id"], event["version"], event["topic"]
    if version != versions.get(oid, 0) + 1:
        return f"version chain broken after v{versions.get(oid, 0)}"
    try:
        key_id, recorded_at, signature, payload = _unpack(base64.b64decode(event["state"]))
    except ValueError as e:
        return str(e)
    key = keys.get(key_id)
    if key is None:
        return f"signed by unknown key {key_id}"
    if key_id in retired:
        return f"signed by key {key_id} after its retirement"
    if key_id in revoked and datetime.fromisoformat(recorded_at) >= revoked[key_id]:
        return f"signed by key {key_id} after its revocation"
    message = _prefixed(b"trialledger/event-signature/v1", study.encode(), oid.encode(),
                        str(version).encode(), topic.encode(), payload, recorded_at.encode(),
                        key_id.encode())
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return "signature does not match the stored event (altered or forged)"
    versions[oid] = version
    if topic in KEY_REGISTERED:
        data = json.loads(payload)
        keys[data["key_id"]] = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(data["public_key"]))
    elif topic in KEY_RETIRED:
        retired.add(json.loads(payload)["key_id"])
    return None
