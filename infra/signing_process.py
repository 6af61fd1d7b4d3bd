"""Ed25519 signing in a process of its own, for bulk loads.

Signing an event takes tens of microseconds and holds the GIL, so a thread cannot overlap it
with building the next events; a second process can, on the machine's other core. Ed25519
signatures are deterministic (RFC 8032), so a signature made here is byte for byte the one
:meth:`infra.signing.EventSigner.signature` makes.

The child is a fresh interpreter running this module (not a fork: the parent runs
connection-pool threads whose locks a fork would copy; nor multiprocessing's spawn, which
re-runs the parent's main script). It reads its key from its stdin, never from its arguments
or environment, then answers requests until its stdin closes, so a parent that dies takes it
along. A key on a PKCS#11 token never leaves the token: the child is told where it is (and
the PIN) and opens a session of its own.

The protocol, on the child's stdin and stdout: the hand-over of :func:`infra.signers.handover`
as one frame (a 4-byte big-endian length and that many bytes); then requests, each a frame of
messages, each message preceded by its own 4-byte length; each answered with a frame of the
64-byte signatures, in order.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.signers import FILE_KEY, TOKEN_KEY

SIGNATURE_SIZE = 64
_LENGTH = 4


class SigningProcessError(RuntimeError):
    """The signing process stopped or answered out of protocol."""


class SigningProcess:
    """A child process that signs batches of messages with one key."""

    def __init__(self, handover: bytes) -> None:
        # The child imports this module as the parent does (the parent's own path first).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to: IO[bytes] = self._process.stdin
        self._from: IO[bytes] = self._process.stdout
        self._pending: list[int] = []  # sizes of the requests sent and not yet answered
        self._write(len(handover).to_bytes(_LENGTH, "big") + handover)

    def send(self, messages: Sequence[bytes]) -> None:
        """Ask for the signatures of ``messages``; :meth:`receive` returns them, in order."""
        request = b"".join(len(m).to_bytes(_LENGTH, "big") + m for m in messages)
        self._write(len(request).to_bytes(_LENGTH, "big") + request)
        self._pending.append(len(messages))

    @property
    def pending(self) -> int:
        """Requests sent and not yet received."""
        return len(self._pending)

    def receive(self) -> list[bytes]:
        """The signatures of the oldest request not yet received."""
        expected = self._pending.pop(0)
        try:
            answer = _read_frame(self._from)
        except (OSError, ValueError):  # ValueError: the pipe was closed here
            answer = None
        if answer is None or len(answer) != expected * SIGNATURE_SIZE:
            raise SigningProcessError(
                "the signing process stopped" if answer is None else
                f"the signing process answered {len(answer)} bytes for {expected} messages")
        return [answer[i:i + SIGNATURE_SIZE] for i in range(0, len(answer), SIGNATURE_SIZE)]

    def signatures(self, messages: Sequence[bytes]) -> list[bytes]:
        """The signatures of ``messages``, in order."""
        self.send(messages)
        return self.receive()

    def close(self) -> None:
        """Stop the process (closing its stdin ends it)."""
        for stream in (self._to, self._from):
            with contextlib.suppress(OSError):  # the child is already gone
                stream.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _write(self, data: bytes) -> None:
        try:
            self._to.write(data)
            self._to.flush()
        except (OSError, ValueError) as e:  # ValueError: the pipe was closed here
            raise SigningProcessError(f"the signing process stopped: {e}") from None


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed frame, or None at the end of the stream."""
    head = stream.read(_LENGTH)
    if len(head) < _LENGTH:
        return None
    size = int.from_bytes(head, "big")
    body = stream.read(size)
    return body if len(body) == size else None


def _signing_function(handover: bytes) -> Callable[[memoryview], bytes]:
    """The signing function of a hand-over: a file key's, or a session's on the token."""
    kind, body = handover[:1], handover[1:]
    if kind == FILE_KEY:
        return Ed25519PrivateKey.from_private_bytes(body).sign
    if kind == TOKEN_KEY:
        # Imported here: a file key's signing process has no need of the PKCS#11 library.
        from infra.pkcs11_signer import Pkcs11Signer, TokenKey

        token = Pkcs11Signer(TokenKey.from_bytes(body))
        return lambda message: token.sign(bytes(message))
    raise SigningProcessError(f"unknown key hand-over {kind!r}")


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The child's loop: the key's hand-over, then requests until the end of ``requests``."""
    handover = _read_frame(requests)
    if handover is None:
        return
    sign = _signing_function(handover)
    while (request := _read_frame(requests)) is not None:
        view = memoryview(request)
        signatures = []
        offset = 0
        while offset < len(request):
            size = int.from_bytes(view[offset:offset + _LENGTH], "big")
            offset += _LENGTH
            signatures.append(sign(view[offset:offset + size]))
            offset += size
        answer = b"".join(signatures)
        answers.write(len(answer).to_bytes(_LENGTH, "big") + answer)
        answers.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
