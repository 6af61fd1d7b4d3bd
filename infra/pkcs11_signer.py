"""Ed25519 signing through PKCS#11 (``python-pkcs11``): the private key never leaves the token.

The key is a CKK_EC_EDWARDS pair on the token (an HSM, or SoftHSM2 for tests and trials),
found by its label; signatures are CKM_EDDSA, which for Ed25519 are the RFC 8032 signatures a
file key makes. A key the token would let out (extractable, or not sensitive) is refused.

A token's login belongs to the whole process (logging out of one session logs out all), so
a process holds one logged-in session per token, shared by its signers and closed with the
last of them; it runs one operation at a time, so their signing is serialised. Each process
(a server worker, the sealer, a bulk load's signing process) opens its own.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    NoSuchKey,
    NoSuchToken,
    PinIncorrect,
    PKCS11Error,
)
from pkcs11.util.ec import encode_named_curve_parameters

from infra.signers import TOKEN_KEY, SigningKeyError

ED25519_OID = "1.3.101.112"  # RFC 8410 id-Ed25519: the curve of CKA_EC_PARAMS
_RAW_SIZE = 32
_PROBE = b"trialledger/pkcs11-probe/v1"


@dataclass(frozen=True)
class TokenKey:
    """Where a key lives: the PKCS#11 module (shared library), the token's label, the key's
    label, and the PIN of the token's user."""

    module: str
    token_label: str
    key_label: str
    pin: str

    def describe(self) -> str:
        """The key's place, for messages (never the PIN)."""
        return f"key {self.key_label!r} on PKCS#11 token {self.token_label!r}"

    def to_bytes(self) -> bytes:
        """Serialised, for a signing process's pipe."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenKey:
        """The inverse of :meth:`to_bytes`."""
        return cls(**json.loads(data))


@dataclass
class _Shared:
    """A process's logged-in session on one token, and how many signers use it."""

    session: Any
    pin: str
    lock: threading.Lock
    users: int = 0


_shared: dict[tuple[str, str], _Shared] = {}
_shared_lock = threading.Lock()


def _acquire(where: TokenKey) -> _Shared:
    """The process's session on the token (opened and logged in by the first user)."""
    place = (where.module, where.token_label)
    with _shared_lock:
        shared = _shared.get(place)
        if shared is None:
            shared = _shared[place] = _Shared(_open(where), where.pin, threading.Lock())
        elif shared.pin != where.pin:
            # The process is logged in already: a wrong PIN must not ride on that login.
            raise SigningKeyError(f"PKCS#11 token {where.token_label!r}: the PIN is not "
                                  "correct")
        shared.users += 1
        return shared


def _release(where: TokenKey) -> None:
    """One user fewer; the last closes the session (which logs the process out)."""
    place = (where.module, where.token_label)
    with _shared_lock:
        shared = _shared[place]
        shared.users -= 1
        if shared.users == 0:
            del _shared[place]
            shared.session.close()


def _open(where: TokenKey) -> Any:
    """A read-write session of the user on the token."""
    try:
        token = pkcs11.lib(where.module).get_token(token_label=where.token_label)
        return token.open(user_pin=where.pin, rw=True)
    except NoSuchToken:
        raise SigningKeyError(f"PKCS#11 module {where.module} has no token labelled "
                              f"{where.token_label!r}") from None
    except PinIncorrect:
        raise SigningKeyError(f"PKCS#11 token {where.token_label!r}: the PIN is not "
                              "correct") from None
    except (PKCS11Error, RuntimeError) as e:  # RuntimeError: the module cannot be loaded
        raise SigningKeyError(f"PKCS#11 module {where.module}: {type(e).__name__} "
                              f"{e}".rstrip()) from None


