"""What ``trialledger verify`` remembers, per log (origin), like a transparency-log client:
the newest checkpoint it verified, and the newest witnessed one, under
``$TRIALLEDGER_HOME/verifier/<SHA-256 of the origin>.json``. The next verification refuses a
log that is not an extension of them, whatever the database or bundle then says.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from infra.atomic_file import write_atomically
from infra.ledger.note import Checkpoint


@dataclass(frozen=True)
class Remembered:
    """The checkpoints verified last time for one origin, and when."""

    latest: Checkpoint | None
    witnessed: Checkpoint | None
    verified_at: str


class VerifierMemory:
    """The remembered checkpoints, one file per origin, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, origin: str) -> Path:
        return self.directory / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"

    def recall(self, origin: str) -> Remembered | None:
        """What was remembered for ``origin`` (None: never verified here)."""
        try:
            data = json.loads(self._path(origin).read_text())
        except FileNotFoundError:
            return None
        return Remembered(_checkpoint(origin, data.get("latest")),
                          _checkpoint(origin, data.get("witnessed")), str(data["verified_at"]))

    def remember(self, origin: str, latest: Checkpoint | None,
                 witnessed: Checkpoint | None) -> None:
        """Keep the newest of what is remembered and what was just verified."""
        before = self.recall(origin)
        if before is not None:
            latest = _newer(before.latest, latest)
            witnessed = _newer(before.witnessed, witnessed)
        if latest is None and witnessed is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {"origin": origin, "latest": _json(latest), "witnessed": _json(witnessed),
                "verified_at": datetime.now(UTC).isoformat()}
        write_atomically(self._path(origin), json.dumps(data, indent=1).encode(), 0o600)


def _newer(old: Checkpoint | None, new: Checkpoint | None) -> Checkpoint | None:
    if old is None or (new is not None and new.size >= old.size):
        return new
    return old


def _json(checkpoint: Checkpoint | None) -> dict[str, object] | None:
    if checkpoint is None:
        return None
    return {"size": checkpoint.size, "root": base64.b64encode(checkpoint.root).decode()}


def _checkpoint(origin: str, data: dict[str, object] | None) -> Checkpoint | None:
    if not data:
        return None
    return Checkpoint(origin, int(str(data["size"])), base64.b64decode(str(data["root"])))
