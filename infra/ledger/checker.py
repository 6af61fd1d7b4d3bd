"""Checks one study's events in commit order: signature, key validity, version chain.

Shared by the sealer (which refuses to seal a bad event) and the online verifier.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.keyring import Keyring
from domain.topics import stored_names
from infra.signing import SignedState, SignedStateError, check_signature

# Every name each key event is stored under, in logs of any age.
KEY_REGISTERED = stored_names(Keyring.KeyRegistered)
KEY_RETIRED = stored_names(Keyring.KeyRetired)
KEY_REVOKED = stored_names(Keyring.KeyRevoked)


def revocation_from_payload(payload: bytes) -> tuple[str, datetime]:
    """(key id, effective time) of a KeyRevoked event's payload."""
    data: dict[str, Any] = json.loads(payload)
    effective = data["effective_at"]
    if isinstance(effective, dict):  # eventsourcing's transcoding of a datetime
        effective = effective["_data_"]
    return str(data["key_id"]), datetime.fromisoformat(effective)


@dataclass
class EventChecker:
    """Follows a study's log, knowing which keys may sign what.

    ``anchors`` are the trusted public keys (a key in them needs no registration event);
    ``revocations`` (key id -> effective time) come from a first pass over the log, because a
    revocation invalidates what the key signed after the compromise, even earlier in the log.
    """

    study: str
    anchors: dict[str, Ed25519PublicKey]
    revocations: dict[str, datetime] = field(default_factory=dict)
    registered: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    retired: set[str] = field(default_factory=set)
    last_version: dict[str, int] = field(default_factory=dict)
    # Every public key a registration in the log mentions, valid or not: what a worker
    # process may need to test a signature. Validity is decided here, in log order.
    mentioned: dict[str, bytes] = field(default_factory=dict)

    def key(self, key_id: str) -> Ed25519PublicKey | None:
        """A key this log trusts (anchor or registered), if known."""
        return self.registered.get(key_id) or self.anchors.get(key_id)

    def check(self, originator_id: str, version: int, topic: str, state: bytes,
              signature_ok: bool | None = None) -> str | None:
        """Why this event does not hold, or None; then take in what it says about keys.

        ``signature_ok`` is the signature check when a worker process already did it (with
        the key the envelope names); the ordering rules are always checked here, in order.
        """
        previous = self.last_version.get(originator_id, 0)
        if version != previous + 1:
            return (f"version chain broken: expected v{previous + 1} after v{previous} "
                    "(an event is missing, inserted or out of order)")
        try:
            envelope = SignedState.unpack(state)
        except SignedStateError as e:
            return str(e)
        key = self.key(envelope.key_id)
        if key is None:
            return f"signed by unknown key {envelope.key_id}"
        if envelope.key_id in self.retired:
            return f"signed by key {envelope.key_id} after its retirement"
        revoked = self.revocations.get(envelope.key_id)
        if revoked is not None and datetime.fromisoformat(envelope.recorded_at) >= revoked:
            return (f"signed by key {envelope.key_id} at {envelope.recorded_at}, after its "
                    f"revocation effective {revoked.isoformat()}")
        if signature_ok is None:
            signature_ok = check_signature(self.study, originator_id, version, topic, envelope,
                                           key)
        if not signature_ok:
            return "signature does not match the stored event (altered or forged)"
        self.last_version[originator_id] = version
        self.learn(topic, envelope.payload)
        return None

    def learn(self, topic: str, payload: bytes) -> None:
        """Take in a key registration or retirement (no-op for other events)."""
        if topic in KEY_REGISTERED:
            data = json.loads(payload)
            raw = base64.b64decode(data["public_key"])
            self.registered[str(data["key_id"])] = Ed25519PublicKey.from_public_bytes(raw)
        elif topic in KEY_RETIRED:
            self.retired.add(str(json.loads(payload)["key_id"]))
