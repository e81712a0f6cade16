"""Proofs: evidence, checkable by anyone, that an origin signed what no honest one does.

Theory of operation
-------------------
An honest origin signs one feed (feed.py): its blocks never fork, and its
claims (finality promises) are never broken. Two kinds of evidence show that
an origin ``r`` did otherwise, and anyone holding ``r``'s public key can
check them without trusting whoever passes them on:

* **fork**: two blocks of ``r``, both validly signed, following the same
  previous hash (so starting at the same seq) with different bodies. The
  *fault seq* is their first seq: from there on ``r`` told two stories.
* **broken promise**: a signed claim ``(r, seq s, clock c)`` ("no new event
  at or below c after s") and a validly signed block of ``r`` (with the hash
  it chains from) holding an event at seq > s with clock <= c. The fault seq
  is the first such event's seq.

The rule every replica applies (door.py, merging.convict): ``r``'s
*conviction cut* is the least fault seq over the proofs held, minus one. It
acts like an evict at that cut: ``r``'s later events are rejected (reason
"equivocation") and leave the digest, ``r`` stops counting for finality
once its events up to the cut are held, and the door takes none of ``r``'s
blocks past the cut. Two replicas that hold different versions of ``r``'s
feed past the cut agree as soon as both hold a proof at the same cut:
whichever version each holds is rejected and uncounted.

Rules this module keeps
-----------------------
* Pure functions of the proof and a public key; ``check`` never raises.
* A forgery is never a proof: both blocks of a fork, and the block and
  claim of a broken promise, must carry ``r``'s signature.
* A fork's two versions are kept in a canonical order (by body bytes), so
  equal evidence gives equal proofs and equal bytes on the wire.
"""

from __future__ import annotations

from typing import NamedTuple

from .feed import Block, SignedClaim, claim_message, head_message, link
from .keys import verify

FORK = "fork"
PROMISE = "promise"


class Proof(NamedTuple):
    kind: str  # FORK or PROMISE
    replica: str  # the origin proven to equivocate
    prev: bytes  # the hash ``block`` (and, for a fork, ``other``) chains from
    block: Block
    other: Block | None = None  # a fork's second version
    claim: SignedClaim | None = None  # a broken promise's claim

    @property
    def fault(self) -> int:
        """The first seq at which the origin is proven to have equivocated."""
        if self.kind == FORK:
            return self.block.first
        return broken_seq(self.claim, self.block) or self.block.first

    @property
    def cut(self) -> int:
        """The origin's last seq that still counts, by this proof."""
        return self.fault - 1


def fork(prev: bytes, a: Block, b: Block) -> Proof:
    """The proof made of two versions following ``prev`` (caller checks they differ)."""
    a, b = sorted((a, b), key=lambda x: (x.body, x.sig))
    return Proof(FORK, a.replica, prev, a, b)


def broken_promise(claim: SignedClaim, prev: bytes, block: Block) -> Proof:
    return Proof(PROMISE, block.replica, prev, block, None, claim)


def broken_seq(claim: SignedClaim | None, block: Block) -> int | None:
    """The first seq of ``block`` that breaks ``claim`` (seq > its seq, clock <= its clock)."""
    if claim is None or claim.replica != block.replica or block.last <= claim.seq:
        return None
    for event in block.events:
        if event.seq > claim.seq and event.clock <= claim.clock:
            return event.seq
    return None


def signed(key: bytes, prev: bytes, block: Block, verify=verify) -> bool:
    """Does ``block``, following ``prev``, carry its origin's head signature?"""
    return verify(key, head_message(block.replica, block.last, link(prev, block.body)),
                  block.sig)


def check(proof: Proof, key: bytes, verify=verify) -> bool:
    """Is ``proof`` evidence against ``proof.replica``, whose public key is ``key``?

    ``verify`` is keys.verify (a caller may pass a memoized one: it is pure)."""
    block, replica = proof.block, proof.replica
    if block.replica != replica:
        return False
    if proof.kind == FORK:
        other = proof.other
        return (other is not None and other.replica == replica and other.first == block.first
                and other.body != block.body
                and signed(key, proof.prev, block, verify)
                and signed(key, proof.prev, other, verify))
    if proof.kind == PROMISE:
        claim = proof.claim
        return (claim is not None and broken_seq(claim, block) is not None
                and verify(key, claim_message(replica, claim.seq, claim.clock), claim.sig)
                and signed(key, proof.prev, block, verify))
    return False


__all__ = ["FORK", "PROMISE", "Proof", "broken_promise", "broken_seq", "check", "fork",
           "signed"]