def _raw_point(point: bytes) -> bytes:
    """The 32-byte Ed25519 key of a CKA_EC_POINT: DER OCTET STRING (PKCS#11 3.0) or raw
    (some tokens)."""
    if len(point) == _RAW_SIZE + 2 and point[:2] == bytes([0x04, _RAW_SIZE]):
        return point[2:]
    if len(point) == _RAW_SIZE:
        return point
    raise SigningKeyError(f"the token's public key is {len(point)} bytes, not an Ed25519 key")


class Pkcs11Signer:
    """Signs with an Ed25519 key held on a PKCS#11 token (see :class:`infra.signers.Signer`)."""

    def __init__(self, where: TokenKey) -> None:
        self.where = where
        self._shared = _acquire(where)
        self._closed = False
        try:
            with self._shared.lock:
                session = self._shared.session
                self._private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS,
                                                label=where.key_label)
                public = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC_EDWARDS,
                                         label=where.key_label)
                loose = (self._private[Attribute.EXTRACTABLE]
                         or not self._private[Attribute.SENSITIVE])
                point = bytes(public[Attribute.EC_POINT])
            if loose:
                raise SigningKeyError(f"{where.describe()} could leave the token (extractable "
                                      "or not sensitive): generate it on the token with "
                                      "CKA_EXTRACTABLE false and CKA_SENSITIVE true")
            self._public = Ed25519PublicKey.from_public_bytes(_raw_point(point))
        except NoSuchKey:
            self.close()
            raise SigningKeyError(f"no Ed25519 key pair labelled {where.key_label!r} on "
                                  f"PKCS#11 token {where.token_label!r}") from None
        except MultipleObjectsReturned:
            self.close()
            raise SigningKeyError(f"more than one key labelled {where.key_label!r} on PKCS#11 "
                                  f"token {where.token_label!r}") from None
        except PKCS11Error as e:  # e.g. a token that will not tell an attribute
            self.close()
            raise SigningKeyError(f"{where.describe()}: {type(e).__name__} {e}".rstrip()
                                  ) from None
        except SigningKeyError:
            self.close()
            raise
        try:
            # The public key found by the label must be the private key's own.
            self._public.verify(self.sign(_PROBE), _PROBE)
        except InvalidSignature:
            self.close()
            raise SigningKeyError(f"{where.describe()}: the public and private keys of that "
                                  "label do not belong together") from None

    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies this signer's signatures."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``, made on the token."""
        with self._shared.lock:
            try:
                signature: bytes = self._private.sign(data, mechanism=Mechanism.EDDSA)
            except PKCS11Error as e:
                raise SigningKeyError(f"{self.where.describe()}: signing failed "
                                      f"({type(e).__name__} {e})".rstrip()) from None
        return signature

    def handover(self) -> bytes:
        """Where the key is, for a signing process to open a session of its own."""
        return TOKEN_KEY + self.where.to_bytes()

    def close(self) -> None:
        """Stop using the token (the process's session ends with its last signer)."""
        if not self._closed:
            self._closed = True
            _release(self.where)


def generate_key(where: TokenKey) -> Ed25519PublicKey:
    """Generate an Ed25519 key pair on the token under ``where.key_label``: private, sensitive
    and never extractable; return its public key. Refuses a label already in use."""
    shared = _acquire(where)
    session = shared.session
    try:
        existing = list(session.get_objects({Attribute.LABEL: where.key_label}))
        if existing:
            raise SigningKeyError(f"PKCS#11 token {where.token_label!r} already holds objects "
                                  f"labelled {where.key_label!r}")
        parameters = session.create_domain_parameters(
            KeyType.EC_EDWARDS,
            {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)}, local=True)
        public, _ = parameters.generate_keypair(
            store=True, label=where.key_label, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False,
                              Attribute.PRIVATE: True, Attribute.SIGN: True})
        return Ed25519PublicKey.from_public_bytes(_raw_point(bytes(public[Attribute.EC_POINT])))
    except PKCS11Error as e:
        raise SigningKeyError(f"{where.describe()}: the token could not generate it "
                              f"({type(e).__name__} {e})".rstrip()) from None
    finally:
        _release(where)
