"""The witness's checks (C2SP tlog-witness ``add-checkpoint``), apart from any HTTP server.

A request is an old size line, up to 63 consistency-proof lines, an empty line, then a signed
checkpoint. The witness cosigns only a checkpoint signed by a log key it trusts for the
origin, whose old size is the size it last cosigned, and that the proof shows to extend what
it last cosigned; it persists the new checkpoint before answering.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.ledger.cosignature import Cosigner, LogKey, cosign
from infra.ledger.merkle import verify_consistency
from infra.ledger.note import Checkpoint, NoteError, open_note
from infra.witness.state import WitnessState

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class WitnessRefused(Exception):
    """What the witness answers instead of a cosignature: an HTTP status and a body."""

    def __init__(self, status: int, message: str, body: str | None = None,
                 content_type: str = "text/plain") -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else message + "\n"
        self.content_type = content_type


@dataclass(frozen=True)
class Submission:
    """A parsed ``add-checkpoint`` request."""

    old_size: int
    proof: list[bytes]
    note: str


def parse_request(text: str) -> Submission:
    """Parse an ``add-checkpoint`` body; a malformed one is a 400."""
    head, separator, note = text.partition("\n\n")
    lines = head.split("\n")
    old = lines[0].removeprefix("old ")
    if (not separator or not lines[0].startswith("old ") or not old.isdigit()
            or (old != "0" and old.startswith("0"))):
        raise WitnessRefused(400, "the request must start with 'old <size>', then the "
                                  "proof lines and an empty line")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefused(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except ValueError:
            node = b""
        if len(node) != 32:
            raise WitnessRefused(400, "a consistency proof line is not a base64 SHA-256 hash")
        proof.append(node)
    return Submission(int(old), proof, note)


def request_body(old_size: int, proof: list[bytes], note: str) -> str:
    """The ``add-checkpoint`` body a log sends."""
    lines = [f"old {old_size}", *(base64.b64encode(p).decode() for p in proof)]
    return "\n".join(lines) + "\n\n" + note


class Witness:
    """Cosigns checkpoints of the logs it trusts, each only as an extension of the last.

    ``log_keys`` sign the checkpoints of every origin starting with ``origin_prefix``.
    """

    def __init__(self, state: WitnessState, log_keys: list[LogKey], origin_prefix: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.name, self._key = state.identity()
        self.log_keys = log_keys
        self.origin_prefix = origin_prefix
        self._clock = clock
        # Check and update as one step: two requests checked against the same old size
        # would otherwise both be cosigned, and the smaller would roll the state back.
        self._lock = threading.Lock()

    @property
    def cosigner(self) -> Cosigner:
        """The witness as its clients name it."""
        return Cosigner(self.name, self._key.public_key())

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The witness's key (for its own tests and tools)."""
        return self._key

    def add_checkpoint(self, request: str) -> str:
        """The cosignature line for the checkpoint in ``request``, or :class:`WitnessRefused`."""
        submission = parse_request(request)
        checkpoint, body = self._signed_checkpoint(submission.note)
        if submission.old_size > checkpoint.size:
            raise WitnessRefused(400, f"old size {submission.old_size} is larger than the "
                                      f"checkpoint's size {checkpoint.size}")
        with self._lock:
            latest = self.state.latest(checkpoint.origin)
            latest_size = latest.size if latest else 0
            if submission.old_size != latest_size:
                raise WitnessRefused(409, f"the latest checkpoint cosigned for "
                                          f"{checkpoint.origin} has size {latest_size}",
                                     f"{latest_size}\n", SIZE_CONTENT_TYPE)
            if latest is None:
                if submission.proof:
                    raise WitnessRefused(422, "the proof must be empty from size 0")
            elif latest.size == checkpoint.size:
                if latest.root != checkpoint.root or submission.proof:
                    raise WitnessRefused(409, f"a different root at size {latest.size}: "
                                              "the log forked")
            elif not verify_consistency(latest.size, checkpoint.size, latest.root,
                                        checkpoint.root, submission.proof):
                raise WitnessRefused(422, f"the consistency proof from size {latest.size} to "
                                          f"{checkpoint.size} does not verify")
            self.state.record(checkpoint.origin, checkpoint.size, checkpoint.root,
                              submission.note)
        return cosign(body, self.name, self._key, int(self._clock()))

    def _signed_checkpoint(self, note: str) -> tuple[Checkpoint, str]:
        """The checkpoint, if a trusted log key signed it: 404 for an origin it does not
        witness, 403 when no trusted key's signature verifies."""
        try:
            body = note[:note.index("\n\n") + 1]
            checkpoint = Checkpoint.parse(body)
        except (ValueError, NoteError) as e:
            raise WitnessRefused(400, f"not a checkpoint: {e}") from e
        if not checkpoint.origin.startswith(self.origin_prefix):
            raise WitnessRefused(404, f"unknown log {checkpoint.origin}")
        for log_key in self.log_keys:
            try:
                open_note(note, log_key.name, log_key.public_key)
            except NoteError:
                continue
            return checkpoint, body
        raise WitnessRefused(403, f"no key trusted for {checkpoint.origin} signed the "
                                  "checkpoint")
