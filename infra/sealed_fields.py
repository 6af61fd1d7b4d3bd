"""Identifying values sealed in stored events (AES-256-GCM, one data key per subject x record
x field, see :mod:`infra.field_keys`).

The signing mapper seals an event's declared values before it is signed, so the signature
and the ledger leaf cover the ciphertext: destroying a key leaves every event, signature and
proof as it was. A sealed value is stored in place of the value as::

    {"sealed.v1": {"key": "<key id>", "nonce": "<base64>", "ct": "<base64>"}}

the ciphertext of the value's JSON, bound (associated data) to the study and the key id.
Reading, each is opened back into its value, or the redaction marker once its key is gone.
Events stored before this existed hold plain values and read as they always did.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.field_keys import FieldKeys

SEALED = "sealed.v1"
_SEALED_BYTES = b'"sealed.v1"'

Identifying = Callable[[], Mapping[str, tuple[str, ...]]]


def _no_items() -> Mapping[str, tuple[str, ...]]:
    return {}


class FieldSealer:
    """Seals a study's declared identifying values in event state, and opens them again.

    ``identifying`` says, when asked, the study's declaration (record kind -> fields); the
    composer sets it once the study application exists (it reads the registered definition).
    """

    def __init__(self, study: str, keys: FieldKeys) -> None:
        self.study = study
        self.keys = keys
        self.identifying: Identifying = _no_items

    def seal(self, subject_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """``state`` (an event's attributes) with its declared values sealed, or None when
        it holds none. ``state`` itself is left as it is (it is the domain event's)."""
        record_id = state.get("record_id")
        if not isinstance(record_id, str):
            return None
        declared = self.identifying()
        if not declared:
            return None
        if isinstance(state.get("fields"), dict) and isinstance(state.get("kind"), str):
            names = [n for n in declared.get(state["kind"], ())
                     if state["fields"].get(n) is not None]
            if not names:
                return None
            fields = dict(state["fields"])
            for name in names:
                kid, data_key = self.keys.create(subject_id, record_id, name)
                fields[name] = self._sealed(kid, data_key, fields[name])
            return {**state, "fields": fields}
        every = {n for fields in declared.values() for n in fields}
        for attribute in ("changes", "removed_fields"):
            values = state.get(attribute)
            if not isinstance(values, dict):
                continue
            sealed = self._sealed_existing(subject_id, record_id, values, every,
                                           nested=attribute == "changes")
            return None if sealed is None else {**state, attribute: sealed}
        return None

    def _sealed_existing(self, subject_id: str, record_id: str, values: dict[str, Any],
                         every: set[str], *, nested: bool) -> dict[str, Any] | None:
        """``values`` (name -> value, or name -> {old, new}) with each value of a field that
        has a key sealed under it (a record entered before sealing has none: it stays plain;
        one whose values were redacted gets a new key)."""
        out: dict[str, Any] | None = None
        for name, value in values.items():
            head = name.partition(".")[0]
            if head not in every:
                continue
            key = self.keys.for_change(subject_id, record_id, head)
            if key is None:
                continue
            kid, data_key = key
            out = dict(values) if out is None else out
            out[name] = ({k: self._sealed(kid, data_key, v) for k, v in value.items()}
                         if nested and isinstance(value, dict) else
                         self._sealed(kid, data_key, value))
        return out

    def _sealed(self, kid: str, data_key: bytes, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None  # nothing to hide: a value absent stays absent
        nonce = secrets.token_bytes(12)
        ct = AESGCM(data_key).encrypt(nonce, orjson.dumps(value), self._aad(kid))
        return {SEALED: {"key": kid, "nonce": base64.b64encode(nonce).decode(),
                         "ct": base64.b64encode(ct).decode()}}

    def _aad(self, kid: str) -> bytes:
        return f"{self.study}\x00{kid}".encode()

    @staticmethod
    def holds_sealed(payload: bytes) -> bool:
        """True if a stored payload may hold a sealed value (a cheap test before a walk)."""
        return _SEALED_BYTES in payload

    def open(self, value: Any) -> Any:
        """``value`` (decoded event state, or any part of it) with every sealed value opened:
        its plaintext, or the redaction marker when its key was destroyed."""
        if isinstance(value, dict):
            token = value.get(SEALED) if len(value) == 1 else None
            if isinstance(token, dict):
                return self._opened(token)
            return {k: self.open(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.open(v) for v in value]
        return value

    def _opened(self, token: dict[str, Any]) -> Any:
        kid = str(token["key"])
        data_key = self.keys.opened(kid)
        if isinstance(data_key, str):
            return data_key
        plain = AESGCM(data_key).decrypt(base64.b64decode(token["nonce"]),
                                         base64.b64decode(token["ct"]), self._aad(kid))
        return orjson.loads(plain)
