"""A witness's storage: its key and, per log origin, the latest checkpoint it cosigned.

Files, never a database the log's operator holds: ``witness.key`` (PEM, mode 0600),
``witness.json`` (its name) and ``logs/<SHA-256 of the origin>.json`` (size, root, note),
each written whole — to a temporary file, flushed to disk, then renamed over the old one —
so a crash leaves the old state or the new, never a mix.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from infra.atomic_file import write_atomically

KEY_FILE = "witness.key"
NAME_FILE = "witness.json"


class StateError(RuntimeError):
    """The state directory is missing, unreadable or in use by another witness."""


@dataclass(frozen=True)
class Cosigned:
    """The latest checkpoint a witness cosigned for one origin."""

    origin: str
    size: int
    root: bytes


class WitnessState:
    """The state directory of one witness."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock: IO[bytes] | None = None

    def init(self, name: str) -> Ed25519PrivateKey:
        """Create the witness's key and name (refuses to replace an existing key)."""
        if not name or any(c.isspace() or c == "+" for c in name):
            raise StateError(f"witness name {name!r} must be non-empty, without spaces or '+'")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        if (self.directory / KEY_FILE).exists():
            raise StateError(f"{self.directory / KEY_FILE} exists already: a witness keeps "
                             "its key")
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        write_atomically(self.directory / KEY_FILE, pem, 0o600)
        write_atomically(self.directory / NAME_FILE, json.dumps({"name": name}).encode())
        return key

    def identity(self) -> tuple[str, Ed25519PrivateKey]:
        """The witness's name and private key."""
        try:
            name = json.loads((self.directory / NAME_FILE).read_text())["name"]
            key = load_pem_private_key((self.directory / KEY_FILE).read_bytes(), None)
        except (OSError, ValueError, KeyError) as e:
            raise StateError(f"{self.directory} is not a witness state directory (run "
                             f"`trialledger witness init` first): {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise StateError(f"{self.directory / KEY_FILE} is not an Ed25519 key")
        return str(name), key

    def lock(self) -> None:
        """Hold the directory for this process: two witnesses on one state would each
        accept what the other cosigned (a rollback)."""
        handle = (self.directory / ".lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise StateError(f"{self.directory} is in use by another witness") from e
        self._lock = handle

    def _path(self, origin: str) -> Path:
        return self.directory / "logs" / f"{hashlib.sha256(origin.encode()).hexdigest()}.json"

    def latest(self, origin: str) -> Cosigned | None:
        """The latest checkpoint cosigned for ``origin`` (None: never one)."""
        try:
            data = json.loads(self._path(origin).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateError(f"state of {origin} is unreadable: {e}") from e
        return Cosigned(origin, int(data["size"]), base64.b64decode(data["root"]))

    def record(self, origin: str, size: int, root: bytes, note: str) -> None:
        """Persist the checkpoint just verified for ``origin``, before it is cosigned."""
        data = {"origin": origin, "size": size, "root": base64.b64encode(root).decode(),
                "note": note}
        write_atomically(self._path(origin), json.dumps(data, indent=1).encode())
