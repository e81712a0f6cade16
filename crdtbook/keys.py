"""Keys: who a replica is, and how anyone checks that it said something.

Theory of operation
-------------------
Every replica holds an Ed25519 key pair. Its id is *derived* from its
public key (self-certifying, as in Secure Scuttlebutt): the first 160 bits
of the BLAKE2b hash of the key, in lowercase base32 (32 characters), so an
id cannot be claimed by anyone who does not hold the matching secret key,
and anyone holding the public key checks the pairing without asking anybody.
People read a short prefix (``short``), as with git commit hashes.

Signatures are domain-separated: every signed message starts with a
purpose tag (``crdtbook-head-v1``, ``crdtbook-claim-v1``, ...), so a
signature made for one purpose is never valid for another.

Rules this module keeps
-----------------------
* Ed25519 (PyNaCl, libsodium) signatures are deterministic: signing the same
  message twice gives the same bytes, so the core stays reproducible.
* ``verify`` never raises on bad input: a malformed key or signature is
  simply not valid.
"""

from __future__ import annotations

import base64
import hashlib

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

KEY_BYTES = 32
SIG_BYTES = 64
ID_BYTES = 20  # 160 bits
SHORT = 10  # characters people read


def replica_id(public: bytes) -> str:
    """The replica id that belongs to ``public`` (a 32-byte Ed25519 public key)."""
    digest = hashlib.blake2b(b"crdtbook-id-v1|" + bytes(public), digest_size=ID_BYTES).digest()
    return base64.b32encode(digest).decode("ascii").lower()


def owns(replica: str, public: object) -> bool:
    """Is ``public`` the key ``replica``'s id was derived from?"""
    return (isinstance(public, bytes) and len(public) == KEY_BYTES
            and replica_id(public) == replica)


def short(replica: str) -> str:
    """The prefix people read (ids of older, hand-named replicas stay whole)."""
    return replica[:SHORT] if len(replica) == 32 else replica


class Signer:
    """A replica's secret key: signs on its behalf. Built from a 32-byte seed."""

    __slots__ = ("_key", "public", "id")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != KEY_BYTES:
            raise ValueError("a signing key seed is 32 bytes")
        self._key = SigningKey(seed)
        self.public = bytes(self._key.verify_key)
        self.id = replica_id(self.public)

    @classmethod
    def generate(cls) -> Signer:
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_name(cls, name: str) -> Signer:
        """A reproducible key for tests, the fuzzer and benchmarks (never for real nodes)."""
        return cls(hashlib.blake2b(b"crdtbook-test-key|" + name.encode(), digest_size=32).digest())

    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature


def verify(public: bytes, message: bytes, signature: object) -> bool:
    if not isinstance(signature, bytes) or len(signature) != SIG_BYTES:
        return False
    try:
        VerifyKey(public).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


__all__ = ["KEY_BYTES", "SIG_BYTES", "Signer", "owns", "replica_id", "short", "verify"]
