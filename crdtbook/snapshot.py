"""Snapshot and Claim: the shapes a replica hands to the codec and gets back.

Theory of operation
-------------------
Both travel between replicas, so both the replica (which makes and reads
them) and the codec (which puts them on the wire and validates them) need
them. They live here, below both, so neither has to import the other for a
type: the replica imports the codec, never the other way round.

* ``Claim``: a replica's promise about its future events, sent in every
  exchange; it is what lets the final frontier move while a member is idle
  (see membership.py).
* ``Snapshot``: a replica's standing below and around its final frontier,
  for a peer too far behind for a delta (see compaction.py).

Rules this module keeps
-----------------------
* Plain NamedTuples: no behaviour, no imports of other crdtbook modules but
  the causal context they carry.
* Every list in a Snapshot is sorted (by replica, or by position), so equal
  standings give equal snapshots and equal bytes.
"""

from __future__ import annotations

from typing import NamedTuple

from .context import CausalContext


class Claim(NamedTuple):
    """``replica`` will never create an event at or below ``clock`` after ``seq``."""

    replica: str
    seq: int
    clock: int


class Snapshot(NamedTuple):
    """A replica's standing below and around its final frontier (see Replica.snapshot_state)."""

    context: CausalContext
    events: list  # every event held: retained orders, then the window, in position order
    base: list  # (replica, seq, remaining|removed, filled, reason) of kept outcomes; an
    # order's reason is its rejection or, if a leave or evict removed it, that cancel reason
    fills_base: int
    invalid: list  # (replica, seq, reason) for held events
    chain: list  # (replica, clock of its last checked event, poisoned)
    cutoff: list  # (replica, last seq that counts)
    joins: list  # (replica, join clock)
    counted: list  # (replica, counted clock)
    founded: bool
    final: int
    events_total: int
    digest_sum: int
    keys: tuple = ()  # (replica, public key) of every member admitted with a key
    uncounted: int = 0  # events past a cutoff, left out of the digest


__all__ = ["Claim", "Snapshot"]
