"""Feeds: each origin's events as a signed hash chain of blocks.

Theory of operation
-------------------
Every replica's events form its *feed*, in seq order, cut into **blocks**:
runs of consecutive events that the origin seals together (a node seals
what one group commit makes durable). A block's bytes (``body``) are the
canonical CBOR of its events. Blocks are chained::

    hash(0)      = BLAKE2b-256("crdtbook-feed-v1" | replica)
    hash(block)  = BLAKE2b-256(hash(previous block) | body)

and the origin signs the *head* of every block, ``(replica, last seq,
hash)``, with its Ed25519 key (keys.py). A signed head commits to the whole
feed up to it, so a receiver that holds an origin's feed up to one block
accepts the next block when its hash, computed from the receiver's own tip,
carries the origin's signature: one hash and one signature check per block
and per message, whatever the block's size. Relays forward blocks exactly as
sealed (bytes and signature), so a block checks out the same way wherever it
comes from, and nobody but the origin can make a block that does.

Blocks never overlap and are never re-cut: for an honest origin every
replica holds the same blocks, and a tip ``(last seq, hash)`` names one
version of a feed. Two signed blocks that follow the same tip but differ
are an equivocation: proof, checkable by anyone, that the origin signed two
versions of its feed (see door.py).

Rules this module keeps
-----------------------
* Pure: hashing and byte layouts only; no state.
* Every signed message starts with its purpose, so a head signature is never
  valid as a claim signature or a join request, and the reverse.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

HASH_BYTES = 32


class Block(NamedTuple):
    """Events ``first..last`` of ``replica``, as sealed and signed by it."""

    replica: str
    first: int
    last: int
    body: bytes  # canonical CBOR of the events (see codec.encode_body)
    sig: bytes  # the origin's signature of its head after this block
    events: tuple  # the decoded events, in seq order


class Tip(NamedTuple):
    """How far a replica holds one origin's feed: the last block's last seq and hash."""

    last: int
    hash: bytes


class SignedClaim(NamedTuple):
    """A claim (snapshot.Claim) with its replica's signature: only those count."""

    replica: str
    seq: int
    clock: int
    sig: bytes


def genesis(replica: str) -> Tip:
    """The tip before an origin's first block."""
    return Tip(0, hashlib.blake2b(b"crdtbook-feed-v1\x00" + replica.encode(),
                                  digest_size=HASH_BYTES).digest())


def link(previous: bytes, body: bytes) -> bytes:
    """The hash of a block with ``body`` following the block hashed ``previous``."""
    return hashlib.blake2b(previous + body, digest_size=HASH_BYTES).digest()


def head_message(replica: str, last: int, hash_: bytes) -> bytes:
    """What an origin signs for the head of its feed after a block."""
    return b"crdtbook-head-v1\x00%s\x00%d\x00%s" % (replica.encode(), last, hash_)


def claim_message(replica: str, seq: int, clock: int) -> bytes:
    """What a replica signs to promise no new event at or below ``clock`` after ``seq``."""
    return b"crdtbook-claim-v1\x00%s\x00%d\x00%d" % (replica.encode(), seq, clock)


__all__ = ["Block", "HASH_BYTES", "SignedClaim", "Tip", "claim_message", "genesis",
           "head_message", "link"]
